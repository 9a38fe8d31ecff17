//! Writing a batch to Redis: atomic, idempotent, retried until it lands.
//!
//! One Lua script per batch does, atomically: for each event whose offset is above
//! its partition's watermark, `XADD`; then `HSET` the new watermarks; then `PUBLISH`
//! the written envelopes as one JSON array; and, once the stream is 1% over
//! `STREAM_MAXLEN`, trims it back and records the newest trimmed id. An event at or
//! below the watermark is already in the stream and is skipped, so re-delivery from
//! Kafka (a crash before the offset commit, a rebalance, a retried write whose reply
//! was lost) never duplicates an entry. That is the exactly-once guarantee: the
//! watermark moves in the same transaction as the events.
//!
//! DESIGN.md names MULTI/EXEC; a script is the same single atomic step and also lets
//! the write check the watermark, which MULTI/EXEC cannot do without a WATCH round trip.

use crate::batch::Batch;
use crm_events_contracts::keys::{Keys, ENVELOPE_FIELD};
use redis::aio::ConnectionManager;
use std::time::{Duration, Instant};

/// KEYS: stream, offsets hash, channel, trim marker. ARGV: maxlen (0 = none),
/// trim slack, field, then (watermark field, offset, envelope) per event.
/// Returns the number written.
const WRITE_BATCH: &str = r#"
local maxlen = tonumber(ARGV[1])
local slack = tonumber(ARGV[2])
local field = ARGV[3]
local marks = {}
local changed = {}
local written = {}
for i = 4, #ARGV, 3 do
  local pf = ARGV[i]
  local offset = tonumber(ARGV[i + 1])
  local mark = marks[pf]
  if mark == nil then
    mark = tonumber(redis.call('HGET', KEYS[2], pf) or '-1')
  end
  if offset > mark then
    redis.call('XADD', KEYS[1], '*', field, ARGV[i + 2])
    mark = offset
    changed[pf] = true
    written[#written + 1] = ARGV[i + 2]
  end
  marks[pf] = mark
end
for pf, _ in pairs(changed) do
  redis.call('HSET', KEYS[2], pf, marks[pf])
end
if #written > 0 then
  redis.call('PUBLISH', KEYS[3], '[' .. table.concat(written, ',') .. ']')
end
-- Trim to exactly maxlen once it is exceeded by the slack, and record the newest
-- trimmed id: clients resuming before it get a gap event.
if maxlen > 0 then
  local len = redis.call('XLEN', KEYS[1])
  if len > maxlen + slack then
    local old = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', len - maxlen)
    redis.call('XTRIM', KEYS[1], 'MAXLEN', maxlen)
    redis.call('SET', KEYS[4], old[#old][1])
  end
end
return #written
"#;

/// How far past `maxlen` the stream may grow before it is trimmed back (1%), so the
/// trim runs once per that many events rather than on every batch.
pub fn trim_slack(maxlen: u64) -> u64 {
    (maxlen / 100).max(1)
}

/// Writes batches for one topic and key prefix.
pub struct Writer {
    script: redis::Script,
    keys: Keys,
    topic: String,
    maxlen: u64,
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

impl Writer {
    /// A writer for `topic` under `keys`.
    pub fn new(keys: Keys, topic: &str, maxlen: u64) -> Self {
        Self {
            script: redis::Script::new(WRITE_BATCH),
            keys,
            topic: topic.to_string(),
            maxlen,
        }
    }

    /// One attempt; returns how many events were new to the stream.
    pub async fn write_once(
        &self,
        conn: &mut ConnectionManager,
        batch: &Batch,
    ) -> redis::RedisResult<u64> {
        let mut inv = self.script.prepare_invoke();
        inv.key(self.keys.stream())
            .key(self.keys.offsets())
            .key(self.keys.channel())
            .key(self.keys.stream_trimmed())
            .arg(self.maxlen)
            .arg(trim_slack(self.maxlen))
            .arg(ENVELOPE_FIELD);
        for [field, offset, envelope] in batch.script_args(&self.topic) {
            inv.arg(field).arg(offset).arg(envelope);
        }
        inv.invoke_async(conn).await
    }

    /// Writes until it succeeds or `give_up_at` passes; calls `on_error` for every
    /// failed attempt. Returns `(written, latency of the successful attempt)`.
    pub async fn write(
        &self,
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
    fn backoff_doubles_and_caps() {
        let mut b = Backoff::default();
        let delays: Vec<u128> = (0..8).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    }
}
