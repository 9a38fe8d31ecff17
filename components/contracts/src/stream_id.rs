//! Redis stream ids (`<ms>-<seq>`), and the SSE event ids built from them
//! (`<ms>-<seq>.<epoch>`, see [`event_id`]): the `Last-Event-ID` a client resumes from;
//! and the `since=` time a client replays from.

use std::fmt;
use std::str::FromStr;

/// A Redis stream entry id. Ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId {
    /// Milliseconds since the epoch (the time Redis added the entry).
    pub ms: u64,
    /// Sequence number within that millisecond.
    pub seq: u64,
}

/// Why a stream id or a time did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PositionError {
    /// Not `<digits>-<digits>` within 64-bit range.
    #[error("not a stream id of the form <milliseconds>-<sequence>: {0:?}")]
    BadId(String),
    /// Neither epoch milliseconds nor an RFC 3339 time.
    #[error("not epoch milliseconds or an RFC 3339 time: {0:?}")]
    BadTime(String),
}

impl StreamId {
    /// The smallest id; reading after it reads the whole stream.
    pub const ZERO: StreamId = StreamId { ms: 0, seq: 0 };

    /// Creates an id.
    pub const fn new(ms: u64, seq: u64) -> Self {
        Self { ms, seq }
    }

    /// The id just before this one (reading after it returns this one first).
    pub fn predecessor(self) -> Self {
        match (self.seq, self.ms) {
            (0, 0) => Self::ZERO,
            (0, ms) => Self::new(ms - 1, u64::MAX),
            (seq, ms) => Self::new(ms, seq - 1),
        }
    }

    /// The position to read after so that the first entry returned is the first one
    /// added at or after `ms` (reading is exclusive of the given id).
    pub fn just_before_time(ms: u64) -> Self {
        match ms.checked_sub(1) {
            Some(prev) => Self::new(prev, u64::MAX),
            None => Self::ZERO,
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut digits = itoa::Buffer::new();
        f.write_str(digits.format(self.ms))?;
        f.write_str("-")?;
        f.write_str(digits.format(self.seq))
    }
}

impl FromStr for StreamId {
    type Err = PositionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || PositionError::BadId(s.chars().take(64).collect());
        let (ms, seq) = s.trim().split_once('-').ok_or_else(bad)?;
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return Err(bad());
        }
        Ok(Self {
            ms: ms.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

/// Separates a stream id from the epoch in an SSE event id.
pub const EPOCH_SEPARATOR: char = '.';

/// The SSE id of the entry `id` of the stream's `epoch`: `<ms>-<seq>.<epoch>`, or the
/// bare stream id while the stream has no epoch yet.
pub fn event_id(id: StreamId, epoch: Option<&str>) -> String {
    let mut out = String::with_capacity(48);
    push_event_id(&mut out, id, epoch);
    out
}

/// Appends [`event_id`] to `out`. A stream frames one per event it sends, so this
/// writes the digits directly (no formatting machinery, no allocation of its own).
pub fn push_event_id(out: &mut String, id: StreamId, epoch: Option<&str>) {
    let mut digits = itoa::Buffer::new();
    out.push_str(digits.format(id.ms));
    out.push('-');
    out.push_str(digits.format(id.seq));
    if let Some(e) = epoch {
        out.push(EPOCH_SEPARATOR);
        out.push_str(e);
    }
}

/// Whether `epoch` is one the sidecar could have made (1-32 of `0-9 a-z`).
pub fn valid_epoch(epoch: &str) -> bool {
    (1..=32).contains(&epoch.len())
        && epoch
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

/// Parses an SSE event id: a stream id, with the epoch it belongs to when it has one
/// (ids of earlier releases have none).
pub fn parse_event_id(s: &str) -> Result<(StreamId, Option<String>), PositionError> {
    let s = s.trim();
    match s.split_once(EPOCH_SEPARATOR) {
        Some((id, epoch)) if valid_epoch(epoch) => Ok((id.parse()?, Some(epoch.to_string()))),
        Some(_) => Err(PositionError::BadId(s.chars().take(64).collect())),
        None => Ok((s.parse()?, None)),
    }
}

/// Parses a `since=` value: epoch milliseconds (all digits) or an RFC 3339 time.
/// Returns milliseconds since the epoch.
pub fn parse_since(s: &str) -> Result<u64, PositionError> {
    let s = s.trim();
    let bad = || PositionError::BadTime(s.chars().take(64).collect());
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|_| bad());
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|_| bad())?;
    let ms = t.unix_timestamp_nanos() / 1_000_000;
    u64::try_from(ms).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_carry_the_epoch() {
        let id = StreamId::new(17, 3);
        assert_eq!(event_id(id, Some("a1b2")), "17-3.a1b2");
        assert_eq!(event_id(id, None), "17-3");
        assert_eq!(
            parse_event_id("17-3.a1b2").unwrap(),
            (id, Some("a1b2".into()))
        );
        assert_eq!(parse_event_id(" 17-3 ").unwrap(), (id, None));
        for bad in ["17-3.", "17-3.A", "17-3.a b", "x.a1", "17-3.a1.b2"] {
            assert!(parse_event_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_and_orders_ids() {
        let a: StreamId = "1730592000000-0".parse().unwrap();
        let b: StreamId = "1730592000000-12".parse().unwrap();
        let c: StreamId = "1730592000001-0".parse().unwrap();
        assert!(a < b && b < c);
        assert_eq!(b.to_string(), "1730592000000-12");
    }

    #[test]
    fn rejects_malformed_ids() {
        for bad in [
            "",
            "abc",
            "1",
            "1-",
            "-1",
            "1-2-3",
            "1-x",
            "99999999999999999999-0",
            "1 -2",
        ] {
            assert!(bad.parse::<StreamId>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn since_accepts_ms_and_rfc3339() {
        assert_eq!(parse_since("1730592000000").unwrap(), 1_730_592_000_000);
        assert_eq!(
            parse_since("2024-11-03T00:00:00Z").unwrap(),
            1_730_592_000_000
        );
        assert_eq!(
            parse_since("2024-11-03T01:00:00.5+01:00").unwrap(),
            1_730_592_000_500
        );
        assert!(parse_since("yesterday").is_err());
        assert!(parse_since("").is_err());
        assert!(parse_since("1960-01-01T00:00:00Z").is_err());
    }

    #[test]
    fn just_before_time_is_exclusive_start() {
        assert_eq!(StreamId::just_before_time(0), StreamId::ZERO);
        let p = StreamId::just_before_time(10);
        assert!(p < StreamId::new(10, 0) && p > StreamId::new(9, 5));
    }
}
