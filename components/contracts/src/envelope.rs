//! The envelope: the JSON object each SSE `data:` line carries.
//!
//! ```json
//! {"kind":"domain_event","topic":"aetherlink.events","partition":0,"offset":1234,
//!  "timestamp":1730592000000,"key":"JobCreated","value":{…}}
//! ```
//!
//! `value` is the Kafka value parsed as JSON when it is JSON. Anything else is still
//! delivered, never dropped, and says what it is in `value_encoding`:
//! `"text"` (UTF-8 that is not JSON, as a string), `"base64"` (binary), `"oversize"`
//! (larger than the configured maximum: `value` is null and `value_size` gives the size)
//! or `"none"` (a Kafka tombstone). JSON values carry no `value_encoding`, so the
//! envelope is byte-for-byte what earlier releases sent for them.
//!
//! Each envelope comes in two cuts ([`Audience`]): the operator's, above, in the
//! all-tenants stream; and the tenant's, in its tenant's stream, without what counts
//! every tenant's events (`partition`, `offset` and the `outbox-id` header):
//!
//! ```json
//! {"kind":"domain_event","topic":"aetherlink.events","timestamp":1730592000000,
//!  "key":"JobCreated","value":{…}}
//! ```

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `kind` of a relayed Kafka record.
pub const KIND_DOMAIN_EVENT: &str = "domain_event";
/// `kind` of the first event of every SSE stream.
pub const KIND_CONNECTED: &str = "connected";
/// `kind` of the event that reports history lost before the requested position.
pub const KIND_GAP: &str = "gap";
/// `kind` (and SSE event name) of the event that tells a client the stream was
/// recreated (Redis lost its data): what it saw may come again, under new ids.
pub const KIND_RESET: &str = "reset";
/// `kind` of the marker entry the sidecar writes first into a new epoch of the stream.
pub const KIND_EPOCH: &str = "epoch";

/// How a non-JSON value was represented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueEncoding {
    /// UTF-8 text that is not JSON, as a JSON string.
    Text,
    /// Arbitrary bytes, standard base64.
    Base64,
    /// Larger than the maximum: not included, see `value_size`.
    Oversize,
    /// No value at all (a tombstone).
    None,
}

/// One Kafka record as relayed to clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Always [`KIND_DOMAIN_EVENT`].
    pub kind: String,
    /// The Kafka topic.
    pub topic: String,
    /// The Kafka partition (operators only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    /// The Kafka offset within the partition (operators only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
    /// The Kafka timestamp in ms since the epoch, when the record has one.
    pub timestamp: Option<i64>,
    /// The record key: a string when it is UTF-8, `{"base64": …}` otherwise, or null.
    pub key: Value,
    /// The value, see the module documentation.
    pub value: Value,
    /// Present when `value` is not the record's JSON value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_encoding: Option<ValueEncoding>,
    /// The value's size in bytes, given when it was too large to include.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_size: Option<usize>,
    /// Record headers (name -> UTF-8 string, or `{"base64": …}`), when there are any.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub headers: Map<String, Value>,
}

/// Whom an envelope is cut for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// The all-tenants stream: everything, Kafka coordinates and all.
    Operator,
    /// A tenant's stream: nothing whose value depends on other tenants' events (no
    /// partition, offset or outbox id, which count every tenant's events).
    Tenant,
}

impl Audience {
    /// Whether a record header reaches this audience.
    fn keeps_header(self, name: &str) -> bool {
        self == Audience::Operator || name != crate::outbox::OUTBOX_ID_HEADER
    }
}

/// The raw parts of a Kafka record, as the consumer sees them.
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Timestamp in ms, if any.
    pub timestamp: Option<i64>,
    /// Key bytes, if any.
    pub key: Option<&'a [u8]>,
    /// Value bytes, if any (`None` is a tombstone).
    pub value: Option<&'a [u8]>,
}

impl Envelope {
    /// Builds the envelope of a record. `max_value_bytes` of 0 means no limit.
    pub fn from_record<'h>(
        record: RawRecord<'_>,
        headers: impl IntoIterator<Item = (&'h str, Option<&'h [u8]>)>,
        max_value_bytes: usize,
        audience: Audience,
    ) -> Self {
        let (value, value_encoding, value_size) = decode_value(record.value, max_value_bytes);
        let headers = headers_json(headers, audience);
        let operator = audience == Audience::Operator;
        Self {
            kind: KIND_DOMAIN_EVENT.to_string(),
            topic: record.topic.to_string(),
            partition: operator.then_some(record.partition),
            offset: operator.then_some(record.offset),
            timestamp: record.timestamp,
            key: record.key.map_or(Value::Null, bytes_as_json),
            value,
            value_encoding,
            value_size,
            headers,
        }
    }

    /// The compact, single-line JSON text of the envelope.
    pub fn to_json(&self) -> String {
        // Serialising a struct of strings, numbers and `Value`s cannot fail.
        serde_json::to_string(self).expect("envelope serialises")
    }
}

/// The envelope JSON of a record, as [`Envelope::from_record`] then
/// [`Envelope::to_json`] would give it, built without a JSON tree: a compact JSON
/// value (no CR or LF) is validated and copied as it is, headers and all. This is the
/// sidecar's hot path (outbox records carry a header each); a unit test holds the two
/// ways to the same output.
pub fn encode_record<'h>(
    record: RawRecord<'_>,
    headers: impl IntoIterator<Item = (&'h str, Option<&'h [u8]>)>,
    max_value_bytes: usize,
    audience: Audience,
) -> String {
    #[derive(Serialize)]
    struct Out<'a> {
        kind: &'static str,
        topic: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        partition: Option<i32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<i64>,
        timestamp: Option<i64>,
        key: Value,
        value: &'a serde_json::value::RawValue,
        #[serde(skip_serializing_if = "Map::is_empty")]
        headers: Map<String, Value>,
    }
    let raw = record.value.and_then(|bytes| {
        let fits = max_value_bytes == 0 || bytes.len() <= max_value_bytes;
        let single_line = !bytes.iter().any(|b| *b == b'\n' || *b == b'\r');
        (fits && single_line)
            .then(|| serde_json::from_slice::<&serde_json::value::RawValue>(trim_ascii(bytes)).ok())
            .flatten()
            .filter(|raw| numbers_in_range(raw.get()))
    });
    let operator = audience == Audience::Operator;
    match raw {
        Some(value) => serde_json::to_string(&Out {
            kind: KIND_DOMAIN_EVENT,
            topic: record.topic,
            partition: operator.then_some(record.partition),
            offset: operator.then_some(record.offset),
            timestamp: record.timestamp,
            key: record.key.map_or(Value::Null, bytes_as_json),
            value,
            headers: headers_json(headers, audience),
        })
        .expect("envelope serialises"),
        None => Envelope::from_record(record, headers, max_value_bytes, audience).to_json(),
    }
}

/// Record headers as the envelope's `headers` object, those the audience may see.
fn headers_json<'h>(
    headers: impl IntoIterator<Item = (&'h str, Option<&'h [u8]>)>,
    audience: Audience,
) -> Map<String, Value> {
    headers
        .into_iter()
        .filter(|(name, _)| audience.keeps_header(name))
        .map(|(name, bytes)| (name.to_string(), bytes.map_or(Value::Null, bytes_as_json)))
        .collect()
}

/// Whether every number in `json` (valid JSON text) reads as a finite number, as
/// [`decode_value`] requires: `RawValue` checks the grammar only, and `1e400` is
/// grammatical but not a number a parser can hold (serde_json refuses it, a browser
/// reads `Infinity`). Only a number with an exponent or of more than 300 digits can
/// be out of range, so the full parse runs only for those (rare) values.
fn numbers_in_range(json: &str) -> bool {
    let bytes = json.as_bytes();
    let (mut at, mut digits) = (0, 0usize);
    while let Some(&b) = bytes.get(at) {
        match b {
            // Strings are most of a value: skip each with memchr, escapes and all.
            b'"' => {
                at = match string_end(bytes, at + 1) {
                    Some(end) => end,
                    None => return true, // not JSON: RawValue would have refused it
                };
                digits = 0;
                continue;
            }
            b'e' | b'E' => return serde_json::from_str::<Value>(json).is_ok(),
            b'0'..=b'9' => digits += 1,
            _ => digits = 0,
        }
        if digits > 300 {
            return serde_json::from_str::<Value>(json).is_ok();
        }
        at += 1;
    }
    true
}

/// The index just past the closing quote of the string whose contents start at
/// `from`.
fn string_end(bytes: &[u8], mut from: usize) -> Option<usize> {
    loop {
        let k = memchr::memchr2(b'"', b'\\', bytes.get(from..)?)?;
        if bytes[from + k] == b'"' {
            return Some(from + k + 1);
        }
        from += k + 2; // a backslash and the character it escapes
    }
}

fn trim_ascii(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &bytes[start..end]
}

/// Decodes a Kafka value into `(value, encoding, size)`; see the module docs.
pub fn decode_value(
    bytes: Option<&[u8]>,
    max_value_bytes: usize,
) -> (Value, Option<ValueEncoding>, Option<usize>) {
    let Some(bytes) = bytes else {
        return (Value::Null, Some(ValueEncoding::None), None);
    };
    if max_value_bytes > 0 && bytes.len() > max_value_bytes {
        return (
            Value::Null,
            Some(ValueEncoding::Oversize),
            Some(bytes.len()),
        );
    }
    if let Ok(json) = serde_json::from_slice::<Value>(bytes) {
        return (json, None, None);
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => (
            Value::String(text.to_string()),
            Some(ValueEncoding::Text),
            None,
        ),
        Err(_) => (
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
            Some(ValueEncoding::Base64),
            None,
        ),
    }
}

/// Bytes as a JSON string when UTF-8, else as `{"base64": "…"}`.
fn bytes_as_json(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => Value::String(text.to_string()),
        Err(_) => serde_json::json!({
            "base64": base64::engine::general_purpose::STANDARD.encode(bytes)
        }),
    }
}

/// The first event of every stream.
pub fn connected_event(topic: &str, group: &str, resume_from: &str, epoch: Option<&str>) -> String {
    serde_json::json!({
        "kind": KIND_CONNECTED,
        "topic": topic,
        "group": group,
        "resume_from": resume_from,
        "epoch": epoch,
    })
    .to_string()
}

/// The marker entry that opens a new epoch of the stream: written by the sidecar when
/// it finds that Redis lost data (`reason`), read by every open stream.
pub fn epoch_marker(epoch: &str, reason: &str) -> String {
    serde_json::json!({ "kind": KIND_EPOCH, "epoch": epoch, "reason": reason }).to_string()
}

/// The epoch and reason of a marker entry; `None` for every other entry (checked by
/// prefix first: this runs on every entry every stream reads).
pub fn read_epoch_marker(entry: &[u8]) -> Option<(String, String)> {
    if !entry.starts_with(br#"{"epoch":"#) && !entry.starts_with(br#"{"kind":"epoch""#) {
        return None;
    }
    let v: Value = serde_json::from_slice(entry).ok()?;
    if v["kind"] != KIND_EPOCH {
        return None;
    }
    Some((
        v["epoch"].as_str()?.to_string(),
        v["reason"].as_str().unwrap_or("").to_string(),
    ))
}

/// The `reset` event: the stream the client was reading is gone (Redis lost its data,
/// `reason`); it continues with the stream's new `epoch`, whose entries may repeat
/// events the client saw (`topic`, `partition` and `offset` tell them apart).
pub fn reset_event(requested: Option<&str>, epoch: &str, reason: &str) -> String {
    serde_json::json!({
        "kind": KIND_RESET,
        "reason": reason,
        "requested": requested,
        "epoch": epoch,
        "message": "Redis lost the stream's data and it was rebuilt from Kafka: events you have seen may come again (deduplicate by topic, partition and offset); events that were still in Kafka are not lost",
    })
    .to_string()
}

/// The `reset` event of a position from the all-tenants stream that cannot be moved
/// exactly onto the tenant's own stream: the client starts over on it, from its
/// oldest entry.
pub fn stream_changed_event(requested: &str, epoch: &str) -> String {
    serde_json::json!({
        "kind": KIND_RESET,
        "reason": "stream_changed",
        "requested": requested,
        "epoch": epoch,
        "message": "your position is from the all-tenants stream and could not be matched exactly on your tenant's own stream, which starts over from its oldest event: events you have seen may come again",
    })
    .to_string()
}

/// The SSE event name (and `kind`) of the event that ends a stream at its token's `exp`.
pub const KIND_AUTH_EXPIRED: &str = "auth_expired";

/// The last event of a stream whose token expired: the client fetches a fresh token
/// and reconnects with `Last-Event-ID` (`resume_from` is the same position).
pub fn auth_expired_event(resume_from: &str) -> String {
    serde_json::json!({
        "kind": KIND_AUTH_EXPIRED,
        "message": "the token has expired: reconnect with a fresh token and Last-Event-ID",
        "resume_from": resume_from,
    })
    .to_string()
}

/// The event that reports that history before `oldest` is no longer retained.
///
/// `requested` is the position the client asked to resume after; `oldest` the oldest
/// entry still in the stream (None when the stream is empty). `reason` is `trimmed`
/// (older entries were removed by the stream's length limit) or `reset` (the stream
/// is behind the requested position: Redis lost its data or the prefix changed).
pub fn gap_event(requested: &str, oldest: Option<&str>, reason: &str) -> String {
    let oldest_ms = oldest
        .and_then(|id| id.split('-').next())
        .and_then(|ms| ms.parse::<u64>().ok());
    serde_json::json!({
        "kind": KIND_GAP,
        "reason": reason,
        "requested": requested,
        "oldest": oldest,
        "oldest_timestamp": oldest_ms,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(key: Option<&'a [u8]>, value: Option<&'a [u8]>) -> RawRecord<'a> {
        RawRecord {
            topic: "aetherlink.events",
            partition: 2,
            offset: 41,
            timestamp: Some(1_730_592_000_000),
            key,
            value,
        }
    }

    #[test]
    fn json_value_keeps_the_historic_shape() {
        let e = Envelope::from_record(
            record(Some(b"JobCreated"), Some(br#"{"JobId":7}"#)),
            [],
            0,
            Audience::Operator,
        );
        assert_eq!(
            e.to_json(),
            r#"{"kind":"domain_event","topic":"aetherlink.events","partition":2,"offset":41,"timestamp":1730592000000,"key":"JobCreated","value":{"JobId":7}}"#
        );
        let back: Envelope = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn pretty_json_becomes_one_line() {
        let e = Envelope::from_record(
            record(None, Some(b"{\n  \"a\": \"x\\ny\"\n}")),
            [],
            0,
            Audience::Operator,
        );
        let json = e.to_json();
        assert!(!json.contains('\n'), "{json}");
        assert_eq!(e.value["a"], "x\ny");
    }

    #[test]
    fn text_binary_oversize_and_tombstone_are_marked_not_dropped() {
        let text = Envelope::from_record(
            record(None, Some(b"not json\n\ndata: x")),
            [],
            0,
            Audience::Operator,
        );
        assert_eq!(text.value_encoding, Some(ValueEncoding::Text));
        assert_eq!(text.value, "not json\n\ndata: x");
        assert!(!text.to_json().contains('\n'));

        let bin = Envelope::from_record(
            record(Some(&[0xff, 0x00]), Some(&[0xff, 0xfe, 0x00])),
            [],
            0,
            Audience::Operator,
        );
        assert_eq!(bin.value_encoding, Some(ValueEncoding::Base64));
        assert_eq!(bin.value, "//4A");
        assert_eq!(bin.key, serde_json::json!({"base64": "/wA="}));

        let big =
            Envelope::from_record(record(None, Some(&[b'1'; 100])), [], 10, Audience::Operator);
        assert_eq!(big.value_encoding, Some(ValueEncoding::Oversize));
        assert_eq!(big.value_size, Some(100));
        assert!(big.value.is_null());

        let tomb = Envelope::from_record(record(None, None), [], 0, Audience::Operator);
        assert_eq!(tomb.value_encoding, Some(ValueEncoding::None));
    }

    #[test]
    fn headers_are_kept() {
        let e = Envelope::from_record(
            record(None, Some(b"1")),
            [
                ("trace", Some(&b"abc"[..])),
                ("bin", Some(&[0xc3u8, 0x28][..])),
                ("nil", None),
            ],
            0,
            Audience::Operator,
        );
        assert_eq!(e.headers["trace"], "abc");
        assert_eq!(e.headers["bin"]["base64"], "wyg=");
        assert!(e.headers["nil"].is_null());
    }

    #[test]
    fn the_fast_encoder_matches_the_envelope() {
        let huge = [b'9'; 400];
        let values: [Option<&[u8]>; 13] = [
            Some(br#"{"a":1,"b":[true,null,"x"]}"#),
            Some(br#"  {"a" : 1}  "#),
            Some(b"{\n \"pretty\": 1\n}"),
            Some(br#""just a string""#),
            Some(b"42"),
            Some(b"not json"),
            Some(&[0xff, 0x00]),
            Some(&[b'1'; 64]),
            None,
            // Grammatical but out of range (found by the sse_framing fuzz target):
            // text, as the envelope has it, on both paths.
            Some(b"459e111915"),
            Some(br#"{"a":[1e400]}"#),
            Some(&huge),
            Some(br#"{"e":"1e400","x":2.5E3}"#),
        ];
        for (v, max) in values.iter().flat_map(|v| [(v, 32), (v, 1024)]) {
            let rec = record(Some(b"K"), *v);
            let slow = Envelope::from_record(rec, [], max, Audience::Operator).to_json();
            let fast = encode_record(rec, [], max, Audience::Operator);
            let slow_v: Value = serde_json::from_str(&slow).unwrap();
            let fast_v: Value = serde_json::from_str(&fast).unwrap();
            assert_eq!(slow_v, fast_v, "value {v:?}, limit {max}");
            assert!(!fast.contains('\n'));
        }
        let headers = [
            ("outbox-id", Some(&b"7"[..])),
            ("bin", Some(&[0xff][..])),
            ("nil", None),
        ];
        let fast = encode_record(
            record(None, Some(b"{\"a\":1}")),
            headers,
            0,
            Audience::Operator,
        );
        let slow = Envelope::from_record(
            record(None, Some(b"{\"a\":1}")),
            headers,
            0,
            Audience::Operator,
        )
        .to_json();
        assert_eq!(fast, slow);
        let v: Value = serde_json::from_str(&fast).unwrap();
        assert_eq!(v["headers"]["outbox-id"], "7");
        assert_eq!(v["headers"]["bin"]["base64"], "/w==");
        assert!(v["headers"]["nil"].is_null());
    }

    #[test]
    fn epoch_markers_are_found_and_nothing_else_is() {
        let m = epoch_marker("k3", "flushed");
        assert_eq!(
            read_epoch_marker(m.as_bytes()),
            Some(("k3".into(), "flushed".into()))
        );
        let env = Envelope::from_record(
            record(None, Some(br#"{"kind":"epoch"}"#)),
            [],
            0,
            Audience::Operator,
        )
        .to_json();
        assert_eq!(read_epoch_marker(env.as_bytes()), None);
        let r: Value = serde_json::from_str(&reset_event(Some("1-0.k2"), "k3", "flushed")).unwrap();
        assert_eq!(
            (r["kind"].as_str(), r["epoch"].as_str()),
            (Some("reset"), Some("k3"))
        );
    }

    #[test]
    fn connected_and_gap_events() {
        let c: Value = serde_json::from_str(&connected_event("t", "g", "1-0", Some("k1"))).unwrap();
        assert_eq!(c["kind"], "connected");
        assert_eq!(c["group"], "g");
        let g: Value = serde_json::from_str(&gap_event("5-0", Some("1700-3"), "trimmed")).unwrap();
        assert_eq!(g["kind"], "gap");
        assert_eq!(g["oldest_timestamp"], 1700);
    }

    #[test]
    fn the_tenant_cut_leaves_out_what_counts_other_tenants() {
        let headers = [("outbox-id", Some(&b"7"[..])), ("trace", Some(&b"t1"[..]))];
        let rec = record(Some(b"JobCreated"), Some(br#"{"TenantId":"acme"}"#));
        let tenant = encode_record(rec, headers, 0, Audience::Tenant);
        assert_eq!(
            tenant,
            r#"{"kind":"domain_event","topic":"aetherlink.events","timestamp":1730592000000,"key":"JobCreated","value":{"TenantId":"acme"},"headers":{"trace":"t1"}}"#
        );
        // The slow path (a value that is not compact JSON) cuts the same way.
        let text = encode_record(record(None, Some(b"plain")), headers, 0, Audience::Tenant);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(v.get("partition").is_none() && v.get("offset").is_none());
        assert_eq!(v["headers"], serde_json::json!({"trace": "t1"}));
        let operator = encode_record(rec, headers, 0, Audience::Operator);
        assert!(operator.contains(r#""partition":2,"offset":41"#));
        assert!(operator.contains(r#""outbox-id":"7""#));
    }
}
