//! Reads the stream's facts (`XINFO STREAM`) and decides where a stream starts.

use crm_events_contracts::keys::Keys;
use crm_events_contracts::reply::{parse_xinfo_stream, StreamInfo};
use crm_events_contracts::request::Resume;
use crm_events_contracts::resume::{decide, Start};
use crm_events_contracts::spin_glue::{Redis, RedisError};

/// Resolves the request's resume position against the stream as it is now.
pub fn resolve(redis: &Redis, keys: &Keys, resume: Resume) -> Result<Start, RedisError> {
    let mut info = match redis.run("XINFO", &["STREAM", &keys.stream()]) {
        Ok(items) => parse_xinfo_stream(&items).map_err(|e| RedisError(e.to_string()))?,
        // A stream that does not exist yet is an empty one.
        Err(e) if e.0.contains("no such key") => StreamInfo::default(),
        Err(e) => return Err(e),
    };
    info.trimmed_through = redis
        .run("GET", &[&keys.stream_trimmed()])?
        .first()
        .and_then(|r| r.as_str()?.parse().ok());
    Ok(decide(&info, resume))
}
