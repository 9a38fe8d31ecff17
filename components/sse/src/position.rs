//! Reads the stream's facts and decides where a stream starts.
//!
//! One `EVAL` reads the trim marker, the epoch and `XINFO STREAM` together (a stream
//! that does not exist yet reads as empty), so no error reply has to be interpreted
//! and a new stream costs one round trip here.

use crm_events_contracts::keys::StreamKeys;
use crm_events_contracts::reply::{parse_xinfo_stream, Reply};
use crm_events_contracts::request::Resume;
use crm_events_contracts::resume::{decide, Start};
use crm_events_contracts::spin_glue::{Redis, RedisError};
use crm_events_contracts::stream_id::StreamId;

/// Returns `{trim marker or '', epoch, XINFO STREAM fields…}`; just the first two
/// when the stream does not exist (an empty string, not nil: Spin drops nils when it
/// flattens, and the positions must hold). A stream without an epoch yet gets one
/// here (from the server clock, `SET NX`), so every stream's ids carry one from its
/// first event, whoever comes first, a reader or the sidecar. KEYS: stream, trim
/// marker, epoch.
const STREAM_FACTS: &str = r#"
local trimmed = redis.call('GET', KEYS[2]) or ''
local epoch = redis.call('GET', KEYS[3])
if not epoch then
  local t = redis.call('TIME')
  redis.call('SET', KEYS[3], string.format('%08x%08x', tonumber(t[1]), tonumber(t[2])), 'NX')
  epoch = redis.call('GET', KEYS[3])
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {trimmed, epoch}
end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
table.insert(info, 1, epoch)
table.insert(info, 1, trimmed)
return info
"#;

/// Where a stream starts, as [`resolve`] found it.
#[derive(Debug)]
pub struct Resolved {
    /// The start (and any `gap` or `reset` to send first).
    pub start: Start,
    /// The stream's epoch.
    pub epoch: Option<String>,
    /// The newest id the stream had when it was asked.
    pub newest: StreamId,
}

/// Resolves the request's resume position (and the epoch it came from) against the
/// stream as it is now.
pub fn resolve(
    redis: &Redis,
    keys: &StreamKeys,
    resume: Resume,
    epoch: Option<&str>,
) -> Result<Resolved, RedisError> {
    let reply = redis.run(
        "EVAL",
        &[STREAM_FACTS, "3", &keys.stream, &keys.trimmed, &keys.epoch],
    )?;
    let (marker, now, info) = match reply.as_slice() {
        [marker, now, info @ ..] => (marker, now, info),
        _ => return Err(RedisError::protocol("stream facts", format!("{reply:?}"))),
    };
    let mut facts =
        parse_xinfo_stream(info).map_err(|e| RedisError::protocol("XINFO STREAM", e))?;
    let text = |r: &Reply| r.as_str().filter(|s| !s.is_empty()).map(str::to_string);
    facts.trimmed_through = text(marker).and_then(|s| s.parse().ok());
    facts.epoch = text(now);
    let mut start = decide(&facts, resume, epoch);
    if let Resume::Tail(n) = resume {
        if let Some(oldest) = nth_newest(redis, keys, n)? {
            start.after = oldest.predecessor();
        }
    }
    Ok(Resolved {
        start,
        epoch: facts.epoch,
        newest: facts.last_generated_id,
    })
}

/// The id of the `n`th newest entry (or the oldest, when there are fewer).
fn nth_newest(redis: &Redis, keys: &StreamKeys, n: u64) -> Result<Option<StreamId>, RedisError> {
    let reply = redis.run(
        "XREVRANGE",
        &[&keys.stream, "+", "-", "COUNT", &n.to_string()],
    )?;
    // Flattened single-field entries: id, field, envelope, id, field, envelope, …
    let last_id = reply.len().checked_sub(3).and_then(|i| reply.get(i));
    Ok(last_id.and_then(Reply::as_str).and_then(|s| s.parse().ok()))
}
