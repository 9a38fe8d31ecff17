//! Where an SSE stream starts, and whether history the client asked for is gone.
//!
//! Decided on the facts `XINFO STREAM` gives (the newest id ever added, the oldest
//! retained entry, `max-deleted-entry-id` for `XDEL`) plus the trim marker the
//! sidecar keeps (Redis does not move `max-deleted-entry-id` when it trims). A client
//! resuming after `id` has lost history exactly when an entry newer than `id` was
//! removed, that is when the newest removed id is above `id`.

use crate::envelope::gap_event;
use crate::reply::StreamInfo;
use crate::request::Resume;
use crate::stream_id::StreamId;

/// The resolved start: read after `after`; send `reset` or `gap` (an event's JSON)
/// first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// Exclusive start position for `XREAD`.
    pub after: StreamId,
    /// The `gap` event to send before anything else, if history was lost.
    pub gap: Option<String>,
    /// The `reset` event to send before anything else, if the client's position is
    /// from another epoch of the stream.
    pub reset: Option<String>,
}

/// The decision, on the stream's facts: a position from another epoch (Redis lost
/// the stream it belonged to) starts at the new epoch's oldest entry with a `reset`;
/// anything else as [`decide_within_epoch`] says.
pub fn decide(info: &StreamInfo, resume: Resume, epoch: Option<&str>) -> Start {
    match (epoch, info.epoch.as_deref(), resume) {
        (Some(asked), Some(now), Resume::After(id)) if asked != now => Start {
            after: before_oldest(info),
            gap: None,
            reset: Some(crate::envelope::reset_event(
                Some(&crate::stream_id::event_id(id, Some(asked))),
                now,
                "epoch_changed",
            )),
        },
        _ => decide_within_epoch(info, resume),
    }
}

/// The position just before the stream's oldest entry: reading after it reads the
/// whole stream, exactly, from Redis or from a host's copy of the stream that has
/// not yet heard of a trim (reading after `0-0` could get trimmed entries from it).
fn before_oldest(info: &StreamInfo) -> StreamId {
    info.first_entry_id
        .map_or(StreamId::ZERO, StreamId::predecessor)
}

/// The decision within one epoch of the stream.
fn decide_within_epoch(info: &StreamInfo, resume: Resume) -> Start {
    let oldest = info.first_entry_id.map(|id| id.to_string());
    let removed_through = info.max_deleted_entry_id.max(info.trimmed_through);
    let trimmed_after = |pos: StreamId| removed_through.is_some_and(|d| d > pos);
    // Past a gap the stream goes on from its oldest entry, not from the client's
    // older id ([`before_oldest`]).
    let past_gap = |pos: StreamId| {
        if trimmed_after(pos) {
            pos.max(before_oldest(info))
        } else {
            pos
        }
    };
    match resume {
        Resume::New => Start {
            after: info.last_generated_id,
            gap: None,
            reset: None,
        },
        Resume::After(id) if id > info.last_generated_id => Start {
            // The stream is behind the client: Redis lost its data or was reset.
            // Everything it holds now is new to the client.
            after: before_oldest(info),
            gap: Some(gap_event(&id.to_string(), oldest.as_deref(), "reset")),
            reset: None,
        },
        Resume::After(id) => Start {
            after: past_gap(id),
            gap: trimmed_after(id)
                .then(|| gap_event(&id.to_string(), oldest.as_deref(), "trimmed")),
            reset: None,
        },
        Resume::Tail(_) => Start {
            // The caller resolves the tail to the id before its oldest entry.
            after: info.last_generated_id,
            gap: None,
            reset: None,
        },
        Resume::Since(ms) => {
            // A time after the newest entry (a clock ahead, a typo) means "what comes
            // from now on": starting there would hand out a position the next
            // reconnect reads as "the stream is behind me" and replay everything.
            let after = StreamId::just_before_time(ms).min(info.last_generated_id);
            Start {
                after: past_gap(after),
                gap: trimmed_after(after)
                    .then(|| gap_event(&format!("{ms}"), oldest.as_deref(), "trimmed")),
                reset: None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(
        last: (u64, u64),
        first: Option<(u64, u64)>,
        deleted: Option<(u64, u64)>,
    ) -> StreamInfo {
        StreamInfo {
            length: first.map_or(0, |_| 10),
            last_generated_id: StreamId::new(last.0, last.1),
            max_deleted_entry_id: None,
            trimmed_through: deleted.map(|d| StreamId::new(d.0, d.1)),
            first_entry_id: first.map(|f| StreamId::new(f.0, f.1)),
            epoch: None,
        }
    }

    fn gap_reason(s: &Start) -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(s.gap.as_ref()?).unwrap();
        Some(v["reason"].as_str().unwrap().to_string())
    }

    #[test]
    fn a_position_from_another_epoch_is_reset_to_the_new_epochs_start() {
        let mut i = info((50, 2), Some((10, 0)), None);
        i.epoch = Some("new".into());
        let s = decide(&i, Resume::After(StreamId::new(60, 0)), Some("old"));
        assert_eq!((s.after, s.gap), (StreamId::new(9, u64::MAX), None));
        let r: serde_json::Value = serde_json::from_str(s.reset.as_ref().unwrap()).unwrap();
        assert_eq!(
            (r["epoch"].as_str(), r["requested"].as_str()),
            (Some("new"), Some("60-0.old"))
        );
        // The same epoch, or an id without one, is an ordinary resume.
        assert_eq!(
            decide(&i, Resume::After(StreamId::new(20, 0)), Some("new")).reset,
            None
        );
        assert_eq!(
            decide(&i, Resume::After(StreamId::new(20, 0)), None).reset,
            None
        );
    }

    #[test]
    fn a_since_in_the_future_starts_at_the_newest_entry() {
        let i = info((50, 2), Some((10, 0)), None);
        let s = decide(&i, Resume::Since(10_000), None);
        assert_eq!((s.after, s.gap), (StreamId::new(50, 2), None));
        let past = decide(&i, Resume::Since(20), None);
        assert_eq!(past.after, StreamId::just_before_time(20));
    }

    #[test]
    fn new_clients_start_at_the_newest_id() {
        let s = decide(
            &info((50, 2), Some((10, 0)), Some((9, 0))),
            Resume::New,
            None,
        );
        assert_eq!(s.after, StreamId::new(50, 2));
        assert_eq!(s.gap, None);
        let empty = decide(&StreamInfo::default(), Resume::New, None);
        assert_eq!(empty.after, StreamId::ZERO);
    }

    #[test]
    fn resume_within_history_has_no_gap() {
        let i = info((50, 0), Some((10, 0)), Some((9, 0)));
        // The client saw 9-0 itself: nothing after it was deleted.
        let s = decide(&i, Resume::After(StreamId::new(9, 0)), None);
        assert_eq!((s.after, s.gap), (StreamId::new(9, 0), None));
        let s = decide(&i, Resume::After(StreamId::new(20, 0)), None);
        assert_eq!(s.gap, None);
    }

    #[test]
    fn resume_before_trimmed_history_reports_a_gap() {
        let i = info((50, 0), Some((10, 0)), Some((9, 0)));
        let s = decide(&i, Resume::After(StreamId::new(5, 0)), None);
        // It goes on from the oldest entry left, whatever else still holds older.
        assert_eq!(s.after, StreamId::new(9, u64::MAX));
        assert_eq!(gap_reason(&s).as_deref(), Some("trimmed"));
        let s = decide(&i, Resume::Since(3), None);
        assert_eq!(s.after, StreamId::new(9, u64::MAX));
        assert_eq!(gap_reason(&s).as_deref(), Some("trimmed"));
        let s = decide(&i, Resume::Since(10), None);
        assert_eq!(s.gap, None);
    }

    #[test]
    fn xdel_deletions_count_too() {
        let mut i = info((50, 0), Some((10, 0)), None);
        i.max_deleted_entry_id = Some(StreamId::new(30, 0));
        let s = decide(&i, Resume::After(StreamId::new(20, 0)), None);
        assert_eq!(gap_reason(&s).as_deref(), Some("trimmed"));
        // What is left after the client's id is still read: 21-0 up to 50-0.
        assert_eq!(s.after, StreamId::new(20, 0));
    }

    #[test]
    fn a_stream_behind_the_client_was_reset() {
        let i = info((5, 0), Some((1, 0)), None);
        let s = decide(&i, Resume::After(StreamId::new(99, 0)), None);
        assert_eq!(s.after, StreamId::new(0, u64::MAX));
        assert_eq!(gap_reason(&s).as_deref(), Some("reset"));
    }
}
