//! SSE client leases: how `crm_events_sse_clients` counts open streams across
//! instances, and how `max_clients` is enforced.
//!
//! A lease is a member of a sorted set scored by its expiry (Redis server time, ms).
//! A live stream renews it every keepalive; a crashed instance stops renewing, so its
//! lease expires and stops being counted without anyone cleaning up after it.

use crm_events_contracts::config::SseConfig;
use crm_events_contracts::spin_glue::{Redis, RedisError};

/// Drops expired leases, refuses when full, else adds one. Returns the lease id, or
/// -1 when `max_clients` leases are live. KEYS: leases, lease-seq. ARGV: ttl ms, max.
const ACQUIRE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local max = tonumber(ARGV[2])
if max > 0 and redis.call('ZCARD', KEYS[1]) >= max then
  return -1
end
local id = redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), id)
return id
"#;

/// Pushes a lease's expiry forward. KEYS: leases. ARGV: ttl ms, lease id.
const RENEW: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[2])
return 1
"#;

/// A held lease.
pub struct Lease {
    id: String,
    key: String,
    ttl_ms: u64,
}

impl Lease {
    /// Takes a lease, or `Ok(None)` when the service is at `max_clients`.
    pub fn acquire(redis: &Redis, config: &SseConfig) -> Result<Option<Self>, RedisError> {
        let keys = &config.common.keys;
        // Three missed renewals, and never under 30 s, before a lease counts as dead.
        let ttl_ms = (config.keepalive_seconds * 3 * 1000).max(30_000);
        let id = redis.run_int(
            "EVAL",
            &[
                ACQUIRE,
                "2",
                &keys.sse_leases(),
                &keys.sse_lease_seq(),
                &ttl_ms.to_string(),
                &config.max_clients.to_string(),
            ],
        )?;
        Ok((id >= 0).then(|| Self {
            id: id.to_string(),
            key: keys.sse_leases(),
            ttl_ms,
        }))
    }

    /// Renews the lease (best effort: a failed renewal is retried at the next one).
    pub fn renew(&self, redis: &Redis) {
        let _ = redis.run(
            "EVAL",
            &[RENEW, "1", &self.key, &self.ttl_ms.to_string(), &self.id],
        );
    }

    /// Gives the lease back. If Redis is unreachable it simply expires.
    pub fn release(self, redis: &Redis) {
        let _ = redis.run("ZREM", &[&self.key, &self.id]);
    }
}
