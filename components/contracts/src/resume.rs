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

/// The resolved start: read after `after`; send `gap` (an event's JSON) first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// Exclusive start position for `XREAD`.
    pub after: StreamId,
    /// The `gap` event to send before anything else, if history was lost.
    pub gap: Option<String>,
}

/// The decision itself, on the stream's facts.
pub fn decide(info: &StreamInfo, resume: Resume) -> Start {
    let oldest = info.first_entry_id.map(|id| id.to_string());
    let removed_through = info.max_deleted_entry_id.max(info.trimmed_through);
    let trimmed_after = |pos: StreamId| removed_through.is_some_and(|d| d > pos);
    match resume {
        Resume::New => Start {
            after: info.last_generated_id,
            gap: None,
        },
        Resume::After(id) if id > info.last_generated_id => Start {
            // The stream is behind the client: Redis lost its data or was reset.
            // Everything it holds now is new to the client.
            after: StreamId::ZERO,
            gap: Some(gap_event(&id.to_string(), oldest.as_deref(), "reset")),
        },
        Resume::After(id) => Start {
            after: id,
            gap: trimmed_after(id)
                .then(|| gap_event(&id.to_string(), oldest.as_deref(), "trimmed")),
        },
        Resume::Tail(_) => Start {
            // The caller resolves the tail to the id before its oldest entry.
            after: info.last_generated_id,
            gap: None,
        },
        Resume::Since(ms) => {
            // A time after the newest entry (a clock ahead, a typo) means "what comes
            // from now on": starting there would hand out a position the next
            // reconnect reads as "the stream is behind me" and replay everything.
            let after = StreamId::just_before_time(ms).min(info.last_generated_id);
            Start {
                after,
                gap: trimmed_after(after)
                    .then(|| gap_event(&format!("{ms}"), oldest.as_deref(), "trimmed")),
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
        }
    }

    fn gap_reason(s: &Start) -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(s.gap.as_ref()?).unwrap();
        Some(v["reason"].as_str().unwrap().to_string())
    }

    #[test]
    fn a_since_in_the_future_starts_at_the_newest_entry() {
        let i = info((50, 2), Some((10, 0)), None);
        let s = decide(&i, Resume::Since(10_000));
        assert_eq!((s.after, s.gap), (StreamId::new(50, 2), None));
        let past = decide(&i, Resume::Since(20));
        assert_eq!(past.after, StreamId::just_before_time(20));
    }

    #[test]
    fn new_clients_start_at_the_newest_id() {
        let s = decide(&info((50, 2), Some((10, 0)), Some((9, 0))), Resume::New);
        assert_eq!(s.after, StreamId::new(50, 2));
        assert_eq!(s.gap, None);
        let empty = decide(&StreamInfo::default(), Resume::New);
        assert_eq!(empty.after, StreamId::ZERO);
    }

    #[test]
    fn resume_within_history_has_no_gap() {
        let i = info((50, 0), Some((10, 0)), Some((9, 0)));
        // The client saw 9-0 itself: nothing after it was deleted.
        let s = decide(&i, Resume::After(StreamId::new(9, 0)));
        assert_eq!((s.after, s.gap), (StreamId::new(9, 0), None));
        let s = decide(&i, Resume::After(StreamId::new(20, 0)));
        assert_eq!(s.gap, None);
    }

    #[test]
    fn resume_before_trimmed_history_reports_a_gap() {
        let i = info((50, 0), Some((10, 0)), Some((9, 0)));
        let s = decide(&i, Resume::After(StreamId::new(5, 0)));
        assert_eq!(s.after, StreamId::new(5, 0));
        assert_eq!(gap_reason(&s).as_deref(), Some("trimmed"));
        let s = decide(&i, Resume::Since(3));
        assert_eq!(gap_reason(&s).as_deref(), Some("trimmed"));
        let s = decide(&i, Resume::Since(10));
        assert_eq!(s.gap, None);
    }

    #[test]
    fn xdel_deletions_count_too() {
        let mut i = info((50, 0), Some((10, 0)), None);
        i.max_deleted_entry_id = Some(StreamId::new(30, 0));
        let s = decide(&i, Resume::After(StreamId::new(20, 0)));
        assert_eq!(gap_reason(&s).as_deref(), Some("trimmed"));
    }

    #[test]
    fn a_stream_behind_the_client_was_reset() {
        let i = info((5, 0), Some((1, 0)), None);
        let s = decide(&i, Resume::After(StreamId::new(99, 0)));
        assert_eq!(s.after, StreamId::ZERO);
        assert_eq!(gap_reason(&s).as_deref(), Some("reset"));
    }
}
