//! `fermyon:spin/redis@2.0.0`, as Spin implements it: the address must be permitted
//! by the component's `allowed_outbound_hosts`, and `execute` flattens the reply
//! (arrays spliced in, nil and `OK` dropped).
//!
//! Spin makes one multiplexed Redis connection per `open`, and so does the host with
//! `--shared-redis false`. By default the instances share the host's connection to
//! an address, and the blocking `XREAD`s of a stream one read of it
//! ([`super::shared_redis`]): the same replies, a fraction of the connections and
//! reads.
//!
//! One difference, on purpose: Spin gives a command no deadline, so a Redis that
//! hangs (stopped, not down) hangs every request with it. This host bounds each
//! command by [`HostConfig::redis_timeout`](crate::HostConfig) (2 s by default),
//! and one that asks Redis to block by twice its block time (at least the block time
//! plus the deadline: `XREAD BLOCK 15000` may take 30 s); the component gets an
//! error it can answer `503` with.

use super::address_allowed;
use super::fermyon::spin::redis::{self as wit, Error as RedisError, RedisParameter, RedisResult};
use super::shared_redis::{needs_own_connection, SharedRedis, TailRead};
use crate::runtime::InstanceState;
use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::{AsyncCommands, RedisFuture, Value};
use std::future::Future;
use std::time::Duration;
use wasmtime::component::Resource;

/// The host side of a `connection` resource: where its commands go and the host's
/// deadline for them (`None`: wait forever, as Spin does).
pub struct RedisConnection {
    conn: Conn,
    timeout: Option<Duration>,
    /// The address it was opened with (the key of what the host shares).
    address: String,
}

/// Where a connection resource's commands go.
#[derive(Clone)]
enum Conn {
    /// The host's connection to the address ([`SharedRedis::connection`]).
    Shared(ConnectionManager),
    /// One of its own: as Spin opens one per `open`, or since a command needed one.
    Own(MultiplexedConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Shared(c) => c.req_packed_command(cmd),
            Conn::Own(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Shared(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Own(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Shared(c) => c.get_db(),
            Conn::Own(c) => c.get_db(),
        }
    }
}

/// The host's shared connection to `address`, once it answers a `PING` within the
/// deadline: as Spin's `open` fails when it cannot connect, this one fails when Redis
/// is down or hangs, so a request learns it at once instead of on every command.
///
/// And as Spin's `open` connects afresh, this one succeeds as soon as Redis is back:
/// a connection that failed while Redis was away fails its next command and starts
/// connecting again, so a `PING` that fails without running out of time is tried
/// once more, on the new connection.
async fn shared_connection(
    shared: &SharedRedis,
    address: &str,
    timeout: Option<Duration>,
) -> Result<Conn, RedisError> {
    let mut conn = shared.connection(address, timeout)?;
    let started = tokio::time::Instant::now();
    match ping(&mut conn, timeout).await {
        Ok(()) => return Ok(Conn::Shared(conn)),
        // The deadline ran out: Redis hangs, and asking again would wait as long.
        Err(e) if timeout.is_some_and(|t| started.elapsed() >= t) => return Err(e),
        Err(e) => tracing::debug!(error = ?e, "shared Redis connection failed; reconnecting"),
    }
    ping(&mut conn, timeout).await?;
    Ok(Conn::Shared(conn))
}

/// `PING` on `conn`, bounded like a command.
async fn ping(conn: &mut ConnectionManager, timeout: Option<Duration>) -> Result<(), RedisError> {
    let ping = redis::cmd("PING");
    bounded(timeout, Blocking::No, ping.query_async::<Value>(conn)).await?;
    Ok(())
}

/// A connection of its own to `address`; the handshake is bounded like a command.
async fn own_connection(
    address: &str,
    timeout: Option<Duration>,
) -> Result<MultiplexedConnection, RedisError> {
    let client = redis::Client::open(address).map_err(|_| RedisError::InvalidAddress)?;
    let config = redis::AsyncConnectionConfig::new()
        .set_response_timeout(None)
        .set_connection_timeout(Some(connect_timeout(timeout)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(other)
}

/// How long making a connection may take: the host's deadline, or 5 s where it has
/// none (a connection that never comes helps no one, even as Spin).
pub(super) fn connect_timeout(timeout: Option<Duration>) -> Duration {
    timeout.unwrap_or(Duration::from_secs(5))
}

/// How long a command asks Redis to block before it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocking {
    /// Not a blocking command: Redis answers at once.
    No,
    /// Up to this long (`XREAD BLOCK 5000`, `BLPOP k 5`).
    For(Duration),
    /// Until there is something (`BLOCK 0`, a timeout of 0).
    Forever,
}

/// A command argument as Redis receives it (an integer as its decimal text).
pub fn parameter_bytes(a: &RedisParameter) -> Vec<u8> {
    match a {
        RedisParameter::Int64(i) => i.to_string().into_bytes(),
        RedisParameter::Binary(b) => b.clone(),
    }
}

/// What `command` with `args` asks Redis to block for.
pub fn blocking_time(command: &str, args: &[RedisParameter]) -> Blocking {
    let text = |a: &RedisParameter| String::from_utf8_lossy(&parameter_bytes(a)).into_owned();
    let seconds = |a: Option<&RedisParameter>| a.map(text).and_then(|t| t.parse::<f64>().ok());
    let millis = match command.to_ascii_uppercase().as_str() {
        "XREAD" | "XREADGROUP" => args
            .iter()
            .position(|a| text(a).eq_ignore_ascii_case("BLOCK"))
            .and_then(|i| seconds(args.get(i + 1))),
        "BLPOP" | "BRPOP" | "BZPOPMIN" | "BZPOPMAX" | "BLMOVE" | "BRPOPLPUSH" => {
            seconds(args.last()).map(|s| s * 1000.0)
        }
        "BLMPOP" | "BZMPOP" => seconds(args.first()).map(|s| s * 1000.0),
        "WAIT" => seconds(args.last()),
        _ => return Blocking::No,
    };
    match millis {
        None => Blocking::No,
        Some(ms) if ms <= 0.0 => Blocking::Forever,
        Some(ms) => Blocking::For(Duration::from_micros((ms * 1000.0) as u64)),
    }
}

/// Runs `command` under its deadline: `timeout` for a command Redis answers at once;
/// for one that may block, its block time plus the larger of the two (a busy host
/// that polls a reply late must not give up on a read Redis has answered: that
/// would throw the reply away and ask again, adding load where there is too much).
pub(super) async fn bounded<T>(
    timeout: Option<Duration>,
    blocking: Blocking,
    command: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, RedisError> {
    let deadline = match (timeout, blocking) {
        (None, _) | (_, Blocking::Forever) => return command.await.map_err(other),
        (Some(t), Blocking::No) => t,
        (Some(t), Blocking::For(block)) => block + t.max(block),
    };
    match tokio::time::timeout(deadline, command).await {
        Ok(result) => result.map_err(other),
        Err(_) => Err(RedisError::Other(format!(
            "Redis did not answer within {} ms",
            deadline.as_millis()
        ))),
    }
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

impl wit::Host for InstanceState {}

impl InstanceState {
    /// A handle on the resource's connection (a cheap clone of the multiplexed
    /// connection) and its deadline.
    fn connection(
        &self,
        c: &Resource<RedisConnection>,
    ) -> wasmtime::Result<(Conn, Option<Duration>)> {
        let c = self.table.get(c)?;
        Ok((c.conn.clone(), c.timeout))
    }

    /// The resource's connection of its own, opened (for good) when it shares the
    /// host's.
    async fn own_connection(
        &mut self,
        c: &Resource<RedisConnection>,
    ) -> wasmtime::Result<Result<Conn, RedisError>> {
        let resource = self.table.get(c)?;
        if let Conn::Own(_) = resource.conn {
            return Ok(Ok(resource.conn.clone()));
        }
        let conn = match own_connection(&resource.address, resource.timeout).await {
            Ok(conn) => Conn::Own(conn),
            Err(e) => return Ok(Err(e)),
        };
        self.table.get_mut(c)?.conn = conn.clone();
        Ok(Ok(conn))
    }
}

impl wit::HostConnection for InstanceState {
    async fn open(
        &mut self,
        address: String,
    ) -> wasmtime::Result<Result<Resource<RedisConnection>, RedisError>> {
        if !address_allowed(&address, &self.component.allowed_outbound_hosts, 6379) {
            return Ok(Err(RedisError::InvalidAddress));
        }
        let timeout = self.redis_timeout;
        let conn = match &self.shared_redis {
            Some(shared) => shared_connection(shared, &address, timeout).await,
            None => own_connection(&address, timeout).await.map(Conn::Own),
        };
        Ok(match conn {
            Ok(conn) => Ok(self.table.push(RedisConnection {
                conn,
                timeout,
                address,
            })?),
            Err(e) => Err(e),
        })
    }

    async fn publish(
        &mut self,
        c: Resource<RedisConnection>,
        channel: String,
        payload: Vec<u8>,
    ) -> wasmtime::Result<Result<(), RedisError>> {
        let (mut conn, t) = self.connection(&c)?;
        Ok(bounded(t, Blocking::No, conn.publish(channel, payload)).await)
    }

    async fn get(
        &mut self,
        c: Resource<RedisConnection>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, RedisError>> {
        let (mut conn, t) = self.connection(&c)?;
        Ok(bounded(t, Blocking::No, conn.get(key)).await)
    }

    async fn set(
        &mut self,
        c: Resource<RedisConnection>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), RedisError>> {
        let (mut conn, t) = self.connection(&c)?;
        Ok(bounded(t, Blocking::No, conn.set(key, value)).await)
    }

    async fn incr(
        &mut self,
        c: Resource<RedisConnection>,
        key: String,
    ) -> wasmtime::Result<Result<i64, RedisError>> {
        let (mut conn, t) = self.connection(&c)?;
        Ok(bounded(t, Blocking::No, conn.incr(key, 1)).await)
    }

    async fn del(
        &mut self,
        c: Resource<RedisConnection>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<u32, RedisError>> {
        let (mut conn, t) = self.connection(&c)?;
        Ok(bounded(t, Blocking::No, conn.del(keys)).await)
    }

    async fn sadd(
        &mut self,
        c: Resource<RedisConnection>,
        key: String,
        values: Vec<String>,
    ) -> wasmtime::Result<Result<u32, RedisError>> {
        let (mut conn, t) = self.connection(&c)?;
        Ok(bounded(t, Blocking::No, conn.sadd(key, values)).await)
    }

    async fn smembers(
        &mut self,
        c: Resource<RedisConnection>,
        key: String,
    ) -> wasmtime::Result<Result<Vec<String>, RedisError>> {
        let (mut conn, t) = self.connection(&c)?;
        Ok(bounded(t, Blocking::No, conn.smembers(key)).await)
    }

    async fn srem(
        &mut self,
        c: Resource<RedisConnection>,
        key: String,
        values: Vec<String>,
    ) -> wasmtime::Result<Result<u32, RedisError>> {
        let (mut conn, t) = self.connection(&c)?;
        Ok(bounded(t, Blocking::No, conn.srem(key, values)).await)
    }

    async fn execute(
        &mut self,
        c: Resource<RedisConnection>,
        command: String,
        arguments: Vec<RedisParameter>,
    ) -> wasmtime::Result<Result<Vec<RedisResult>, RedisError>> {
        let (mut conn, t) = self.connection(&c)?;
        if let Some(shared) = self.shared_redis.clone() {
            if let Some(read) = TailRead::parse(&command, &arguments) {
                let address = self.table.get(&c)?.address.clone();
                return Ok(shared.read(&address, read, &mut conn, t).await);
            }
        }
        let blocking = blocking_time(&command, &arguments);
        if matches!(conn, Conn::Shared(_)) && needs_own_connection(&command, blocking) {
            conn = match self.own_connection(&c).await? {
                Ok(conn) => conn,
                Err(e) => return Ok(Err(e)),
            };
        }
        let mut cmd = redis::cmd(&command);
        for a in arguments {
            match a {
                RedisParameter::Int64(i) => cmd.arg(i),
                RedisParameter::Binary(b) => cmd.arg(b),
            };
        }
        let reply = bounded(t, blocking, cmd.query_async::<Value>(&mut conn)).await;
        Ok(reply.map(flatten))
    }

    async fn drop(&mut self, c: Resource<RedisConnection>) -> wasmtime::Result<()> {
        self.table.delete(c)?;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
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

    /// Command arguments, each as a binary string.
    pub(crate) fn args(list: &[&str]) -> Vec<RedisParameter> {
        list.iter()
            .map(|a| RedisParameter::Binary(a.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn blocking_commands_get_their_block_time_on_top_of_the_deadline() {
        let ms = |n| Blocking::For(Duration::from_millis(n));
        let xread = args(&["COUNT", "10", "block", "15000", "STREAMS", "s", "$"]);
        assert_eq!(blocking_time("XREAD", &xread), ms(15_000));
        assert_eq!(
            blocking_time("xread", &args(&["STREAMS", "s", "$"])),
            Blocking::No
        );
        let forever = args(&["BLOCK", "0", "STREAMS", "s", "$"]);
        assert_eq!(blocking_time("XREAD", &forever), Blocking::Forever);
        assert_eq!(blocking_time("BLPOP", &args(&["a", "b", "1.5"])), ms(1_500));
        assert_eq!(
            blocking_time("BLMPOP", &args(&["2", "1", "a", "LEFT"])),
            ms(2_000)
        );
        assert_eq!(blocking_time("WAIT", &args(&["1", "250"])), ms(250));
        assert_eq!(blocking_time("HGET", &args(&["h", "BLOCK"])), Blocking::No);
        let int = [
            RedisParameter::Binary(b"BLOCK".to_vec()),
            RedisParameter::Int64(20),
        ];
        assert_eq!(blocking_time("XREAD", &int), ms(20));
    }

    #[tokio::test]
    async fn a_command_past_its_deadline_is_an_error_naming_it() {
        let never = std::future::pending::<redis::RedisResult<()>>();
        let t = Some(Duration::from_millis(20));
        let err = bounded(t, Blocking::No, never).await.unwrap_err();
        assert!(
            matches!(&err, RedisError::Other(m) if m.contains("within 20 ms")),
            "{err:?}"
        );
        let quick = async { Ok::<_, redis::RedisError>(7) };
        assert_eq!(bounded(t, Blocking::Forever, quick).await.unwrap(), 7);
    }
}
