//! Moving a client from the all-tenants stream onto its tenant's stream.
//!
//! Before tenant streams, every subscriber read the all-tenants stream, so a client
//! of an earlier release resumes with an id of that stream. Its epoch says so: it is
//! the all-tenants stream's, not the shard's. Such a position is moved exactly when
//! the client provably missed nothing of its tenant — the all-tenants stream holds
//! every event the tenant stream held when it was read (its watermarks are at or
//! past the shard's), nothing after the position was trimmed, and no event of the
//! tenant follows the position — and the stream then starts at the tenant stream's
//! newest entry. Otherwise the client gets a `reset` (`stream_changed`) and the
//! tenant stream from its oldest entry: never a silent skip.

use crate::position::Resolved;
use crm_events_contracts::envelope::stream_changed_event;
use crm_events_contracts::keys::Keys;
use crm_events_contracts::reply::{parse_xrange, Reply};
use crm_events_contracts::request::{Filters, Resume};
use crm_events_contracts::resume::Start;
use crm_events_contracts::spin_glue::{Redis, RedisError};
use crm_events_contracts::stream_id::{event_id, StreamId};
use std::collections::HashMap;

/// How many all-tenants entries after the position are looked through at most; a
/// client further behind is reset.
const SCAN_LIMIT: usize = 2_000;

/// A position that may be moving over.
pub struct Move<'a> {
    /// The Redis of the all-tenants stream.
    pub control: &'a Redis,
    /// The Redis of the tenant's stream.
    pub shard: &'a Redis,
    /// The key names.
    pub keys: &'a Keys,
    /// The tenant whose stream is read (`None`: the all-tenants stream).
    pub tenant: Option<&'a str>,
}

impl Move<'_> {
    /// The start for `resume` (of epoch `asked`), given what the tenant stream
    /// resolved it to.
    pub fn resolve(
        &self,
        resume: Resume,
        asked: Option<&str>,
        resolved: Resolved,
    ) -> Result<Resolved, RedisError> {
        let (Some(tenant), Some(asked), Resume::After(after)) = (self.tenant, asked, resume) else {
            return Ok(resolved);
        };
        if resolved.start.reset.is_none() || !self.is_all_tenants_epoch(asked)? {
            return Ok(resolved); // its own stream's, or an old epoch: reset as it is
        }
        let start = if self.missed_nothing(tenant, after)? {
            Start {
                after: resolved.newest,
                gap: None,
                reset: None,
            }
        } else {
            let epoch = resolved.epoch.as_deref().unwrap_or_default();
            Start {
                // The reset's own start: the tenant stream's oldest entry.
                after: resolved.start.after,
                gap: None,
                reset: Some(stream_changed_event(&event_id(after, Some(asked)), epoch)),
            }
        };
        Ok(Resolved { start, ..resolved })
    }

    fn is_all_tenants_epoch(&self, asked: &str) -> Result<bool, RedisError> {
        let reply = self.control.run("GET", &[&self.keys.stream_epoch()])?;
        Ok(reply.first().and_then(Reply::as_str) == Some(asked))
    }

    /// Whether a client at `after` in the all-tenants stream has seen every event of
    /// `tenant` the tenant stream held when it was resolved.
    fn missed_nothing(&self, tenant: &str, after: StreamId) -> Result<bool, RedisError> {
        let shard_marks = watermarks(self.shard, &self.keys.tenants_offsets())?;
        let all_marks = watermarks(self.control, &self.keys.offsets())?;
        let behind = shard_marks
            .iter()
            .any(|(field, mark)| all_marks.get(field).is_none_or(|m| m < mark));
        if behind {
            return Ok(false);
        }
        let trimmed = self.control.run("GET", &[&self.keys.stream_trimmed()])?;
        let trimmed = trimmed.first().and_then(Reply::as_str);
        if trimmed
            .and_then(|t| t.parse::<StreamId>().ok())
            .is_some_and(|t| t > after)
        {
            return Ok(false);
        }
        let from = format!("({after}");
        let count = SCAN_LIMIT.to_string();
        let reply = self.control.run(
            "XRANGE",
            &[&self.keys.stream(), &from, "+", "COUNT", &count],
        )?;
        let entries = parse_xrange(reply).map_err(|e| RedisError::protocol("XRANGE", e))?;
        let theirs = Filters {
            tenants: vec![tenant.to_string()],
            types: Vec::new(),
        };
        Ok(entries.len() < SCAN_LIMIT && !entries.iter().any(|e| theirs.matches(&e.envelope)))
    }
}

/// A watermark hash (`topic/partition -> offset`).
fn watermarks(redis: &Redis, key: &str) -> Result<HashMap<String, i64>, RedisError> {
    let reply = redis.run("HGETALL", &[key])?;
    Ok(reply
        .chunks(2)
        .filter_map(|pair| match pair {
            [f, v] => Some((f.as_str()?.to_string(), v.as_str()?.parse().ok()?)),
            _ => None,
        })
        .collect())
}
