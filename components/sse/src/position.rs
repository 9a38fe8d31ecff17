//! Reads the stream's facts and decides where a stream starts.
//!
//! One `EVAL` reads the trim marker and `XINFO STREAM` together (a stream that does
//! not exist yet reads as empty), so no error reply has to be interpreted and a new
//! stream costs one round trip here.

use crm_events_contracts::keys::Keys;
use crm_events_contracts::reply::{parse_xinfo_stream, Reply};
use crm_events_contracts::request::Resume;
use crm_events_contracts::resume::{decide, Start};
use crm_events_contracts::spin_glue::{Redis, RedisError};
use crm_events_contracts::stream_id::StreamId;

/// Returns `{trim marker or false, XINFO STREAM fields…}`; just the marker when the
/// stream does not exist. KEYS: stream, trim marker.
const STREAM_FACTS: &str = r#"
local trimmed = redis.call('GET', KEYS[2])
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {trimmed}
end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
table.insert(info, 1, trimmed)
return info
"#;

/// Resolves the request's resume position against the stream as it is now.
pub fn resolve(redis: &Redis, keys: &Keys, resume: Resume) -> Result<Start, RedisError> {
    let reply = redis.run(
        "EVAL",
        &[STREAM_FACTS, "2", &keys.stream(), &keys.stream_trimmed()],
    )?;
    // Spin drops nils when it flattens: a missing marker leaves no item at all, and
    // `XINFO` fields always start with the text `length`.
    let (marker, info) = match reply.first() {
        Some(first) if first.as_str() != Some("length") => (Some(first), &reply[1..]),
        _ => (None, &reply[..]),
    };
    let mut facts =
        parse_xinfo_stream(info).map_err(|e| RedisError::protocol("XINFO STREAM", e))?;
    facts.trimmed_through = marker.and_then(Reply::as_str).and_then(|s| s.parse().ok());
    let mut start = decide(&facts, resume);
    if let Resume::Tail(n) = resume {
        if let Some(oldest) = nth_newest(redis, keys, n)? {
            start.after = oldest.predecessor();
        }
    }
    Ok(start)
}

/// The id of the `n`th newest entry (or the oldest, when there are fewer).
fn nth_newest(redis: &Redis, keys: &Keys, n: u64) -> Result<Option<StreamId>, RedisError> {
    let reply = redis.run(
        "XREVRANGE",
        &[&keys.stream(), "+", "-", "COUNT", &n.to_string()],
    )?;
    // Flattened single-field entries: id, field, envelope, id, field, envelope, …
    let last_id = reply.len().checked_sub(3).and_then(|i| reply.get(i));
    Ok(last_id.and_then(Reply::as_str).and_then(|s| s.parse().ok()))
}
