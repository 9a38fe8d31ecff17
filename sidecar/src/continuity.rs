//! Whether the stream in Redis is still the one the sidecar wrote: its epoch, and
//! finding out that Redis lost data.
//!
//! Redis may come back with less than it had: restarted without persistence,
//! `FLUSHALL`, a failover to a replica that missed writes, an append-only file that
//! lost its last second. The sidecar knows the last offset it wrote per partition; a
//! watermark below it (or gone, with the epoch key) proves the stream lost events.
//! Then the sidecar starts a new **epoch** (a random id in [`Keys::stream_epoch`],
//! and a marker entry every open stream turns into a `reset` event), and rewinds the
//! consumer to the oldest offset it can prove missing: the watermark + 1 where one
//! survived (nothing the stream still has is written twice), else the last
//! `STREAM_MAXLEN` offsets (all the stream can have held).
//!
//! [`Keys::stream_epoch`]: crm_events_contracts::keys::Keys::stream_epoch

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Why the sidecar started a new epoch (the marker's and the `reset` event's `reason`).
pub mod reason {
    /// The epoch key is gone: Redis was flushed or restarted empty.
    pub const FLUSHED: &str = "redis_flushed";
    /// A watermark is behind what the sidecar wrote: Redis came back with less.
    pub const BEHIND: &str = "redis_behind";
    /// At assignment a partition had no watermark but a committed offset: the stream
    /// it was written to is gone.
    pub const MISSING_AT_START: &str = "redis_missing_at_start";
}

/// What the writer's next transaction must do about the epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The stream is the one written before.
    Intact,
    /// No epoch yet and nothing proves a loss: create one with the batch.
    Create,
    /// Redis lost data: start a new epoch, rewind the partitions to these offsets.
    Lost {
        /// Why (one of [`reason`]).
        reason: &'static str,
        /// Partition -> next offset to read.
        rewind: BTreeMap<i32, i64>,
    },
}

/// What the writer knows of the stream it writes.
#[derive(Debug)]
pub struct Continuity {
    /// The epoch it last saw or made.
    pub epoch: Option<String>,
    /// The last offset it wrote (or knows the stream holds) per partition.
    written: BTreeMap<i32, i64>,
    maxlen: u64,
    /// Set at assignment when a partition's stream is proven gone.
    lost_at_start: Arc<AtomicBool>,
}

impl Continuity {
    /// For a stream kept at `maxlen` entries (0: everything); `lost_at_start` is the
    /// flag the consumer's rebalance sets.
    pub fn new(maxlen: u64, lost_at_start: Arc<AtomicBool>) -> Self {
        Self {
            epoch: None,
            written: BTreeMap::new(),
            maxlen,
            lost_at_start,
        }
    }

    /// The partitions whose watermarks must be read to judge.
    pub fn partitions(&self) -> impl Iterator<Item = i32> + '_ {
        self.written.keys().copied()
    }

    /// Judges what Redis holds now: its epoch and the watermarks (-1: none).
    pub fn judge(&mut self, epoch: Option<&str>, marks: &BTreeMap<i32, i64>) -> Verdict {
        if self.lost_at_start.swap(false, Ordering::Relaxed) {
            return self.lost(reason::MISSING_AT_START, marks);
        }
        match (self.epoch.as_deref(), epoch) {
            (Some(_), None) => return self.lost(reason::FLUSHED, marks),
            (None, None) => return Verdict::Create,
            // Another sidecar made or renewed it (or this one just started): adopt.
            (mine, Some(now)) if mine != Some(now) => self.epoch = Some(now.to_string()),
            _ => {}
        }
        let behind = self
            .written
            .iter()
            .any(|(p, w)| marks.get(p).is_some_and(|m| m < w));
        if behind {
            return self.lost(reason::BEHIND, marks);
        }
        Verdict::Intact
    }

    /// The rewind of a loss: the watermark + 1 where one survived, else as far back
    /// as the stream reaches (`maxlen` offsets before the last one written).
    fn lost(&self, reason: &'static str, marks: &BTreeMap<i32, i64>) -> Verdict {
        let rewind = self
            .written
            .iter()
            .map(|(p, w)| {
                let from = match marks.get(p) {
                    Some(m) if *m >= 0 => (*m).min(*w) + 1,
                    _ if self.maxlen == 0 => 0,
                    _ => (w + 1 - self.maxlen as i64).max(0),
                };
                (*p, from)
            })
            .collect();
        Verdict::Lost { reason, rewind }
    }

    /// Records the new epoch of a loss and where each partition starts again.
    pub fn renewed(&mut self, epoch: String, rewind: &BTreeMap<i32, i64>) {
        self.epoch = Some(epoch);
        for (p, from) in rewind {
            self.written.insert(*p, from - 1);
        }
    }

    /// Records an epoch this writer created.
    pub fn created(&mut self, epoch: String) {
        self.epoch = Some(epoch);
    }

    /// Records the offsets a batch wrote (or found already written).
    pub fn wrote(&mut self, last: impl IntoIterator<Item = (i32, i64)>) {
        for (p, o) in last {
            let w = self.written.entry(p).or_insert(o);
            *w = (*w).max(o);
        }
    }
}

/// A new random epoch: 16 hex characters.
pub fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn continuity(maxlen: u64) -> Continuity {
        Continuity::new(maxlen, Arc::default())
    }

    #[test]
    fn a_fresh_stream_gets_an_epoch_and_a_known_one_is_adopted() {
        let mut c = continuity(100);
        assert_eq!(c.judge(None, &BTreeMap::new()), Verdict::Create);
        assert_eq!(c.judge(Some("e1"), &BTreeMap::new()), Verdict::Intact);
        assert_eq!(c.epoch.as_deref(), Some("e1"));
    }

    #[test]
    fn a_flushed_redis_rewinds_as_far_as_the_stream_reached() {
        let mut c = continuity(100);
        c.created("e1".into());
        c.wrote([(0, 499), (1, 30)]);
        let Verdict::Lost { reason, rewind } = c.judge(None, &BTreeMap::new()) else {
            panic!("a loss")
        };
        assert_eq!(reason, reason::FLUSHED);
        assert_eq!(rewind, BTreeMap::from([(0, 400), (1, 0)]));
        c.renewed("e2".into(), &rewind);
        assert_eq!(
            c.judge(Some("e2"), &BTreeMap::from([(0, 399), (1, -1)])),
            Verdict::Intact
        );
    }

    #[test]
    fn a_watermark_behind_rewinds_to_just_after_it() {
        let mut c = continuity(100);
        c.created("e1".into());
        c.wrote([(0, 500), (1, 40)]);
        let marks = BTreeMap::from([(0, 450), (1, 40)]);
        let v = c.judge(Some("e1"), &marks);
        assert_eq!(
            v,
            Verdict::Lost {
                reason: reason::BEHIND,
                rewind: BTreeMap::from([(0, 451), (1, 41)])
            }
        );
        // Another sidecar ahead of us on a partition is no loss.
        let mut c = continuity(100);
        c.created("e1".into());
        c.wrote([(2, 10)]);
        assert_eq!(
            c.judge(Some("e1"), &BTreeMap::from([(2, 90)])),
            Verdict::Intact
        );
    }

    #[test]
    fn a_loss_found_at_assignment_renews_the_epoch_once() {
        let flag = Arc::new(AtomicBool::new(true));
        let mut c = Continuity::new(100, flag.clone());
        c.created("e1".into());
        assert!(matches!(
            c.judge(Some("e1"), &BTreeMap::new()),
            Verdict::Lost { .. }
        ));
        assert!(!flag.load(Ordering::Relaxed));
        assert_eq!(c.judge(Some("e1"), &BTreeMap::new()), Verdict::Intact);
        assert_eq!(new_epoch().len(), 16);
    }
}
