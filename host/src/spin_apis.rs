//! Host implementations of `fermyon:spin/redis@2.0.0` and `fermyon:spin/variables@2.0.0`.
//!
//! They behave as Spin's do: `open` makes one multiplexed Redis connection with no
//! response timeout (so `XREAD BLOCK` waits as long as it asks to), the address must
//! be permitted by the component's `allowed_outbound_hosts`, and `execute` flattens
//! the reply (arrays spliced in, nil and `OK` dropped).

use crate::runtime::InstanceState;
use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, Value};
use wasmtime::component::Resource;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "crm-events:host/spin-imports",
    imports: { default: async | trappable },
    with: {
        "fermyon:spin/redis.connection": RedisConnection,
    },
});

pub use fermyon::spin::redis::{Error as RedisError, RedisParameter, RedisResult};
pub use fermyon::spin::variables::Error as VariablesError;

/// The host side of a `connection` resource.
pub struct RedisConnection(MultiplexedConnection);

/// Whether `address` (a `redis://` or `rediss://` URL) is allowed by `allowed` (as
/// in `spin.toml`: `redis://host:port`, where host and port may be `*`).
pub fn address_allowed(address: &str, allowed: &[String]) -> bool {
    fn split(url: &str) -> Option<(&str, &str, &str)> {
        let (scheme, rest) = url.split_once("://")?;
        let authority = rest.split('/').next()?;
        let authority = authority.rsplit('@').next()?;
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (h, p),
            _ => (authority, "6379"),
        };
        Some((scheme, host, port))
    }
    let Some((scheme, host, port)) = split(address) else {
        return false;
    };
    allowed.iter().any(|a| {
        let Some((s, h, p)) = split(a) else {
            return false;
        };
        (s == "*" || s == scheme) && (h == "*" || h == host) && (p == "*" || p == port)
    })
}

/// Flattens a reply the way Spin does.
pub fn flatten(value: Value) -> Vec<RedisResult> {
    fn push(out: &mut Vec<RedisResult>, value: Value) {
        match value {
            Value::Nil | Value::Okay => {}
            Value::Int(i) => out.push(RedisResult::Int64(i)),
            Value::BulkString(b) => out.push(RedisResult::Binary(b)),
            Value::SimpleString(s) => out.push(RedisResult::Status(s)),
            Value::Array(items) | Value::Set(items) => items.into_iter().for_each(|v| push(out, v)),
            Value::Map(pairs) => pairs.into_iter().for_each(|(k, v)| {
                push(out, k);
                push(out, v);
            }),
            Value::Double(d) => out.push(RedisResult::Status(d.to_string())),
            Value::Boolean(b) => out.push(RedisResult::Int64(b as i64)),
            Value::VerbatimString { text, .. } => out.push(RedisResult::Binary(text.into_bytes())),
            Value::BigNumber(n) => out.push(RedisResult::Binary(n)),
            Value::Attribute { data, .. } => push(out, *data),
            Value::Push { data, .. } => data.into_iter().for_each(|v| push(out, v)),
            Value::ServerError(e) => out.push(RedisResult::Status(format!("{e:?}"))),
            _ => {}
        }
    }
    let mut out = Vec::new();
    push(&mut out, value);
    out
}

fn other(e: impl std::fmt::Display) -> RedisError {
    RedisError::Other(e.to_string())
}

impl fermyon::spin::redis::Host for InstanceState {}

impl fermyon::spin::redis::HostConnection for InstanceState {
    async fn open(
        &mut self,
        address: String,
    ) -> wasmtime::Result<Result<Resource<RedisConnection>, RedisError>> {
        if !address_allowed(&address, &self.component.allowed_outbound_hosts) {
            return Ok(Err(RedisError::InvalidAddress));
        }
        let client = match redis::Client::open(address.as_str()) {
            Ok(c) => c,
            Err(_) => return Ok(Err(RedisError::InvalidAddress)),
        };
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(None)
            .set_connection_timeout(Some(std::time::Duration::from_secs(5)));
        let conn = match client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(c) => c,
            Err(e) => return Ok(Err(other(e))),
        };
        Ok(Ok(self.table.push(RedisConnection(conn))?))
    }

    async fn publish(
        &mut self,
        c: Resource<RedisConnection>,
        channel: String,
        payload: Vec<u8>,
    ) -> wasmtime::Result<Result<(), RedisError>> {
        let conn = &mut self.table.get_mut(&c)?.0;
        Ok(conn
            .publish::<_, _, ()>(channel, payload)
            .await
            .map_err(other))
    }

    async fn get(
        &mut self,
        c: Resource<RedisConnection>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, RedisError>> {
        let conn = &mut self.table.get_mut(&c)?.0;
        Ok(conn.get(key).await.map_err(other))
    }

    async fn set(
        &mut self,
        c: Resource<RedisConnection>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), RedisError>> {
        let conn = &mut self.table.get_mut(&c)?.0;
        Ok(conn.set::<_, _, ()>(key, value).await.map_err(other))
    }

    async fn incr(
        &mut self,
        c: Resource<RedisConnection>,
        key: String,
    ) -> wasmtime::Result<Result<i64, RedisError>> {
        let conn = &mut self.table.get_mut(&c)?.0;
        Ok(conn.incr(key, 1).await.map_err(other))
    }

    async fn del(
        &mut self,
        c: Resource<RedisConnection>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<u32, RedisError>> {
        let conn = &mut self.table.get_mut(&c)?.0;
        Ok(conn.del(keys).await.map_err(other))
    }

    async fn sadd(
        &mut self,
        c: Resource<RedisConnection>,
        key: String,
        values: Vec<String>,
    ) -> wasmtime::Result<Result<u32, RedisError>> {
        let conn = &mut self.table.get_mut(&c)?.0;
        Ok(conn.sadd(key, values).await.map_err(other))
    }

    async fn smembers(
        &mut self,
        c: Resource<RedisConnection>,
        key: String,
    ) -> wasmtime::Result<Result<Vec<String>, RedisError>> {
        let conn = &mut self.table.get_mut(&c)?.0;
        Ok(conn.smembers(key).await.map_err(other))
    }

    async fn srem(
        &mut self,
        c: Resource<RedisConnection>,
        key: String,
        values: Vec<String>,
    ) -> wasmtime::Result<Result<u32, RedisError>> {
        let conn = &mut self.table.get_mut(&c)?.0;
        Ok(conn.srem(key, values).await.map_err(other))
    }

    async fn execute(
        &mut self,
        c: Resource<RedisConnection>,
        command: String,
        arguments: Vec<RedisParameter>,
    ) -> wasmtime::Result<Result<Vec<RedisResult>, RedisError>> {
        let conn = &mut self.table.get_mut(&c)?.0;
        let mut cmd = redis::cmd(&command);
        for a in arguments {
            match a {
                RedisParameter::Int64(i) => cmd.arg(i),
                RedisParameter::Binary(b) => cmd.arg(b),
            };
        }
        Ok(cmd
            .query_async::<Value>(conn)
            .await
            .map(flatten)
            .map_err(other))
    }

    async fn drop(&mut self, c: Resource<RedisConnection>) -> wasmtime::Result<()> {
        self.table.delete(c)?;
        Ok(())
    }
}

impl fermyon::spin::variables::Host for InstanceState {
    async fn get(&mut self, name: String) -> wasmtime::Result<Result<String, VariablesError>> {
        let valid = !name.is_empty()
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Ok(Err(VariablesError::InvalidName(name)));
        }
        Ok(self
            .component
            .variables
            .get(&name)
            .cloned()
            .ok_or(VariablesError::Undefined(name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattens_like_spin() {
        let v = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"s".to_vec()),
            Value::Array(vec![Value::Array(vec![
                Value::BulkString(b"1-0".to_vec()),
                Value::Array(vec![
                    Value::BulkString(b"e".to_vec()),
                    Value::BulkString(b"{}".to_vec()),
                ]),
            ])]),
        ])]);
        let flat = flatten(v);
        assert_eq!(flat.len(), 4);
        assert!(matches!(&flat[1], RedisResult::Binary(b) if b == b"1-0"));
        assert!(flatten(Value::Nil).is_empty());
        assert!(flatten(Value::Okay).is_empty());
        assert!(matches!(flatten(Value::Int(3))[0], RedisResult::Int64(3)));
    }

    #[test]
    fn allowed_hosts_match_like_spin() {
        let allowed = vec!["redis://127.0.0.1:6379".to_string()];
        assert!(address_allowed("redis://127.0.0.1:6379", &allowed));
        assert!(address_allowed("redis://127.0.0.1", &allowed));
        assert!(address_allowed("redis://:pw@127.0.0.1:6379/0", &allowed));
        assert!(!address_allowed("redis://127.0.0.1:6380", &allowed));
        assert!(!address_allowed("redis://10.0.0.1:6379", &allowed));
        let any = vec!["redis://*:*".to_string()];
        assert!(address_allowed("redis://x:1", &any));
    }
}
