//! Writing a batch to Redis: atomic, idempotent, retried until it lands.
//!
//! One `MULTI`/`EXEC` per batch holds the `XADD` of every new event, the `HSET` of
//! the new partition watermarks and the `PUBLISH` of the batch, so the stream and the
//! watermark can never disagree. Before it, the writer `WATCH`es the watermark hash
//! and reads it: events at or below their partition's watermark are already in the
//! stream and are left out, so re-delivery from Kafka (a crash before the offset
//! commit, a rebalance, a retried write whose reply was lost) never duplicates an
//! entry. If another writer moves a watermark in between (two sidecars during a
//! rebalance), `EXEC` is refused and the writer reads again. That is the
//! exactly-once guarantee, at native command speed.
//!
//! Trimming keeps `STREAM_MAXLEN` entries once the stream is 1% over it, exactly, and
//! records the newest trimmed id (Redis does not move `max-deleted-entry-id` on
//! trims): a client resuming before it is told about the gap. The writer remembers
//! the ids it added, so a trim costs one `XTRIM MINID`; only after a restart, before
//! it has written `STREAM_MAXLEN` entries itself, does it read the old ids back.

use crate::batch::{Batch, Event};
use crm_events_contracts::keys::{Keys, ENVELOPE_FIELD};
use redis::aio::ConnectionManager;
use redis::Value;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// How far past `maxlen` the stream may grow before it is trimmed back (1%), so the
/// trim runs once per that many events rather than on every batch.
pub fn trim_slack(maxlen: u64) -> u64 {
    (maxlen / 100).max(1)
}

/// Retry delays: 100 ms doubling to 5 s.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: Duration::from_millis(100),
        }
    }
}

impl Backoff {
    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(5));
        d
    }
}

/// Writes batches for one topic and key prefix. Give it a connection of its own:
/// `WATCH` is per connection.
pub struct Writer {
    keys: Keys,
    topic: String,
    maxlen: u64,
    /// Ids this writer added, oldest first (at most `maxlen + slack`).
    recent: VecDeque<String>,
}

impl Writer {
    /// A writer for `topic` under `keys`; `maxlen` 0 keeps everything.
    pub fn new(keys: Keys, topic: &str, maxlen: u64) -> Self {
        Self {
            keys,
            topic: topic.to_string(),
            maxlen,
            recent: VecDeque::new(),
        }
    }

    /// The topic whose watermarks this writer keeps.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// One attempt; returns how many events were new to the stream.
    pub async fn write_once(
        &mut self,
        conn: &mut ConnectionManager,
        batch: &Batch,
    ) -> redis::RedisResult<u64> {
        loop {
            let marks = self.watch_watermarks(conn, batch).await?;
            let fresh: Vec<&Event> = batch
                .events
                .iter()
                .filter(|e| e.offset > marks.get(&e.partition).copied().unwrap_or(-1))
                .collect();
            if fresh.is_empty() {
                let () = redis::cmd("UNWATCH").query_async(conn).await?;
                return Ok(0);
            }
            let tx = self.transaction(&fresh);
            match tx.query_async::<Value>(conn).await? {
                // Another writer moved a watermark: read them again.
                Value::Nil => continue,
                Value::Array(results) => {
                    self.after_exec(conn, &results).await?;
                    return Ok(fresh.len() as u64);
                }
                other => {
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::UnexpectedReturnType,
                        "EXEC reply",
                        format!("{other:?}"),
                    )))
                }
            }
        }
    }

    /// `WATCH`es the watermark hash and reads the watermarks of the batch's
    /// partitions (-1 where none is set yet).
    async fn watch_watermarks(
        &self,
        conn: &mut ConnectionManager,
        batch: &Batch,
    ) -> redis::RedisResult<BTreeMap<i32, i64>> {
        let offsets_key = self.keys.offsets();
        let partitions: Vec<i32> = batch.last_offsets().into_keys().collect();
        let fields: Vec<String> = partitions
            .iter()
            .map(|p| Keys::offsets_field(&self.topic, *p))
            .collect();
        let () = redis::cmd("WATCH")
            .arg(&offsets_key)
            .query_async(conn)
            .await?;
        let marks: Vec<Option<i64>> = redis::cmd("HMGET")
            .arg(&offsets_key)
            .arg(&fields)
            .query_async(conn)
            .await?;
        Ok(partitions
            .into_iter()
            .zip(marks.into_iter().map(|m| m.unwrap_or(-1)))
            .collect())
    }

    /// The `MULTI`/`EXEC`: an `XADD` per fresh event, the moved watermarks, the
    /// `PUBLISH` of the batch, and `XLEN` (to know when to trim).
    fn transaction(&self, fresh: &[&Event]) -> redis::Pipeline {
        let mut tx = redis::pipe();
        tx.atomic();
        let stream = self.keys.stream();
        let mut moved: BTreeMap<i32, i64> = BTreeMap::new();
        for e in fresh {
            tx.cmd("XADD")
                .arg(&stream)
                .arg("*")
                .arg(ENVELOPE_FIELD)
                .arg(&e.envelope);
            // Fresh events are above their watermark: the last one per partition is
            // the new watermark.
            moved.insert(e.partition, e.offset);
        }
        let pairs: Vec<(String, i64)> = moved
            .iter()
            .map(|(p, m)| (Keys::offsets_field(&self.topic, *p), *m))
            .collect();
        tx.hset_multiple(self.keys.offsets(), &pairs).ignore();
        tx.publish(self.keys.channel(), batch_json(fresh)).ignore();
        tx.xlen(&stream);
        tx
    }

    /// Remembers the ids `EXEC` returned and trims when the stream is due.
    async fn after_exec(
        &mut self,
        conn: &mut ConnectionManager,
        results: &[Value],
    ) -> redis::RedisResult<()> {
        let (len, ids) = results.split_last().unwrap_or((&Value::Nil, &[]));
        for id in ids {
            if let Value::BulkString(b) = id {
                self.remember(String::from_utf8_lossy(b).into_owned());
            }
        }
        if let Value::Int(len) = len {
            self.trim_if_due(conn, *len as u64).await?;
        }
        Ok(())
    }

    fn remember(&mut self, id: String) {
        if self.maxlen == 0 {
            return;
        }
        self.recent.push_back(id);
        let cap = (self.maxlen + trim_slack(self.maxlen)) as usize;
        while self.recent.len() > cap {
            self.recent.pop_front();
        }
    }

    /// Trims the stream back to `maxlen` once it is `slack` over, recording the
    /// newest trimmed id.
    async fn trim_if_due(
        &mut self,
        conn: &mut ConnectionManager,
        len: u64,
    ) -> redis::RedisResult<()> {
        if self.maxlen == 0 || len <= self.maxlen + trim_slack(self.maxlen) {
            return Ok(());
        }
        let maxlen = self.maxlen as usize;
        let (first_kept, last_trimmed) = if self.recent.len() > maxlen {
            // Everything older than the maxlen-th newest id we wrote goes.
            let cut = self.recent.len() - maxlen;
            (self.recent[cut].clone(), self.recent[cut - 1].clone())
        } else {
            // After a restart: read the ids of the oldest entries back.
            let excess = (len - self.maxlen) as usize;
            let old: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
                .arg(self.keys.stream())
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(excess + 1)
                .query_async(conn)
                .await?;
            if old.len() < excess + 1 {
                return Ok(());
            }
            (old[excess].0.clone(), old[excess - 1].0.clone())
        };
        let mut tx = redis::pipe();
        tx.atomic()
            .cmd("XTRIM")
            .arg(self.keys.stream())
            .arg("MINID")
            .arg("=")
            .arg(&first_kept)
            .ignore()
            .set(self.keys.stream_trimmed(), &last_trimmed)
            .ignore();
        let () = tx.query_async(conn).await?;
        while self.recent.front().is_some_and(|id| *id != first_kept) {
            self.recent.pop_front();
        }
        Ok(())
    }

    /// Writes until it succeeds or `give_up_at` passes; calls `on_error` for every
    /// failed attempt. Returns `(written, latency of the successful attempt)`.
    pub async fn write(
        &mut self,
        conn: &mut ConnectionManager,
        batch: &Batch,
        give_up_at: impl Fn() -> Option<Instant>,
        mut on_error: impl FnMut(&redis::RedisError),
    ) -> Result<(u64, Duration), redis::RedisError> {
        let mut backoff = Backoff::default();
        loop {
            let started = Instant::now();
            match self.write_once(conn, batch).await {
                Ok(n) => return Ok((n, started.elapsed())),
                Err(e) => {
                    on_error(&e);
                    let delay = backoff.next_delay();
                    if give_up_at().is_some_and(|t| Instant::now() + delay > t) {
                        return Err(e);
                    }
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, events = batch.len(), "Redis write failed; holding the batch");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

/// The envelopes as one JSON array (the `PUBLISH` payload), without a JSON tree.
fn batch_json(events: &[&Event]) -> String {
    let mut payload =
        String::with_capacity(events.iter().map(|e| e.envelope.len() + 1).sum::<usize>() + 2);
    payload.push('[');
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            payload.push(',');
        }
        payload.push_str(&e.envelope);
    }
    payload.push(']');
    payload
}

/// Connects a [`ConnectionManager`] (it reconnects by itself afterwards), retrying
/// with backoff until Redis answers or `give_up_at` passes.
pub async fn connect(url: &str, give_up_at: Option<Instant>) -> anyhow::Result<ConnectionManager> {
    let client = redis::Client::open(url).map_err(|e| anyhow::anyhow!("REDIS_URL {url:?}: {e}"))?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(3)))
        .set_response_timeout(Some(Duration::from_secs(10)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2));
    let mut backoff = Backoff::default();
    loop {
        match ConnectionManager::new_with_config(client.clone(), config.clone()).await {
            Ok(c) => return Ok(c),
            Err(e) => {
                let delay = backoff.next_delay();
                if give_up_at.is_some_and(|t| Instant::now() + delay > t) {
                    return Err(anyhow::anyhow!("Redis at {url}: {e}"));
                }
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot reach Redis yet");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_json_is_an_array_of_the_envelopes() {
        let e = |envelope: &str| Event {
            partition: 0,
            offset: 0,
            timestamp: None,
            envelope: envelope.into(),
        };
        let (a, b) = (e(r#"{"a":1}"#), e("{}"));
        assert_eq!(batch_json(&[&a, &b]), r#"[{"a":1},{}]"#);
        assert_eq!(batch_json(&[]), "[]");
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let mut b = Backoff::default();
        let delays: Vec<u128> = (0..8).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    }

    #[test]
    fn remembers_at_most_maxlen_plus_slack_ids() {
        let mut w = Writer::new(Keys::default(), "t", 200);
        for i in 0..1000 {
            w.remember(format!("{i}-0"));
        }
        assert_eq!(w.recent.len(), 202);
        assert_eq!(w.recent.back().unwrap(), "999-0");
        let mut none = Writer::new(Keys::default(), "t", 0);
        none.remember("1-0".into());
        assert!(none.recent.is_empty());
    }
}
