//! SSE client leases: how `crm_events_sse_clients` counts open streams across
//! instances, and how `max_clients` and the per-subject and per-address limits are
//! enforced.
//!
//! A lease is a member of sorted sets scored by its expiry (Redis server time, ms):
//! the service-wide set, the subject's set and the client address's set. A live
//! stream renews it every keepalive; a crashed instance stops renewing, so its lease
//! expires and stops being counted without anyone cleaning up after it. The same
//! script counts the address's stream openings in a one-minute window.

use crm_events_contracts::config::SseConfig;
use crm_events_contracts::http::Refusal;
use crm_events_contracts::spin_glue::Redis;

/// Checks the per-address opening rate, drops expired leases, refuses when a limit is
/// reached, else adds the lease to all three sets. Returns `{id, 0}`, or `{code,
/// retry_ms}` with code -1 (service full), -2 (subject), -3 (address), -4 (rate).
/// KEYS: leases, lease-seq, subject leases, address leases, address connects.
/// ARGV: ttl ms, max clients, max per subject, max per address, max connects/minute.
const ACQUIRE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate = tonumber(ARGV[5])
if rate > 0 then
  local n = redis.call('INCR', KEYS[5])
  if n == 1 then redis.call('PEXPIRE', KEYS[5], 60000) end
  if n > rate then return {-4, redis.call('PTTL', KEYS[5])} end
end
local function full(key, max)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  return max > 0 and redis.call('ZCARD', key) >= max
end
if full(KEYS[1], tonumber(ARGV[2])) then return {-1, 5000} end
if full(KEYS[3], tonumber(ARGV[3])) then return {-2, 5000} end
if full(KEYS[4], tonumber(ARGV[4])) then return {-3, 5000} end
local id = redis.call('INCR', KEYS[2])
local expiry = now + tonumber(ARGV[1])
for _, key in ipairs({KEYS[1], KEYS[3], KEYS[4]}) do
  redis.call('ZADD', key, expiry, id)
end
redis.call('PEXPIRE', KEYS[3], ARGV[1])
redis.call('PEXPIRE', KEYS[4], ARGV[1])
return {id, 0}
"#;

/// Pushes a lease's expiry forward in its three sets.
/// KEYS: leases, subject leases, address leases. ARGV: ttl ms, lease id.
const RENEW: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + tonumber(ARGV[1]), ARGV[2])
end
redis.call('PEXPIRE', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[3], ARGV[1])
return 1
"#;

/// Removes a lease from its three sets. KEYS: leases, subject leases, address
/// leases. ARGV: lease id.
const RELEASE: &str = r#"
for _, key in ipairs(KEYS) do
  redis.call('ZREM', key, ARGV[1])
end
return 1
"#;

/// Who holds a lease: the token's subject and the client's address.
pub struct Owner<'a> {
    /// `sub`; `None` with auth off (no per-subject limit then).
    pub subject: Option<&'a str>,
    /// The client address.
    pub address: &'a str,
}

/// A held lease.
pub struct Lease {
    id: String,
    /// The service-wide, subject and address sets.
    sets: [String; 3],
    ttl_ms: u64,
}

impl Lease {
    /// Takes a lease, or the refusal (`503` when the service is full, `429` past a
    /// per-subject or per-address limit).
    pub fn acquire(redis: &Redis, config: &SseConfig, owner: &Owner) -> Result<Self, Refusal> {
        let keys = &config.common.keys;
        let limits = &config.limits;
        // Three missed renewals, and never under 30 s, before a lease counts as dead.
        let ttl_ms = (config.keepalive_seconds * 3 * 1000).max(30_000);
        let sets = [
            keys.sse_leases(),
            keys.sse_subject_leases(owner.subject.unwrap_or("")),
            keys.sse_address_leases(owner.address),
        ];
        let per_subject = owner.subject.map_or(0, |_| limits.per_subject);
        let reply = redis
            .run(
                "EVAL",
                &[
                    ACQUIRE,
                    "5",
                    &sets[0],
                    &keys.sse_lease_seq(),
                    &sets[1],
                    &sets[2],
                    &keys.sse_address_connects(owner.address),
                    &ttl_ms.to_string(),
                    &config.max_clients.to_string(),
                    &per_subject.to_string(),
                    &limits.per_address.to_string(),
                    &limits.connects_per_minute.to_string(),
                ],
            )
            .map_err(Refusal::redis_unavailable)?;
        let int = |i: usize| reply.get(i).and_then(|r| r.as_int());
        let (Some(code), Some(retry_ms)) = (int(0), int(1)) else {
            return Err(Refusal::redis_unavailable(format!(
                "lease script answered {reply:?}"
            )));
        };
        if code < 0 {
            return Err(refusal(code, retry_ms, config));
        }
        Ok(Self {
            id: code.to_string(),
            sets,
            ttl_ms,
        })
    }

    /// Renews the lease (best effort: a failed renewal is retried at the next one).
    pub fn renew(&self, redis: &Redis) {
        let ttl = self.ttl_ms.to_string();
        let _ = redis.run(
            "EVAL",
            &[
                RENEW,
                "3",
                &self.sets[0],
                &self.sets[1],
                &self.sets[2],
                &ttl,
                &self.id,
            ],
        );
    }

    /// Gives the lease back. If Redis is unreachable it simply expires.
    pub fn release(self, redis: &Redis) {
        let [all, subject, address] = &self.sets;
        let _ = redis.run("EVAL", &[RELEASE, "3", all, subject, address, &self.id]);
    }
}

/// The answer to a refused lease.
fn refusal(code: i64, retry_ms: i64, config: &SseConfig) -> Refusal {
    let retry = (retry_ms.max(1000) as u64).div_ceil(1000);
    let limits = &config.limits;
    let (status, error, message, limit) = match code {
        -1 => (
            503,
            "too_many_clients",
            "this service is at its limit of concurrent streams",
            config.max_clients,
        ),
        -2 => (
            429,
            "too_many_streams",
            "this subject has its limit of concurrent streams open",
            limits.per_subject,
        ),
        -3 => (
            429,
            "too_many_streams",
            "this address has its limit of concurrent streams open",
            limits.per_address,
        ),
        _ => (
            429,
            "rate_limited",
            "too many stream openings from this address in the last minute",
            limits.connects_per_minute,
        ),
    };
    let field = if code == -1 { "max_clients" } else { "limit" };
    Refusal::new(status, error, message)
        .with(field, limit)
        .retry_after(retry)
}
