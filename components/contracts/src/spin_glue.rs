//! Glue between the Spin SDK and the contracts, shared by every component.
//!
//! Only compiled with the `spin` feature (the components turn it on; the sidecar
//! does not). Handlers stay thin: they read variables, talk to Redis and build
//! responses through these helpers, and make every decision in the other modules.

use crate::config::{CommonConfig, Variables};
use crate::http::Refusal;
use crate::keys::Keys;
use crate::reply::Reply;
use spin_sdk::http::{Fields, Method, OutgoingResponse, Request, Response, ResponseOutparam};
use spin_sdk::redis::{Connection, RedisParameter, RedisResult};

/// Spin application variables (`spin_sdk::variables`).
pub struct SpinVariables;

impl Variables for SpinVariables {
    fn get(&self, name: &str) -> Option<String> {
        spin_sdk::variables::get(name).ok()
    }
}

/// A Redis failure, by what went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisError {
    /// No connection could be opened (Redis down, unreachable, or the address is not
    /// in `allowed_outbound_hosts`).
    #[error("redis: cannot connect: {0}")]
    Connection(String),
    /// A command failed: Redis answered with an error, or the connection broke while
    /// it ran. Spin's interface (`fermyon:spin/redis@2.0.0`) reports both as one
    /// `other(string)`, so they cannot be told apart here.
    #[error("redis: {command} failed: {message}")]
    Reply {
        /// The command.
        command: String,
        /// What Spin said.
        message: String,
    },
    /// Redis answered, but not in the shape crm-events writes and expects.
    #[error("redis: unexpected reply to {command}: {detail}")]
    Protocol {
        /// The command.
        command: String,
        /// What was wrong with the reply.
        detail: String,
    },
}

impl RedisError {
    /// A reply of the wrong shape.
    pub fn protocol(command: &str, detail: impl std::fmt::Display) -> Self {
        Self::Protocol {
            command: command.to_string(),
            detail: detail.to_string(),
        }
    }
}

/// Spin's error as text (its `Debug` names the variant, e.g. `InvalidAddress`).
fn spin_message(e: spin_sdk::redis::Error) -> String {
    match e {
        spin_sdk::redis::Error::Other(message) => message,
        other => format!("{other:?}"),
    }
}

/// One outbound Redis connection (Spin opens a dedicated connection per `open`).
pub struct Redis {
    conn: Connection,
}

impl Redis {
    /// Connects to `address` (a `redis://` URL that `allowed_outbound_hosts` permits).
    pub fn open(address: &str) -> Result<Self, RedisError> {
        Connection::open(address)
            .map(|conn| Self { conn })
            .map_err(|e| RedisError::Connection(spin_message(e)))
    }

    /// Runs a command; arguments are sent as binary strings.
    pub fn run(&self, command: &str, args: &[&str]) -> Result<Vec<Reply>, RedisError> {
        let args: Vec<RedisParameter> = args
            .iter()
            .map(|a| RedisParameter::Binary(a.as_bytes().to_vec()))
            .collect();
        let results = self
            .conn
            .execute(command, &args)
            .map_err(|e| RedisError::Reply {
                command: command.to_string(),
                message: spin_message(e),
            })?;
        Ok(results
            .into_iter()
            .map(|r| match r {
                RedisResult::Nil => Reply::Nil,
                RedisResult::Status(s) => Reply::Status(s),
                RedisResult::Int64(i) => Reply::Int(i),
                RedisResult::Binary(b) => Reply::Bytes(b),
            })
            .collect())
    }

    /// Runs a command whose reply is one integer.
    pub fn run_int(&self, command: &str, args: &[&str]) -> Result<i64, RedisError> {
        let reply = self.run(command, args)?;
        reply.first().and_then(Reply::as_int).ok_or_else(|| {
            RedisError::protocol(command, format!("expected an integer, got {reply:?}"))
        })
    }

    /// Counts one request in `crm_events_http_requests_total`, best effort (see
    /// [`crate::metrics::HTTP_REQUESTS_TOTAL`] for the rule).
    /// A metrics write must never fail the request it counts: callers may ignore
    /// the result (it tells whether Redis answered).
    pub fn count_request(
        &self,
        keys: &Keys,
        method: &Method,
        path: &str,
    ) -> Result<(), RedisError> {
        let field = crate::http::request_counter_field(&method.to_string(), path);
        self.run("HINCRBY", &[&keys.http_requests(), &field, "1"])
            .map(drop)
    }
}

/// A Postgres failure, by what it means for the answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostgresError {
    /// No connection (Postgres down or unreachable, or not in
    /// `allowed_outbound_hosts`): `503`, retry.
    #[error("postgres: cannot connect: {0}")]
    Connection(String),
    /// The outbox tables or columns are missing (SQLSTATE 42P01/42703): `500`, run
    /// the migrations.
    #[error("postgres: the outbox tables are missing or not migrated (run `crm-events-outbox migrate`): {0}")]
    Schema(String),
    /// Any other failure of the statement: `503`.
    #[error("postgres: the statement failed: {0}")]
    Query(String),
}

impl PostgresError {
    /// The refusal to answer with (the address, which holds credentials, is never in it).
    pub fn refusal(&self) -> Refusal {
        match self {
            PostgresError::Schema(_) => Refusal::new(500, "configuration", self.to_string()),
            _ => Refusal::new(503, "postgres_unavailable", self.to_string()).retry_after(5),
        }
    }
}

fn pg_error(e: spin_sdk::pg4::PgError) -> PostgresError {
    use spin_sdk::pg4::{PgError, QueryError};
    match e {
        PgError::ConnectionFailed(m) => PostgresError::Connection(m),
        PgError::QueryFailed(QueryError::DbError(db))
            if ["42P01", "42703"].contains(&db.code.as_str()) =>
        {
            PostgresError::Schema(db.message)
        }
        PgError::QueryFailed(QueryError::DbError(db)) => {
            PostgresError::Query(format!("{} ({})", db.message, db.code))
        }
        PgError::QueryFailed(QueryError::Text(m)) => PostgresError::Query(m),
        other => PostgresError::Query(format!("{other:?}")),
    }
}

/// One outbound Postgres connection (`spin:postgres/postgres@4.0.0`).
pub struct Postgres {
    conn: spin_sdk::pg4::Connection,
}

impl Postgres {
    /// Connects to `address` (a URL that `allowed_outbound_hosts` permits).
    pub fn open(address: &str) -> Result<Self, PostgresError> {
        spin_sdk::pg4::Connection::open(address)
            .map(|conn| Self { conn })
            .map_err(pg_error)
    }

    /// Runs a statement with text parameters (`None` is NULL); one row of cells per
    /// result row (booleans, integers and text; anything else reads as NULL).
    pub fn query(
        &self,
        statement: &str,
        params: &[Option<String>],
    ) -> Result<Vec<Vec<crate::publish::Cell>>, PostgresError> {
        use crate::publish::Cell;
        use spin_sdk::pg4::{DbValue, ParameterValue};
        let params: Vec<ParameterValue> = params
            .iter()
            .map(|p| {
                p.clone()
                    .map_or(ParameterValue::DbNull, ParameterValue::Str)
            })
            .collect();
        let rows = self.conn.query(statement, &params).map_err(pg_error)?;
        let cell = |v: &DbValue| match v {
            DbValue::Boolean(b) => Cell::Bool(*b),
            DbValue::Int16(i) => Cell::Int(i64::from(*i)),
            DbValue::Int32(i) => Cell::Int(i64::from(*i)),
            DbValue::Int64(i) => Cell::Int(*i),
            DbValue::Str(s) => Cell::Text(s.clone()),
            _ => Cell::Null,
        };
        Ok(rows
            .rows
            .iter()
            .map(|r| r.iter().map(cell).collect())
            .collect())
    }
}

/// Seconds since the epoch, by the host's wall clock.
pub fn now_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Counts a request for a component that needs no Redis connection of its own: opens
/// one, counts, closes. Best effort, like [`Redis::count_request`].
pub fn count_request(config: &CommonConfig, method: &Method, path: &str) -> Result<(), RedisError> {
    Redis::open(&config.redis_address)?.count_request(&config.keys, method, path)
}

/// The 405 answer for anything but `GET`/`HEAD`, or `None` when the method is fine.
pub fn reject_unless_get(req: &Request) -> Option<Response> {
    if matches!(req.method(), Method::Get | Method::Head) {
        return None;
    }
    let mut r = refusal_response(&Refusal::new(405, "method_not_allowed", "use GET"));
    r.set_header("allow", "GET, HEAD");
    Some(r)
}

/// A complete response with a JSON body.
pub fn json_response(status: u16, body: String) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", crate::http::JSON)
        .header("cache-control", "no-store")
        .body(body)
        .build()
}

/// A complete response for a refusal.
pub fn refusal_response(refusal: &Refusal) -> Response {
    let mut builder = Response::builder();
    builder.status(refusal.status);
    for (name, value) in refusal.headers() {
        builder.header(name, value);
    }
    builder.body(refusal.body()).build()
}

/// Headers for a streamed response.
pub fn fields(headers: &[(&str, String)]) -> Fields {
    let list: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
    Fields::from_list(&list).expect("header names are static and values come from config")
}

/// Sends a complete response through a streaming handler's outparam.
pub async fn send_whole(
    out: ResponseOutparam,
    status: u16,
    headers: &[(&str, String)],
    body: String,
) {
    let response = OutgoingResponse::new(fields(headers));
    // The status codes used here are all valid; a failure leaves Spin's default 200.
    let _ = response.set_status_code(status);
    // The client may already be gone; there is nobody left to tell.
    let _ = out.set_with_body(response, body.into_bytes()).await;
}

/// Sends a refusal through a streaming handler's outparam, with extra headers.
pub async fn send_refusal(out: ResponseOutparam, extra: &[(&str, String)], refusal: &Refusal) {
    let mut headers = extra.to_vec();
    headers.extend(refusal.headers());
    send_whole(out, refusal.status, &headers, refusal.body()).await
}
