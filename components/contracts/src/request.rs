//! The `/crm-events` request: where to start, what to filter, and what is malformed.
//!
//! Where the stream starts, in order of precedence:
//! 1. the `Last-Event-ID` header (what `EventSource` sends when it reconnects);
//! 2. `?last_event_id=` (for clients that cannot set headers);
//! 3. `?since=` (epoch milliseconds or RFC 3339): replay from that time;
//! 4. `?tail=N`: start N entries back (the recent past, for a page that just opened);
//! 5. otherwise only events added after the request.

use crate::stream_id::{parse_event_id, parse_since, StreamId};
use serde_json::value::RawValue;
use std::borrow::Cow;

/// Where a stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Only events added after the request.
    New,
    /// Events after this id (exclusive).
    After(StreamId),
    /// Events added at or after this time (ms since the epoch).
    Since(u64),
    /// The newest N entries, then new ones.
    Tail(u64),
}

/// The largest `?tail=`.
pub const MAX_TAIL: u64 = 10_000;

/// Server-side filters. Empty lists match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    /// `?tenant=`: the value's `TenantId` must be one of these.
    pub tenants: Vec<String>,
    /// `?type=`: the event type (the value's `Type`, else the key) must be one of these.
    pub types: Vec<String>,
}

/// A parsed `/crm-events` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseRequest {
    /// Start position.
    pub resume: Resume,
    /// The stream epoch the client's `Last-Event-ID` belongs to, when it names one.
    pub epoch: Option<String>,
    /// Filters.
    pub filters: Filters,
}

/// A request parameter that cannot be honoured; answered with 400 before streaming.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{parameter}: {message}")]
pub struct RequestError {
    /// The header or query parameter at fault.
    pub parameter: &'static str,
    /// What is wrong.
    pub message: String,
}

impl SseRequest {
    /// Parses the query string (without `?`) and the `Last-Event-ID` header.
    pub fn parse(query: &str, last_event_id: Option<&str>) -> Result<Self, RequestError> {
        let mut query_id = None;
        let mut since = None;
        let mut tail = None;
        let mut filters = Filters::default();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            match name.as_ref() {
                "last_event_id" | "lastEventId" => query_id = Some(value.into_owned()),
                "since" => since = Some(value.into_owned()),
                "tail" => tail = Some(value.into_owned()),
                "tenant" => filters.tenants.extend(list(&value)),
                "type" => filters.types.extend(list(&value)),
                _ => {}
            }
        }
        let header = last_event_id.map(str::trim).filter(|v| !v.is_empty());
        let event_id = |parameter: &'static str, id: &str| {
            parse_event_id(id).map_err(|e| RequestError {
                parameter,
                message: e.to_string(),
            })
        };
        let mut epoch = None;
        let resume = if let Some(id) = header {
            let (id, e) = event_id("Last-Event-ID", id)?;
            epoch = e;
            Resume::After(id)
        } else if let Some(id) = query_id.as_deref().filter(|v| !v.trim().is_empty()) {
            let (id, e) = event_id("last_event_id", id)?;
            epoch = e;
            Resume::After(id)
        } else if let Some(since) = since {
            Resume::Since(parse_since(&since).map_err(|e| RequestError {
                parameter: "since",
                message: e.to_string(),
            })?)
        } else if let Some(tail) = tail {
            Resume::Tail(parse_tail(&tail)?)
        } else {
            Resume::New
        };
        Ok(Self {
            resume,
            epoch,
            filters,
        })
    }
}

fn parse_tail(value: &str) -> Result<u64, RequestError> {
    match value.trim().parse::<u64>() {
        Ok(n) if (1..=MAX_TAIL).contains(&n) => Ok(n),
        _ => Err(RequestError {
            parameter: "tail",
            message: format!("not a whole number from 1 to {MAX_TAIL}"),
        }),
    }
}

fn list(value: &str) -> impl Iterator<Item = String> + '_ {
    value
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

impl Filters {
    /// True when no filter is set.
    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty() && self.types.is_empty()
    }

    /// Whether an envelope (JSON bytes) passes the filters. An envelope that cannot
    /// be read passes only when no filter is set. Only `key`, `value.TenantId` and
    /// `value.Type` are read, borrowed from the bytes (no JSON tree per event: every
    /// scoped stream runs this on every event).
    pub fn matches(&self, envelope: &[u8]) -> bool {
        if self.is_empty() {
            return true;
        }
        let Ok(env) = serde_json::from_slice::<EnvelopeProbe<'_>>(envelope) else {
            return false;
        };
        let value = env
            .value
            .filter(|v| crate::tenant::is_object(v.get().as_bytes()))
            .and_then(|v| serde_json::from_str::<ValueProbe<'_>>(v.get()).ok())
            .unwrap_or_default();
        if !self.tenants.is_empty() {
            match value.tenant.and_then(crate::tenant::tenant_text) {
                Some(t) if self.tenants.iter().any(|want| *want == t) => {}
                _ => return false,
            }
        }
        if !self.types.is_empty() {
            let key = env
                .key
                .and_then(|k| serde_json::from_str::<Cow<'_, str>>(k.get()).ok());
            match value.kind.or(key) {
                Some(t) if self.types.iter().any(|want| *want == t) => {}
                _ => return false,
            }
        }
        true
    }
}

/// The envelope fields the filters read.
#[derive(serde::Deserialize)]
struct EnvelopeProbe<'a> {
    #[serde(borrow, default)]
    key: Option<&'a RawValue>,
    #[serde(borrow, default)]
    value: Option<&'a RawValue>,
}

/// The value fields the filters read (`Type`, `TenantId`); other values read as none.
#[derive(serde::Deserialize, Default)]
struct ValueProbe<'a> {
    #[serde(rename = "TenantId", borrow, default)]
    tenant: Option<&'a RawValue>,
    #[serde(rename = "Type", borrow, default)]
    kind: Option<Cow<'a, str>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_name_their_epoch() {
        let r = SseRequest::parse("", Some("3-0.k9")).unwrap();
        assert_eq!(
            (r.resume, r.epoch.as_deref()),
            (Resume::After(StreamId::new(3, 0)), Some("k9"))
        );
        let r = SseRequest::parse("last_event_id=4-1.z1", None).unwrap();
        assert_eq!(r.epoch.as_deref(), Some("z1"));
        assert_eq!(SseRequest::parse("", Some("3-0")).unwrap().epoch, None);
        assert_eq!(
            SseRequest::parse("", Some("3-0.BAD"))
                .unwrap_err()
                .parameter,
            "Last-Event-ID"
        );
    }

    #[test]
    fn precedence_header_then_query_then_since() {
        let r = SseRequest::parse("last_event_id=2-0&since=5", Some("3-0")).unwrap();
        assert_eq!(r.resume, Resume::After(StreamId::new(3, 0)));
        let r = SseRequest::parse("last_event_id=2-0&since=5", None).unwrap();
        assert_eq!(r.resume, Resume::After(StreamId::new(2, 0)));
        let r = SseRequest::parse("since=5", Some("")).unwrap();
        assert_eq!(r.resume, Resume::Since(5));
        assert_eq!(SseRequest::parse("", None).unwrap().resume, Resume::New);
        assert_eq!(
            SseRequest::parse("tail=50", None).unwrap().resume,
            Resume::Tail(50)
        );
        let r = SseRequest::parse("tail=50", Some("3-0")).unwrap();
        assert_eq!(
            r.resume,
            Resume::After(StreamId::new(3, 0)),
            "a reconnect resumes, not tails"
        );
        assert_eq!(
            SseRequest::parse("tail=0", None).unwrap_err().parameter,
            "tail"
        );
        assert_eq!(
            SseRequest::parse("tail=x", None).unwrap_err().parameter,
            "tail"
        );
    }

    #[test]
    fn malformed_positions_name_their_parameter() {
        assert_eq!(
            SseRequest::parse("", Some("abc")).unwrap_err().parameter,
            "Last-Event-ID"
        );
        assert_eq!(
            SseRequest::parse("last_event_id=1-x", None)
                .unwrap_err()
                .parameter,
            "last_event_id"
        );
        assert_eq!(
            SseRequest::parse("since=tomorrow", None)
                .unwrap_err()
                .parameter,
            "since"
        );
    }

    #[test]
    fn filters() {
        let r = SseRequest::parse("tenant=t1,t2&type=JobCreated&type=JobDeleted", None).unwrap();
        assert_eq!(r.filters.tenants, ["t1", "t2"]);
        assert_eq!(r.filters.types, ["JobCreated", "JobDeleted"]);
        let ev = |tenant: &str, key: &str| {
            format!(r#"{{"kind":"domain_event","key":"{key}","value":{{"TenantId":"{tenant}"}}}}"#)
        };
        assert!(r.filters.matches(ev("t1", "JobCreated").as_bytes()));
        assert!(!r.filters.matches(ev("t3", "JobCreated").as_bytes()));
        assert!(!r.filters.matches(ev("t2", "JobUpdated").as_bytes()));
        assert!(!r.filters.matches(b"not json"));
        assert!(Filters::default().matches(b"not json"));
        let numeric = SseRequest::parse("tenant=42", None).unwrap();
        assert!(numeric.filters.matches(br#"{"value":{"TenantId":42}}"#));
        // Values that are not objects, and events without a tenant, match no tenant.
        assert!(!numeric.filters.matches(br#"{"value":"text"}"#));
        assert!(!numeric.filters.matches(br#"{"value":{"Type":"X"}}"#));
        // An array is not read positionally as if it were the object's fields.
        assert!(!numeric.filters.matches(br#"{"value":["42"]}"#));
        assert!(!numeric.filters.matches(br#"{"value":[42]}"#));
        // Escaped strings compare by their meaning.
        let escaped = SseRequest::parse("tenant=a/b", None).unwrap();
        assert!(escaped.filters.matches(br#"{"value":{"TenantId":"a\/b"}}"#));
        // The event type is the value's `Type`, else the key.
        let updated = br#"{"key":"JobCreated","value":{"Type":"JobUpdated"}}"#;
        let by_type = |t: &str| {
            SseRequest::parse(&format!("type={t}"), None)
                .unwrap()
                .filters
        };
        assert!(by_type("JobUpdated").matches(updated));
        assert!(!by_type("JobCreated").matches(updated));
        assert!(by_type("JobCreated").matches(br#"{"key":"JobCreated","value":{}}"#));
        // The type falls back to the key when the value has none.
        let typed = SseRequest::parse("type=Note", None).unwrap();
        assert!(typed.filters.matches(br#"{"key":"Note","value":"plain"}"#));
        assert!(!typed
            .filters
            .matches(br#"{"key":{"base64":"//4="},"value":null}"#));
    }
}
