//! `fermyon:spin/redis@2.0.0`, as Spin implements it: `open` makes one multiplexed
//! Redis connection with no response timeout (so `XREAD BLOCK` waits as long as it
//! asks to), the address must be permitted by the component's
//! `allowed_outbound_hosts`, and `execute` flattens the reply (arrays spliced in, nil
//! and `OK` dropped).

use super::address_allowed;
use super::fermyon::spin::redis::{self as wit, Error as RedisError, RedisParameter, RedisResult};
use crate::runtime::InstanceState;
use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, Value};
use wasmtime::component::Resource;

/// The host side of a `connection` resource.
pub struct RedisConnection(MultiplexedConnection);

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

impl wit::Host for InstanceState {}

impl wit::HostConnection for InstanceState {
    async fn open(
        &mut self,
        address: String,
    ) -> wasmtime::Result<Result<Resource<RedisConnection>, RedisError>> {
        if !address_allowed(&address, &self.component.allowed_outbound_hosts, 6379) {
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
}
