//! The outbox contract: what a row of `outbox_events` becomes in Kafka, and the names
//! the publisher, the sidecar and the publish endpoint share.
//!
//! A row `(id, tenant_id, type, payload, occurred_at)` is produced as one record:
//!
//! * **value**: the JSON SSE clients and the viewer already expect,
//!   `{"Type":<type>,"TenantId":<tenant_id>,<the payload's fields>,"Ts":<occurred_at>}`.
//!   The row's columns win over payload fields of the same names; a payload that is
//!   not a JSON object is carried whole as `"Payload"`.
//! * **key**: the tenant (default), so every event of a tenant lands on one partition
//!   and keeps its order; or `<tenant>/<aggregate id>` for per-entity order with
//!   wider spread ([`KeyBy`]).
//! * **header** [`OUTBOX_ID_HEADER`]: the row id, by which the sidecar drops a record
//!   a publisher re-sent after a crash (the end-to-end exactly-once link).

use serde_json::value::RawValue;
use std::collections::BTreeMap;

/// The Kafka header carrying the outbox row id (decimal text).
pub const OUTBOX_ID_HEADER: &str = "outbox-id";
/// The `LISTEN`/`NOTIFY` channel the insert trigger notifies.
pub const NOTIFY_CHANNEL: &str = "crm_events_outbox";
/// The value field of a payload that is not a JSON object.
pub const PAYLOAD_FIELD: &str = "Payload";

/// Default poll interval (the fallback when no notification arrives), ms: the old
/// service polled every 5 s.
pub const DEFAULT_POLL_INTERVAL_MS: u64 = 5_000;
/// Default rows per claim (the old service's batch size).
pub const DEFAULT_BATCH_SIZE: u64 = 100;
/// Default attempts before a row is marked failed (the old service's limit).
pub const DEFAULT_MAX_RETRIES: u32 = 5;
/// Default days a published row is kept before retention deletes it.
pub const DEFAULT_RETENTION_DAYS: u64 = 7;
/// How long an idempotency key is remembered (the CRM's `expires_at = created_at + 24 h`).
pub const IDEMPOTENCY_TTL_SECONDS: u64 = 24 * 3600;
/// Default number of outbox ids the sidecar remembers to drop re-sent records.
pub const DEFAULT_DEDUP_WINDOW: u64 = 100_000;
/// Default largest Kafka record the publisher produces (Kafka's default topic limit
/// is 1,048,588 bytes; staying under it keeps oversize rows a client-side error).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_000_000;
/// The payload fields that name an aggregate, tried in order, for [`KeyBy::Aggregate`].
pub const DEFAULT_AGGREGATE_FIELDS: &str = "AggregateId,JobId,ContactId,AccountId";

/// One outbox row, as the publisher reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// `id`.
    pub id: i64,
    /// `tenant_id` (UUID text).
    pub tenant_id: String,
    /// `type`, e.g. `JobCreated`.
    pub event_type: String,
    /// `payload` as JSON text.
    pub payload: String,
    /// `occurred_at`, ms since the epoch.
    pub occurred_at_ms: i64,
}

/// How records are keyed (and so partitioned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyBy {
    /// The tenant: one tenant's events stay in order.
    Tenant,
    /// `<tenant>/<aggregate id>` from the first of these payload fields present; the
    /// tenant alone when none is.
    Aggregate(Vec<String>),
}

impl KeyBy {
    /// Parses `tenant` or `aggregate` (with the aggregate field list).
    pub fn parse(mode: &str, fields: &str) -> Result<Self, String> {
        match mode.trim().to_ascii_lowercase().as_str() {
            "tenant" => Ok(Self::Tenant),
            "aggregate" => Ok(Self::Aggregate(
                fields
                    .split(',')
                    .map(str::trim)
                    .filter(|f| !f.is_empty())
                    .map(str::to_string)
                    .collect(),
            )),
            other => Err(format!("expected tenant or aggregate, got {other:?}")),
        }
    }
}

/// The record a row becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The key.
    pub key: String,
    /// The value JSON.
    pub value: String,
    /// The [`OUTBOX_ID_HEADER`] value.
    pub outbox_id: String,
}

impl Row {
    /// The Kafka record of this row.
    pub fn record(&self, key_by: &KeyBy) -> Record {
        let fields = object_fields(&self.payload);
        Record {
            key: self.key(key_by, fields.as_ref()),
            value: self.value(fields.as_ref()),
            outbox_id: self.id.to_string(),
        }
    }

    fn key(&self, key_by: &KeyBy, fields: Option<&BTreeMap<String, &RawValue>>) -> String {
        let KeyBy::Aggregate(names) = key_by else {
            return self.tenant_id.clone();
        };
        let aggregate = fields.and_then(|f| {
            names
                .iter()
                .find_map(|n| f.get(n.as_str()))
                .map(|raw| aggregate_text(raw))
        });
        match aggregate {
            Some(id) => format!("{}/{id}", self.tenant_id),
            None => self.tenant_id.clone(),
        }
    }

    fn value(&self, fields: Option<&BTreeMap<String, &RawValue>>) -> String {
        let mut out = String::with_capacity(self.payload.len() + 128);
        out.push('{');
        push_field(&mut out, "Type", &json_string(&self.event_type));
        out.push(',');
        push_field(&mut out, "TenantId", &json_string(&self.tenant_id));
        match fields {
            Some(fields) => {
                for (name, raw) in fields {
                    if !matches!(name.as_str(), "Type" | "TenantId" | "Ts") {
                        out.push(',');
                        push_field(&mut out, name, raw.get());
                    }
                }
            }
            None => {
                out.push(',');
                push_field(&mut out, PAYLOAD_FIELD, self.payload.trim());
            }
        }
        out.push(',');
        push_field(
            &mut out,
            "Ts",
            &json_string(&rfc3339_ms(self.occurred_at_ms)),
        );
        out.push('}');
        out
    }
}

/// The payload's fields when it is a JSON object, values left as written.
fn object_fields(payload: &str) -> Option<BTreeMap<String, &RawValue>> {
    serde_json::from_str(payload).ok()
}

/// An aggregate id as key text: a string's contents, anything else as JSON.
fn aggregate_text(raw: &RawValue) -> String {
    serde_json::from_str::<String>(raw.get()).unwrap_or_else(|_| raw.get().to_string())
}

fn push_field(out: &mut String, name: &str, raw_value: &str) {
    out.push_str(&json_string(name));
    out.push(':');
    out.push_str(raw_value);
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

/// `2026-11-23T10:00:00.123Z` for ms since the epoch.
pub fn rfc3339_ms(ms: i64) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".to_string())
}

/// The outbox id a record carries, from its headers: `None` when it has none (a
/// record from another producer) or the value is not a decimal id.
pub fn outbox_id<'a>(
    mut headers: impl Iterator<Item = (&'a str, Option<&'a [u8]>)>,
) -> Option<i64> {
    let (_, value) = headers.find(|(name, _)| *name == OUTBOX_ID_HEADER)?;
    std::str::from_utf8(value?).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn row(payload: &str) -> Row {
        Row {
            id: 42,
            tenant_id: "7f3c6e1a-0d2b-4a57-9c1e-2b4f6d8a0c13".into(),
            event_type: "JobCreated".into(),
            payload: payload.into(),
            occurred_at_ms: 1_795_434_635_118,
        }
    }

    #[test]
    fn the_value_is_what_clients_expect() {
        let r =
            row(r#"{"JobId": "job-7", "Title": "Visit", "Status": "Open"}"#).record(&KeyBy::Tenant);
        let v: Value = serde_json::from_str(&r.value).unwrap();
        assert_eq!(v["Type"], "JobCreated");
        assert_eq!(v["TenantId"], "7f3c6e1a-0d2b-4a57-9c1e-2b4f6d8a0c13");
        assert_eq!(v["JobId"], "job-7");
        assert_eq!(v["Status"], "Open");
        assert_eq!(v["Ts"], "2026-11-23T11:50:35.118Z");
        assert!(r.value.starts_with(r#"{"Type":"JobCreated","TenantId":"#));
        assert!(!r.value.contains('\n'));
        assert_eq!(r.key, "7f3c6e1a-0d2b-4a57-9c1e-2b4f6d8a0c13");
        assert_eq!(r.outbox_id, "42");
    }

    #[test]
    fn columns_win_over_payload_fields_and_non_objects_are_carried_whole() {
        let r =
            row(r#"{"Type":"Spoofed","TenantId":"x","Ts":"then","N":1}"#).record(&KeyBy::Tenant);
        let v: Value = serde_json::from_str(&r.value).unwrap();
        assert_eq!(v["Type"], "JobCreated");
        assert_eq!(v["TenantId"], "7f3c6e1a-0d2b-4a57-9c1e-2b4f6d8a0c13");
        assert_eq!(v["N"], 1);
        assert_eq!(r.value.matches("\"Type\"").count(), 1);
        let list = row("[1, 2]").record(&KeyBy::Tenant);
        let v: Value = serde_json::from_str(&list.value).unwrap();
        assert_eq!(v[PAYLOAD_FIELD], serde_json::json!([1, 2]));
        let text = row(r#""line\nbreak""#).record(&KeyBy::Tenant);
        assert!(!text.value.contains('\n'));
    }

    #[test]
    fn aggregate_keys_name_the_entity() {
        let by = KeyBy::parse("aggregate", DEFAULT_AGGREGATE_FIELDS).unwrap();
        let r = row(r#"{"ContactId":"c-9","JobId":"job-7"}"#).record(&by);
        assert_eq!(r.key, "7f3c6e1a-0d2b-4a57-9c1e-2b4f6d8a0c13/job-7");
        let numeric = row(r#"{"AccountId":17}"#).record(&by);
        assert!(numeric.key.ends_with("/17"));
        let none = row(r#"{"Other":1}"#).record(&by);
        assert_eq!(none.key, "7f3c6e1a-0d2b-4a57-9c1e-2b4f6d8a0c13");
        assert!(KeyBy::parse("partition", "").is_err());
        assert_eq!(KeyBy::parse(" Tenant ", "").unwrap(), KeyBy::Tenant);
    }

    #[test]
    fn outbox_ids_come_from_the_header_only() {
        let headers = [
            ("trace", Some(&b"x"[..])),
            (OUTBOX_ID_HEADER, Some(&b"1234"[..])),
        ];
        assert_eq!(outbox_id(headers.into_iter()), Some(1234));
        assert_eq!(
            outbox_id([(OUTBOX_ID_HEADER, Some(&b"12a"[..]))].into_iter()),
            None
        );
        assert_eq!(outbox_id([(OUTBOX_ID_HEADER, None)].into_iter()), None);
        assert_eq!(outbox_id(std::iter::empty()), None);
    }
}
