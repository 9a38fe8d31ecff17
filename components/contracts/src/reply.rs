//! Reading the replies of Spin's outbound Redis `execute`.
//!
//! Spin flattens a nested reply into one list (arrays are spliced in, `nil` and `OK`
//! are dropped). Stream entries have exactly one field ([`crate::keys::ENVELOPE_FIELD`]),
//! so a flattened `XREAD` reply is `[stream, id, field, value, id, field, value, …]`.
//! These functions turn those lists back into entries, and read `XINFO STREAM`'s
//! leading key/value pairs.

use crate::keys::ENVELOPE_FIELD;
use crate::stream_id::StreamId;

/// One item of a flattened reply (mirrors Spin's `redis-result`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A nil (newer hosts may keep them; they are skipped).
    Nil,
    /// A status string such as `OK`.
    Status(String),
    /// An integer.
    Int(i64),
    /// A bulk string.
    Bytes(Vec<u8>),
}

impl Reply {
    /// The item as text, if it is a status or a UTF-8 bulk string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Reply::Status(s) => Some(s),
            Reply::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The item as an integer, if it is one or is a decimal string.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Reply::Int(i) => Some(*i),
            other => other.as_str()?.parse().ok(),
        }
    }
}

/// One stream entry: its id and the envelope JSON it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The entry id (the SSE `id:`).
    pub id: StreamId,
    /// The envelope JSON bytes.
    pub envelope: Vec<u8>,
}

/// A reply that does not have the shape crm-events writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected Redis reply shape: {0}")]
pub struct ShapeError(pub String);

/// Parses a flattened `XREAD … STREAMS <one stream> <id>` reply. Takes the reply by
/// value: each envelope moves into its entry (this runs once per batch per stream).
pub fn parse_xread(mut items: Vec<Reply>) -> Result<Vec<Entry>, ShapeError> {
    items.retain(|r| *r != Reply::Nil); // in place: no second list per batch
    let Some(triples) = items.len().checked_sub(1) else {
        return Ok(Vec::new()); // nothing at all
    };
    if triples % 3 != 0 {
        return Err(ShapeError(format!(
            "{triples} items is not a whole number of single-field entries"
        )));
    }
    let mut entries = Vec::with_capacity(triples / 3);
    let mut rest = items.into_iter().skip(1); // the stream's name
    while let (Some(id), Some(field), Some(value)) = (rest.next(), rest.next(), rest.next()) {
        entries.push(parse_entry(id, field, value)?);
    }
    Ok(entries)
}

/// Parses a flattened `XRANGE` reply (single-field entries, no stream name).
pub fn parse_xrange(mut items: Vec<Reply>) -> Result<Vec<Entry>, ShapeError> {
    items.retain(|r| *r != Reply::Nil);
    if items.len() % 3 != 0 {
        return Err(ShapeError(format!(
            "{} items is not a whole number of single-field entries",
            items.len()
        )));
    }
    let mut entries = Vec::with_capacity(items.len() / 3);
    let mut rest = items.into_iter();
    while let (Some(id), Some(field), Some(value)) = (rest.next(), rest.next(), rest.next()) {
        entries.push(parse_entry(id, field, value)?);
    }
    Ok(entries)
}

/// One `id, field, value` triple of a flattened `XREAD` reply.
fn parse_entry(id: Reply, field: Reply, value: Reply) -> Result<Entry, ShapeError> {
    let id = id
        .as_str()
        .and_then(|s| s.parse::<StreamId>().ok())
        .ok_or_else(|| ShapeError(format!("entry id {id:?}")))?;
    if field.as_str() != Some(ENVELOPE_FIELD) {
        return Err(ShapeError(format!("entry {id} field {field:?}")));
    }
    match value {
        Reply::Bytes(envelope) => Ok(Entry { id, envelope }),
        other => Err(ShapeError(format!("entry {id} value {other:?}"))),
    }
}

/// The facts `XINFO STREAM` gives that resuming needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamInfo {
    /// Number of entries.
    pub length: u64,
    /// The id of the newest entry ever added (`0-0` for a new stream).
    pub last_generated_id: StreamId,
    /// Every id at or below this one may have been removed by `XDEL` (Redis 7+).
    pub max_deleted_entry_id: Option<StreamId>,
    /// The newest id the sidecar trimmed (not part of `XINFO`: read from
    /// [`crate::keys::Keys::stream_trimmed`] by the caller).
    pub trimmed_through: Option<StreamId>,
    /// The oldest entry still in the stream (Redis 7+ `recorded-first-entry-id`).
    pub first_entry_id: Option<StreamId>,
    /// The stream's epoch (not part of `XINFO`: read from
    /// [`crate::keys::Keys::stream_epoch`] by the caller).
    pub epoch: Option<String>,
}

/// Reads a flattened `XINFO STREAM` reply. Only the scalar pairs that precede
/// `first-entry` are read; the nested entries after it are not needed.
pub fn parse_xinfo_stream(items: &[Reply]) -> Result<StreamInfo, ShapeError> {
    let mut info = StreamInfo::default();
    let mut it = items.iter().filter(|r| **r != Reply::Nil);
    while let Some(key) = it.next() {
        let Some(key) = key.as_str() else {
            return Err(ShapeError(format!("XINFO key {key:?}")));
        };
        if key == "first-entry" || key == "last-entry" {
            break;
        }
        let value = it
            .next()
            .ok_or_else(|| ShapeError(format!("XINFO {key} has no value")))?;
        let id = || value.as_str().and_then(|s| s.parse::<StreamId>().ok());
        match key {
            "length" => info.length = value.as_int().unwrap_or(0).max(0) as u64,
            "last-generated-id" => {
                info.last_generated_id = id().ok_or_else(|| ShapeError(format!("{value:?}")))?;
            }
            "max-deleted-entry-id" => info.max_deleted_entry_id = id(),
            "recorded-first-entry-id" => info.first_entry_id = id(),
            _ => {}
        }
    }
    if info.length == 0 {
        info.first_entry_id = None;
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Reply {
        Reply::Bytes(s.as_bytes().to_vec())
    }

    #[test]
    fn xread_flattened_reply() {
        let items = vec![
            b("crm-events:stream"),
            b("1-0"),
            b("e"),
            b("{\"a\":1}"),
            b("1-1"),
            b("e"),
            b("{}"),
        ];
        let entries = parse_xread(items).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].id, StreamId::new(1, 1));
        assert_eq!(entries[0].envelope, b"{\"a\":1}");
        assert!(parse_xread(vec![]).unwrap().is_empty());
        assert!(parse_xread(vec![Reply::Nil]).unwrap().is_empty());
    }

    #[test]
    fn envelope_that_looks_like_an_id_stays_a_value() {
        let items = vec![b("s"), b("1-0"), b("e"), b("2-0"), b("3-0"), b("e"), b("e")];
        let entries = parse_xread(items).unwrap();
        assert_eq!(entries[0].envelope, b"2-0");
        assert_eq!(entries[1].envelope, b"e");
    }

    #[test]
    fn foreign_entries_are_an_error_not_a_misread() {
        let items = vec![b("s"), b("1-0"), b("a"), b("1"), b("b")];
        assert!(parse_xread(items).is_err());
        let items = vec![b("s"), b("1-0"), b("other"), b("1")];
        assert!(parse_xread(items).is_err());
    }

    #[test]
    fn xinfo_stream_pairs() {
        let items = vec![
            b("length"),
            Reply::Int(2),
            b("radix-tree-keys"),
            Reply::Int(1),
            b("radix-tree-nodes"),
            Reply::Int(2),
            b("last-generated-id"),
            b("5-1"),
            b("max-deleted-entry-id"),
            b("3-0"),
            b("entries-added"),
            Reply::Int(9),
            b("recorded-first-entry-id"),
            b("4-0"),
            b("groups"),
            Reply::Int(0),
            b("first-entry"),
            b("4-0"),
            b("e"),
            b("{}"),
        ];
        let info = parse_xinfo_stream(&items).unwrap();
        assert_eq!(info.length, 2);
        assert_eq!(info.last_generated_id, StreamId::new(5, 1));
        assert_eq!(info.max_deleted_entry_id, Some(StreamId::new(3, 0)));
        assert_eq!(info.first_entry_id, Some(StreamId::new(4, 0)));
    }
}
