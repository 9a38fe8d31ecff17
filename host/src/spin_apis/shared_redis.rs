//! What the host shares between instances of Redis: one connection per address for
//! their commands, and one `XREAD` per stream for every instance that tails it.
//!
//! Under WASI 0.2 each open SSE stream is one instance, and under Spin each instance
//! opens its own Redis connection and blocks on its own
//! `XREAD COUNT <n> BLOCK <ms> STREAMS <key> <id>`. Every new entry then costs Redis a
//! reply per stream, and the host a socket read and a reply parse per stream; every
//! stream costs a Redis connection (a file descriptor on each side, buffers, a task).
//!
//! * **Connections** ([`SharedRedis::connection`]): an `open` gets the host's one
//!   multiplexed connection to its address, which reconnects by itself. A command
//!   that must not share one — a transaction, a blocking command, per-connection
//!   state (`SELECT`, `CLIENT`, subscriptions) — moves its resource to a connection
//!   of its own first, for good ([`needs_own_connection`]).
//! * **Reads**: a *tail* per (address, key) reads the stream once, keeps its newest
//!   entries in memory and answers the blocking reads from them: a new entry is read
//!   from Redis once, whatever the number of streams. Behind each read, in the same
//!   pipeline, it asks for the stream's oldest and newest ids, so what Redis trimmed
//!   is not answered any more, and a stream deleted and begun again with lower ids
//!   starts it afresh.
//!   (An entry deleted from the middle with `XDEL` can still be answered until it
//!   leaves the tail: nothing here deletes one.)
//!
//! A component cannot tell the difference. A read gets what Redis would answer: the
//! entries after its id, at most `COUNT`, in order, waiting up to `BLOCK` for the
//! first, and an empty reply when none came. Where the tail cannot answer exactly —
//! the id is older than what it holds, or it has lost its connection — the read asks
//! Redis itself without blocking (under the deadline the blocking read would have had,
//! so a Redis that hangs still fails it only after its block time), and waits on the
//! tail only when Redis has nothing after the id either. An `XREAD` of another shape
//! goes to Redis as before.
//!
//! Spin shares neither (docs/src/deploying.md, "The host beside `spin up`"): `--shared-redis false`
//! makes the host open and read as Spin does.

use super::fermyon::spin::redis::{Error as RedisError, RedisParameter, RedisResult};
use super::redis::{bounded, connect_timeout, parameter_bytes, Blocking};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Entries a tail holds at most (older ones are read from Redis when asked for).
pub const TAIL_ENTRIES: usize = 10_000;
/// Bytes of entries a tail holds at most.
pub const TAIL_BYTES: usize = 16 << 20;
/// Entries the tail asks Redis for per read.
const TAIL_READ_COUNT: usize = 1_000;
/// How long the tail's own read blocks (it checks whether it is still wanted between
/// reads).
const TAIL_BLOCK: Duration = Duration::from_secs(1);
/// A tail no read has used for this long stops (the next read starts a new one).
const TAIL_IDLE: Duration = Duration::from_secs(60);
/// Longest wait between two attempts to reconnect a tail.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// A stream entry id, `<ms>-<seq>`, ordered as Redis orders them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct EntryId(u64, u64);

impl EntryId {
    /// Parses a full id (`1700000000000-3`); partial ids and `$` are not shared.
    pub fn parse(text: &[u8]) -> Option<Self> {
        let (ms, seq) = std::str::from_utf8(text).ok()?.split_once('-')?;
        Some(Self(ms.parse().ok()?, seq.parse().ok()?))
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// One shareable read: `XREAD [COUNT n] BLOCK ms STREAMS <key> <id>`, one stream, a
/// full id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailRead {
    pub key: Vec<u8>,
    pub after: EntryId,
    pub count: usize,
    /// How long to wait for the first entry (`None`: `BLOCK 0`, forever).
    pub block: Option<Duration>,
}

impl TailRead {
    /// The read `command` with `arguments` asks for, when it has the shared shape.
    pub fn parse(command: &str, arguments: &[RedisParameter]) -> Option<Self> {
        if !command.eq_ignore_ascii_case("XREAD") {
            return None;
        }
        let text = parameter_bytes;
        let number = |a: Option<&RedisParameter>| -> Option<u64> {
            String::from_utf8(text(a?)).ok()?.parse().ok()
        };
        let (mut count, mut block) = (None, None);
        let mut i = 0;
        loop {
            let word = text(arguments.get(i)?).to_ascii_uppercase();
            match word.as_slice() {
                b"COUNT" if count.is_none() => count = Some(number(arguments.get(i + 1))?),
                b"BLOCK" if block.is_none() => block = Some(number(arguments.get(i + 1))?),
                b"STREAMS" => break,
                _ => return None,
            }
            i += 2;
        }
        let [key, id] = &arguments[i + 1..] else {
            return None;
        };
        Some(Self {
            key: text(key),
            after: EntryId::parse(&text(id))?,
            count: match count {
                None => usize::MAX,
                Some(0) => return None,
                Some(n) => n as usize,
            },
            block: match block? {
                0 => None,
                ms => Some(Duration::from_millis(ms)),
            },
        })
    }

    /// The same read as a command Redis answers at once (no `BLOCK`).
    fn at_once(&self) -> redis::Cmd {
        let mut cmd = redis::cmd("XREAD");
        if self.count != usize::MAX {
            cmd.arg("COUNT").arg(self.count);
        }
        cmd.arg("STREAMS")
            .arg(&self.key)
            .arg(self.after.to_string());
        cmd
    }

    /// What the blocking read asks Redis for (its deadline follows from it).
    fn blocking(&self) -> Blocking {
        self.block.map_or(Blocking::Forever, Blocking::For)
    }
}

/// One stream entry as Redis sent it: its id and its fields and values, in order.
struct Entry {
    id: EntryId,
    /// The id's text, then field, value, field, value…
    parts: Vec<Vec<u8>>,
    bytes: usize,
}

/// What a tail can say about a read.
enum Answer {
    /// The entries after the read's id (the flattened reply).
    Entries(Vec<RedisResult>),
    /// Nothing after the read's id yet: wait for news.
    Nothing,
    /// The tail does not hold the read's position: ask Redis.
    Unknown,
}

/// The entries a tail holds: every entry of the stream with an id above `from`, up
/// to the newest it has read, in order. `from` is `None` while the tail has no
/// connection.
#[derive(Default)]
struct Held {
    from: Option<EntryId>,
    entries: VecDeque<Entry>,
    bytes: usize,
}

impl Held {
    /// The reply to `read` from what is held.
    fn answer(&self, read: &TailRead) -> Answer {
        match self.from {
            Some(from) if read.after >= from => {}
            _ => return Answer::Unknown,
        }
        let start = self.entries.partition_point(|e| e.id <= read.after);
        if start == self.entries.len() {
            return Answer::Nothing;
        }
        let mut reply = vec![RedisResult::Binary(read.key.clone())];
        for entry in self.entries.range(start..).take(read.count) {
            reply.extend(entry.parts.iter().cloned().map(RedisResult::Binary));
        }
        Answer::Entries(reply)
    }

    /// Drops what is older than the stream's oldest entry (Redis trimmed it; `None`:
    /// the stream has no entries).
    fn forget_before(&mut self, oldest: Option<EntryId>) {
        while let Some(front) = self.entries.front() {
            if oldest.is_some_and(|oldest| front.id >= oldest) {
                break;
            }
            self.bytes -= front.bytes;
            self.entries.pop_front();
        }
    }

    /// Adds what the tail read and drops the oldest beyond the bounds.
    fn append(&mut self, entries: Vec<Entry>) {
        for entry in entries {
            self.bytes += entry.bytes;
            self.entries.push_back(entry);
        }
        while self.entries.len() > TAIL_ENTRIES || self.bytes > TAIL_BYTES {
            let Some(oldest) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= oldest.bytes;
            self.from = Some(oldest.id);
        }
    }
}

/// One stream's tail: the held entries and a signal that they changed.
struct Tail {
    held: Mutex<Held>,
    news: watch::Sender<()>,
    /// When a read last used this tail.
    last_used: Mutex<Instant>,
}

impl Tail {
    fn new() -> Self {
        Self {
            held: Mutex::new(Held::default()),
            news: watch::Sender::new(()),
            last_used: Mutex::new(Instant::now()),
        }
    }

    fn answer(&self, read: &TailRead) -> Answer {
        self.held.lock().expect("tail lock").answer(read)
    }

    /// Starts holding again after `from` (a new connection: what was held may no
    /// longer be contiguous with what comes).
    fn restart(&self, from: Option<EntryId>) {
        *self.held.lock().expect("tail lock") = Held {
            from,
            ..Held::default()
        };
        self.news.send_replace(());
    }

    /// Adds what the tail read and drops what Redis trimmed (older than `oldest`),
    /// in one step: no read sees the one without the other.
    fn append(&self, entries: Vec<Entry>, oldest: Option<EntryId>) {
        let mut held = self.held.lock().expect("tail lock");
        let added = !entries.is_empty();
        held.append(entries);
        held.forget_before(oldest);
        drop(held);
        if added {
            self.news.send_replace(());
        }
    }

    /// No read has used it for [`TAIL_IDLE`] and none waits on it.
    fn idle(&self) -> bool {
        let last = *self.last_used.lock().expect("tail lock");
        last.elapsed() >= TAIL_IDLE && self.news.receiver_count() == 0
    }
}

/// Commands that must not share a connection: they change its state (a transaction,
/// the database, the protocol, subscriptions, replication) or hold it.
const OWN_CONNECTION: [&str; 24] = [
    "MULTI",
    "EXEC",
    "DISCARD",
    "WATCH",
    "UNWATCH",
    "SELECT",
    "AUTH",
    "HELLO",
    "CLIENT",
    "RESET",
    "SUBSCRIBE",
    "PSUBSCRIBE",
    "SSUBSCRIBE",
    "UNSUBSCRIBE",
    "PUNSUBSCRIBE",
    "SUNSUBSCRIBE",
    "MONITOR",
    "READONLY",
    "READWRITE",
    "ASKING",
    "QUIT",
    "SYNC",
    "PSYNC",
    "REPLCONF",
];

/// Whether `command` (asking Redis to block as `blocking` says) needs a connection of
/// its own.
pub fn needs_own_connection(command: &str, blocking: Blocking) -> bool {
    blocking != Blocking::No
        || OWN_CONNECTION
            .iter()
            .any(|c| c.eq_ignore_ascii_case(command))
}

/// A tail's Redis address and stream key.
type TailId = (String, Vec<u8>);

/// Every shared connection and tail of one host, by Redis address (and stream key).
#[derive(Default)]
pub struct SharedRedis {
    connections: Mutex<HashMap<String, ConnectionManager>>,
    tails: Mutex<HashMap<TailId, Arc<Tail>>>,
}

impl SharedRedis {
    /// A registry with no connections and no tails yet.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// The host's connection to `address`, made when there is none. It connects on
    /// its first command (each attempt bounded by `timeout`) and again after Redis
    /// drops it.
    pub fn connection(
        &self,
        address: &str,
        timeout: Option<Duration>,
    ) -> Result<ConnectionManager, RedisError> {
        let mut connections = self.connections.lock().expect("connections lock");
        if let Some(conn) = connections.get(address) {
            return Ok(conn.clone());
        }
        let client = redis::Client::open(address).map_err(|_| RedisError::InvalidAddress)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout(timeout)))
            .set_response_timeout(None)
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(20));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| RedisError::Other(e.to_string()))?;
        connections.insert(address.to_string(), conn.clone());
        Ok(conn)
    }

    /// Answers `read` as Redis would. `address` names the tail; `conn` (any
    /// connection: what it is asked answers at once) serves what the tail cannot,
    /// under the host's deadline `timeout`.
    pub async fn read(
        self: &Arc<Self>,
        address: &str,
        read: TailRead,
        conn: &mut impl ConnectionLike,
        timeout: Option<Duration>,
    ) -> Result<Vec<RedisResult>, RedisError> {
        let tail = self.tail(address, &read.key, timeout)?;
        let until = read.block.map(|b| tokio::time::Instant::now() + b);
        let mut news = tail.news.subscribe();
        loop {
            news.mark_unchanged();
            match tail.answer(&read) {
                Answer::Entries(reply) => return Ok(reply),
                Answer::Nothing => {}
                Answer::Unknown => {
                    let cmd = read.at_once();
                    let at_once = cmd.query_async::<Value>(conn);
                    let reply =
                        super::redis::flatten(bounded(timeout, read.blocking(), at_once).await?);
                    if !reply.is_empty() {
                        return Ok(reply);
                    }
                }
            }
            let changed = news.changed();
            let waited = match until {
                None => Ok(changed.await),
                Some(until) => tokio::time::timeout_at(until, changed).await,
            };
            if waited.is_err() {
                return Ok(Vec::new()); // BLOCK ran out: Redis answers nil
            }
        }
    }

    /// The tail of `key` at `address`, started when there is none.
    fn tail(
        self: &Arc<Self>,
        address: &str,
        key: &[u8],
        timeout: Option<Duration>,
    ) -> Result<Arc<Tail>, RedisError> {
        let mut tails = self.tails.lock().expect("tails lock");
        let id = (address.to_string(), key.to_vec());
        if let Some(tail) = tails.get(&id) {
            *tail.last_used.lock().expect("tail lock") = Instant::now();
            return Ok(tail.clone());
        }
        let client = redis::Client::open(address).map_err(|_| RedisError::InvalidAddress)?;
        let tail = Arc::new(Tail::new());
        tails.insert(id.clone(), tail.clone());
        let follower = Follower {
            reads: Arc::downgrade(self),
            id,
            tail: tail.clone(),
            client,
            timeout: connect_timeout(timeout),
        };
        tokio::spawn(follower.run());
        Ok(tail)
    }

    /// Removes `tail` when it is idle; whether it did.
    fn remove_if_idle(&self, id: &TailId, tail: &Arc<Tail>) -> bool {
        let mut tails = self.tails.lock().expect("tails lock");
        let idle = tail.idle() && tails.get(id).is_some_and(|t| Arc::ptr_eq(t, tail));
        if idle {
            tails.remove(id);
        }
        idle
    }
}

/// The task that keeps one tail: reads the stream from where it last was, and
/// reconnects (holding nothing meanwhile) when Redis fails it.
struct Follower {
    reads: Weak<SharedRedis>,
    id: TailId,
    tail: Arc<Tail>,
    client: redis::Client,
    /// Deadline of a command beyond its block time.
    timeout: Duration,
}

impl Follower {
    async fn run(self) {
        let mut backoff = Duration::from_millis(50);
        while self.wanted() {
            match self.follow().await {
                Ok(()) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "stream tail lost Redis; reconnecting");
                    self.tail.restart(None);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Whether the host still runs and a read used the tail lately (an idle tail is
    /// removed, so the next read starts a fresh one).
    fn wanted(&self) -> bool {
        self.reads
            .upgrade()
            .is_some_and(|reads| !reads.remove_if_idle(&self.id, &self.tail))
    }

    /// Connects, starts after the stream's newest entry, and reads on until Redis
    /// fails (an error) or the tail is no longer wanted (`Ok`).
    async fn follow(&self) -> redis::RedisResult<()> {
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(TAIL_BLOCK + self.timeout))
            .set_connection_timeout(Some(self.timeout));
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let mut last = self.ends(&mut conn).await?.1;
        self.tail.restart(Some(last));
        while self.wanted() {
            let (entries, (oldest, newest)) = self.read_after(&mut conn, last).await?;
            if let Some(newest_read) = entries.last() {
                last = newest_read.id;
            }
            if newest < last {
                // Deleted, and begun again below where the tail is (by hand: `XADD *`
                // never goes back): what is held is gone. Start at its newest.
                last = newest;
                self.tail.restart(Some(last));
            } else {
                // What Redis trimmed is no answer any more: dropped under the same
                // lock as the new entries are added.
                self.tail.append(entries, oldest);
            }
        }
        Ok(())
    }

    /// The entries after `last`, blocking up to [`TAIL_BLOCK`] for the first, and the
    /// stream's ends right after the read (pipelined behind it: Redis answers them
    /// once the read returns, in the same reply, so the write that added the entries
    /// and trimmed the stream is seen whole).
    async fn read_after(
        &self,
        conn: &mut impl ConnectionLike,
        last: EntryId,
    ) -> redis::RedisResult<(Vec<Entry>, (Option<EntryId>, EntryId))> {
        let mut pipe = redis::pipe();
        pipe.cmd("XREAD")
            .arg("COUNT")
            .arg(TAIL_READ_COUNT)
            .arg("BLOCK")
            .arg(TAIL_BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.id.1)
            .arg(last.to_string());
        let (read, oldest, newest): (Value, Value, Value) =
            self.with_ends(&mut pipe).query_async(conn).await?;
        Ok((entries_of(stream_of(read))?, ends_of(oldest, newest)?))
    }

    /// The ids of the stream's oldest entry (`None`: it has none) and newest (`0-0`:
    /// it has none), in one round trip.
    async fn ends(
        &self,
        conn: &mut impl ConnectionLike,
    ) -> redis::RedisResult<(Option<EntryId>, EntryId)> {
        let (oldest, newest): (Value, Value) =
            self.with_ends(&mut redis::pipe()).query_async(conn).await?;
        ends_of(oldest, newest)
    }

    /// `pipe` with the two reads of the stream's ends added.
    fn with_ends<'p>(&self, pipe: &'p mut redis::Pipeline) -> &'p mut redis::Pipeline {
        let key = &self.id.1;
        pipe.cmd("XRANGE")
            .arg(key)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .cmd("XREVRANGE")
            .arg(key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
    }
}

/// The oldest id (`None`: no entries) and the newest (`0-0`: none) from the replies
/// of `XRANGE key - + COUNT 1` and `XREVRANGE key + - COUNT 1`.
fn ends_of(oldest: Value, newest: Value) -> redis::RedisResult<(Option<EntryId>, EntryId)> {
    let oldest = entries_of(oldest)?.first().map(|e| e.id);
    let newest = entries_of(newest)?.first().map_or(EntryId(0, 0), |e| e.id);
    Ok((oldest, newest))
}

/// The entries of the one stream in an `XREAD` reply (nil: none).
fn stream_of(reply: Value) -> Value {
    match reply {
        Value::Array(mut streams) if !streams.is_empty() => match streams.swap_remove(0) {
            Value::Array(mut pair) if pair.len() == 2 => pair.swap_remove(1),
            _ => Value::Nil,
        },
        Value::Map(mut streams) if !streams.is_empty() => streams.swap_remove(0).1,
        _ => Value::Nil,
    }
}

/// The entries of an `XRANGE`-shaped reply: `[[id, [field, value, …]], …]`.
fn entries_of(reply: Value) -> redis::RedisResult<Vec<Entry>> {
    let shape =
        || redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, "not a stream reply"));
    let items = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(items) => items,
        _ => return Err(shape()),
    };
    items
        .into_iter()
        .map(|item| {
            let Value::Array(pair) = item else {
                return Err(shape());
            };
            let mut parts = Vec::new();
            for part in super::redis::flatten(Value::Array(pair)) {
                match part {
                    RedisResult::Binary(b) => parts.push(b),
                    _ => return Err(shape()),
                }
            }
            let id = parts
                .first()
                .and_then(|t| EntryId::parse(t))
                .ok_or_else(shape)?;
            let bytes = parts.iter().map(Vec::len).sum::<usize>() + 64;
            Ok(Entry { id, parts, bytes })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::spin_apis::redis::tests::args;

    #[test]
    fn only_a_blocking_read_of_one_stream_after_a_full_id_is_shared() {
        let read = TailRead::parse(
            "xread",
            &args(&["COUNT", "5", "BLOCK", "100", "STREAMS", "s", "7-2"]),
        );
        assert_eq!(
            read,
            Some(TailRead {
                key: b"s".to_vec(),
                after: EntryId(7, 2),
                count: 5,
                block: Some(Duration::from_millis(100)),
            })
        );
        let forever =
            TailRead::parse("XREAD", &args(&["block", "0", "streams", "s", "0-0"])).unwrap();
        assert_eq!((forever.count, forever.block), (usize::MAX, None));
        for other in [
            &["STREAMS", "s", "1-0"][..],                        // not blocking
            &["BLOCK", "10", "STREAMS", "s", "$"],               // no id
            &["BLOCK", "10", "STREAMS", "s", "17"],              // a partial id
            &["BLOCK", "10", "STREAMS", "a", "b", "1-0", "2-0"], // two streams
            &["COUNT", "0", "BLOCK", "10", "STREAMS", "s", "1-0"],
            &["BLOCK", "10", "BLOCK", "5", "STREAMS", "s", "1-0"],
            &["NOACK", "BLOCK", "10", "STREAMS", "s", "1-0"],
        ] {
            assert_eq!(TailRead::parse("XREAD", &args(other)), None, "{other:?}");
        }
        assert_eq!(TailRead::parse("XRANGE", &args(&["s", "-", "+"])), None);
    }

    fn entry(ms: u64, data: &str) -> Entry {
        let parts = vec![
            format!("{ms}-0").into_bytes(),
            b"e".to_vec(),
            data.as_bytes().to_vec(),
        ];
        Entry {
            id: EntryId(ms, 0),
            bytes: 100,
            parts,
        }
    }

    fn read_after(ms: u64, count: usize) -> TailRead {
        TailRead {
            key: b"s".to_vec(),
            after: EntryId(ms, 0),
            count,
            block: None,
        }
    }

    fn ids(answer: Answer) -> Vec<String> {
        let Answer::Entries(reply) = answer else {
            panic!("no entries")
        };
        reply
            .iter()
            .skip(1)
            .step_by(3)
            .map(|r| match r {
                RedisResult::Binary(b) => String::from_utf8(b.clone()).unwrap(),
                _ => panic!("{r:?}"),
            })
            .collect()
    }

    /// A tail that holds everything after `from`, and then the entries `ms`.
    fn holding(from: u64, ms: std::ops::RangeInclusive<u64>) -> Held {
        let mut held = Held {
            from: Some(EntryId(from, 0)),
            ..Held::default()
        };
        held.append(ms.map(|ms| entry(ms, "x")).collect());
        held
    }

    #[test]
    fn answers_what_comes_after_the_id_up_to_count_and_no_further_back_than_it_holds() {
        let held = holding(10, 11..=15);
        assert_eq!(ids(held.answer(&read_after(12, 2))), ["13-0", "14-0"]);
        assert_eq!(ids(held.answer(&read_after(10, 100))).len(), 5);
        let Answer::Entries(reply) = held.answer(&read_after(14, 9)) else {
            panic!()
        };
        assert_eq!(reply.len(), 4, "key, id, field, value");
        assert!(matches!(held.answer(&read_after(15, 9)), Answer::Nothing));
        assert!(matches!(held.answer(&read_after(99, 9)), Answer::Nothing));
        assert!(matches!(held.answer(&read_after(9, 9)), Answer::Unknown));
        assert!(matches!(
            Held::default().answer(&read_after(12, 1)),
            Answer::Unknown
        ));
    }

    #[test]
    fn what_it_drops_for_room_it_no_longer_answers_for() {
        let held = holding(0, 1..=TAIL_ENTRIES as u64 + 3);
        assert_eq!(held.entries.len(), TAIL_ENTRIES);
        assert_eq!(held.from, Some(EntryId(3, 0)));
        assert!(matches!(held.answer(&read_after(2, 1)), Answer::Unknown));
        assert_eq!(ids(held.answer(&read_after(3, 1))), ["4-0"]);
    }

    #[test]
    fn what_redis_trimmed_is_no_answer() {
        let mut held = holding(0, 1..=5);
        held.forget_before(Some(EntryId(4, 0)));
        assert_eq!(ids(held.answer(&read_after(1, 9))), ["4-0", "5-0"]);
        assert_eq!(held.bytes, 200);
        held.forget_before(None);
        assert!(matches!(held.answer(&read_after(1, 9)), Answer::Nothing));
    }

    #[test]
    fn reads_the_entries_of_an_xread_reply() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("s"),
            Value::Array(vec![Value::Array(vec![
                bulk("5-1"),
                Value::Array(vec![bulk("a"), bulk("1"), bulk("b"), bulk("2")]),
            ])]),
        ])]);
        let entries = entries_of(stream_of(reply)).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].id, EntryId(5, 1));
        assert_eq!(
            entries[0].parts,
            [
                b"5-1".to_vec(),
                b"a".to_vec(),
                b"1".to_vec(),
                b"b".to_vec(),
                b"2".to_vec()
            ]
        );
        assert!(entries_of(stream_of(Value::Nil)).unwrap().is_empty());
        assert!(entries_of(Value::Int(3)).is_err());
    }
}
