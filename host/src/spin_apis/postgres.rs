//! `spin:postgres/postgres@4.0.0` against a real PostgreSQL, as Spin implements it:
//!
//! * `open` takes a URL or a key=value connection string; every host it names must
//!   be permitted by `allowed_outbound_hosts` (`postgres://host:port`, 5432 when the
//!   port is left out), else `connection-failed`. `sslmode=disable` connects in
//!   plain text; otherwise TLS is tried (and, with `prefer`, plain text after it).
//! * Parameters bind as their Rust types do in Spin: a `str` binds as text, so a
//!   statement casts (`$1::text::uuid`), as it must under Spin.
//! * Each statement runs on its own (autocommit), so one statement is one
//!   transaction; errors from Postgres come back as `query-failed(db-error)` with
//!   the SQLSTATE code.
//!
//! Supported here: booleans, integers, floats, text, bytea, uuid and jsonb, both
//! ways, and NULL parameters; other types come back `unsupported` (with their raw
//! bytes), and other parameter kinds are `bad-parameter`. docs/src/deploying.md lists this.

// The interface's error type is what the WIT defines (its structured database
// error makes it large); the functions here return it as it is.
#![allow(clippy::result_large_err)]

use super::address_allowed;
use super::spin::postgres::postgres::{
    self as wit, Column, DbDataType, DbError, DbValue, Error as PgError, ParameterValue,
    QueryError, RowSet,
};
use crate::runtime::InstanceState;
use postgres_openssl::MakeTlsConnector;
use std::error::Error as StdError;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type};
use wasmtime::component::Resource;

/// The host side of a `connection` resource.
pub struct PgConnection {
    client: tokio_postgres::Client,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for PgConnection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

type Param = Box<dyn ToSql + Send + Sync>;

/// A NULL that binds to a parameter of any type.
#[derive(Debug)]
struct Null;

impl ToSql for Null {
    fn to_sql(
        &self,
        _: &Type,
        _: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        Ok(IsNull::Yes)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

/// A value of a type this host does not convert: its wire bytes.
struct Raw(Vec<u8>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        Ok(Raw(raw.to_vec()))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// The `postgres://host:port` of every host `address` names (as Spin checks them).
fn outbound_urls(config: &tokio_postgres::Config) -> Vec<String> {
    let ports = config.get_ports();
    config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            let name = match host {
                Host::Tcp(h) => h.clone(),
                Host::Unix(p) => p.display().to_string(),
            };
            format!("postgres://{name}:{port}")
        })
        .collect()
}

async fn connect(config: &tokio_postgres::Config) -> Result<PgConnection, tokio_postgres::Error> {
    fn spawn<F>(connection: F) -> tokio::task::JoinHandle<()>
    where
        F: std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
    {
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "postgres connection ended");
            }
        })
    }
    if config.get_ssl_mode() == SslMode::Disable {
        let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
        return Ok(PgConnection {
            client,
            driver: spawn(connection),
        });
    }
    let tls = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls())
        .map(|b| MakeTlsConnector::new(b.build()))
        .expect("an OpenSSL client context");
    let (client, connection) = config.connect(tls).await?;
    Ok(PgConnection {
        client,
        driver: spawn(connection),
    })
}

/// A statement's error as Spin reports it.
fn query_failed(e: tokio_postgres::Error) -> PgError {
    match e.as_db_error() {
        Some(db) => PgError::QueryFailed(QueryError::DbError(DbError {
            as_text: e.to_string(),
            severity: db.severity().to_string(),
            code: db.code().code().to_string(),
            message: db.message().to_string(),
            detail: db.detail().map(str::to_string),
            extras: Vec::new(),
        })),
        None => PgError::QueryFailed(QueryError::Text(e.to_string())),
    }
}

fn bind(p: ParameterValue) -> Result<Param, PgError> {
    Ok(match p {
        ParameterValue::Boolean(v) => Box::new(v),
        ParameterValue::Int8(v) => Box::new(v),
        ParameterValue::Int16(v) => Box::new(v),
        ParameterValue::Int32(v) => Box::new(v),
        ParameterValue::Int64(v) => Box::new(v),
        ParameterValue::Floating32(v) => Box::new(v),
        ParameterValue::Floating64(v) => Box::new(v),
        ParameterValue::Str(v) => Box::new(v),
        ParameterValue::Binary(v) => Box::new(v),
        // Spin binds a `timestamp` (seconds since the epoch) as a BIGINT.
        ParameterValue::Timestamp(v) => Box::new(v),
        ParameterValue::Uuid(v) => Box::new(
            uuid::Uuid::parse_str(&v).map_err(|e| PgError::BadParameter(format!("uuid: {e}")))?,
        ),
        ParameterValue::Jsonb(v) => Box::new(
            serde_json::from_slice::<serde_json::Value>(&v)
                .map_err(|e| PgError::BadParameter(format!("jsonb: {e}")))?,
        ),
        ParameterValue::DbNull => Box::new(Null),
        other => {
            return Err(PgError::BadParameter(format!(
                "{other:?}: this parameter type is not supported by crm-events-host"
            )))
        }
    })
}

fn bind_all(params: Vec<ParameterValue>) -> Result<Vec<Param>, PgError> {
    params.into_iter().map(bind).collect()
}

fn as_refs(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p.as_ref() as _).collect()
}

fn data_type(t: &Type) -> DbDataType {
    match *t {
        Type::BOOL => DbDataType::Boolean,
        Type::CHAR => DbDataType::Int8,
        Type::INT2 => DbDataType::Int16,
        Type::INT4 => DbDataType::Int32,
        Type::INT8 => DbDataType::Int64,
        Type::FLOAT4 => DbDataType::Floating32,
        Type::FLOAT8 => DbDataType::Floating64,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => DbDataType::Str,
        Type::BYTEA => DbDataType::Binary,
        Type::UUID => DbDataType::Uuid,
        Type::JSONB | Type::JSON => DbDataType::Jsonb,
        _ => DbDataType::Other(t.name().to_string()),
    }
}

/// Column `i` of `row` as a `db-value`.
fn value(row: &tokio_postgres::Row, i: usize) -> Result<DbValue, tokio_postgres::Error> {
    fn get<'r, T: FromSql<'r>>(
        row: &'r tokio_postgres::Row,
        i: usize,
        wrap: impl FnOnce(T) -> DbValue,
    ) -> Result<DbValue, tokio_postgres::Error> {
        Ok(row
            .try_get::<_, Option<T>>(i)?
            .map_or(DbValue::DbNull, wrap))
    }
    match *row.columns()[i].type_() {
        Type::BOOL => get(row, i, DbValue::Boolean),
        Type::CHAR => get(row, i, DbValue::Int8),
        Type::INT2 => get(row, i, DbValue::Int16),
        Type::INT4 => get(row, i, DbValue::Int32),
        Type::INT8 => get(row, i, DbValue::Int64),
        Type::FLOAT4 => get(row, i, DbValue::Floating32),
        Type::FLOAT8 => get(row, i, DbValue::Floating64),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => get(row, i, DbValue::Str),
        Type::BYTEA => get(row, i, DbValue::Binary),
        Type::UUID => get(row, i, |u: uuid::Uuid| DbValue::Uuid(u.to_string())),
        Type::JSONB | Type::JSON => get(row, i, |v: serde_json::Value| {
            DbValue::Jsonb(serde_json::to_vec(&v).unwrap_or_default())
        }),
        _ => get(row, i, |r: Raw| DbValue::Unsupported(r.0)),
    }
}

fn row_set(
    rows: &[tokio_postgres::Row],
    columns: &[tokio_postgres::Column],
) -> Result<RowSet, PgError> {
    let columns = columns
        .iter()
        .map(|c| Column {
            name: c.name().to_string(),
            data_type: data_type(c.type_()),
        })
        .collect();
    let rows = rows
        .iter()
        .map(|r| {
            (0..r.len())
                .map(|i| value(r, i))
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PgError::ValueConversionFailed(e.to_string()))?;
    Ok(RowSet { columns, rows })
}

impl wit::Host for InstanceState {}

impl wit::HostConnection for InstanceState {
    async fn open(
        &mut self,
        address: String,
    ) -> wasmtime::Result<Result<Resource<PgConnection>, PgError>> {
        let config: tokio_postgres::Config = match address.parse() {
            Ok(c) => c,
            Err(e) => return Ok(Err(PgError::ConnectionFailed(e.to_string()))),
        };
        let allowed = &self.component.allowed_outbound_hosts;
        if let Some(denied) = outbound_urls(&config)
            .into_iter()
            .find(|url| !address_allowed(url, allowed, 5432))
        {
            return Ok(Err(PgError::ConnectionFailed(format!(
                "{denied} is not permitted by allowed_outbound_hosts"
            ))));
        }
        match connect(&config).await {
            Ok(conn) => Ok(Ok(self.table.push(conn)?)),
            Err(e) => Ok(Err(PgError::ConnectionFailed(e.to_string()))),
        }
    }

    async fn query(
        &mut self,
        c: Resource<PgConnection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<RowSet, PgError>> {
        let params = match bind_all(params) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        let client = &self.table.get(&c)?.client;
        let refs = as_refs(&params);
        let prepared = match client.prepare(&statement).await {
            Ok(s) => s,
            Err(e) => return Ok(Err(query_failed(e))),
        };
        Ok(match client.query(&prepared, &refs).await {
            Ok(rows) => row_set(&rows, prepared.columns()),
            Err(e) => Err(query_failed(e)),
        })
    }

    async fn execute(
        &mut self,
        c: Resource<PgConnection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<u64, PgError>> {
        let params = match bind_all(params) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        let client = &self.table.get(&c)?.client;
        Ok(client
            .execute(statement.as_str(), &as_refs(&params))
            .await
            .map_err(query_failed))
    }

    async fn drop(&mut self, c: Resource<PgConnection>) -> wasmtime::Result<()> {
        self.table.delete(c)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_host_of_an_address_is_checked() {
        let url: tokio_postgres::Config = "postgres://u:p@db:5433/crm".parse().unwrap();
        assert_eq!(outbound_urls(&url), ["postgres://db:5433"]);
        let kv: tokio_postgres::Config = "host=a,b port=5432 user=u dbname=d".parse().unwrap();
        assert_eq!(
            outbound_urls(&kv),
            ["postgres://a:5432", "postgres://b:5432"]
        );
        let default: tokio_postgres::Config = "host=a user=u".parse().unwrap();
        assert_eq!(outbound_urls(&default), ["postgres://a:5432"]);
    }

    #[test]
    fn unsupported_parameters_are_refused_not_guessed() {
        assert!(bind(ParameterValue::Str("x".into())).is_ok());
        assert!(bind(ParameterValue::DbNull).is_ok());
        assert!(matches!(
            bind(ParameterValue::Uuid("nope".into())),
            Err(PgError::BadParameter(_))
        ));
        assert!(matches!(
            bind(ParameterValue::Decimal("1".into())),
            Err(PgError::BadParameter(_))
        ));
    }
}
