//! `POST /crm-events`: idempotent publishing into the outbox, for producers without
//! an outbox of their own.
//!
//! The request carries `{"type","tenant_id","payload"[,"occurred_at"]}` and an
//! `Idempotency-Key` header (draft-ietf-httpapi-idempotency-key-header). One SQL
//! statement ([`STATEMENT`]) inserts the outbox row and the key together, or finds
//! what an earlier request with that key left:
//!
//! | the key is | answer |
//! | --- | --- |
//! | missing or malformed | `400` |
//! | new (or expired) | the row and the key are inserted; `202` with a receipt id (a random UUID: the row id would count every tenant's events) |
//! | stored, same request | the stored response again (`Idempotent-Replayed: true`), no second row |
//! | stored, another request | `422` |
//! | held by a request still running | `409` |
//!
//! "Same request" is a SHA-256 fingerprint of the canonical JSON of tenant, type,
//! payload and time, so whitespace and key order do not matter. "Still running" is
//! a transaction-scoped advisory lock on `(tenant, key)` that the statement takes
//! without waiting: a second request never blocks behind the first.

use crate::http::Refusal;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The request header naming the key.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// The response header of a replayed answer.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// The longest key (`idempotency_keys.key` is `VARCHAR(200)`).
pub const MAX_KEY_LENGTH: usize = 200;
/// The longest event type (`outbox_events.type` is `VARCHAR(200)`).
pub const MAX_TYPE_LENGTH: usize = 200;
/// The permission a token needs to publish.
pub const PUBLISH_PERMISSION: &str = "publish";
/// The prefix of the advisory-lock name of a key (see [`STATEMENT`], which spells it
/// as a literal; a unit test holds the two together).
pub const LOCK_NAMESPACE: &str = "crm-events/idempotency/";

/// The advisory-lock name `(tenant, key)` is held under while a request runs:
/// `SELECT pg_advisory_xact_lock(hashtextextended(<this>, 0))`.
pub fn lock_name(tenant_id: &str, key: &str) -> String {
    format!("{LOCK_NAMESPACE}{tenant_id}/{key}")
}

/// One publish request, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// The tenant, as a canonical (lowercase, hyphenated) UUID.
    pub tenant_id: String,
    /// The event type.
    pub event_type: String,
    /// The payload JSON text.
    pub payload: String,
    /// `occurred_at` as RFC 3339 UTC, when given (else the database's `now()`).
    pub occurred_at: Option<String>,
    /// SHA-256 (hex) of the canonical request.
    pub fingerprint: String,
}

/// A `400` naming the field at fault.
fn bad(field: &str, message: impl Into<String>) -> Refusal {
    Refusal::new(400, "bad_request", message).with("field", field.to_string())
}

impl Publish {
    /// Validates a request body.
    pub fn parse(body: &[u8]) -> Result<Self, Refusal> {
        let doc: Value = serde_json::from_slice(body)
            .map_err(|e| bad("body", format!("the body is not JSON: {e}")))?;
        let Value::Object(fields) = doc else {
            return Err(bad("body", "the body must be a JSON object"));
        };
        let text = |name: &str| fields.get(name).and_then(Value::as_str);
        let tenant_id = text("tenant_id")
            .and_then(|t| uuid::Uuid::parse_str(t.trim()).ok())
            .ok_or_else(|| bad("tenant_id", "tenant_id must be a UUID"))?
            .hyphenated()
            .to_string();
        let event_type = text("type")
            .filter(|t| valid_type(t))
            .ok_or_else(|| {
                bad(
                    "type",
                    "type must be 1-200 characters of A-Z a-z 0-9 _ . : -",
                )
            })?
            .to_string();
        let payload = fields
            .get("payload")
            .ok_or_else(|| bad("payload", "payload is required"))?;
        if holds_nul(payload) {
            return Err(bad(
                "payload",
                "payload must not contain U+0000 (\\u0000) in a string or a key: the outbox stores JSON as PostgreSQL jsonb, which cannot hold it",
            ));
        }
        let occurred_at =
            match fields.get("occurred_at") {
                None | Some(Value::Null) => None,
                Some(v) => Some(rfc3339(v).ok_or_else(|| {
                    bad("occurred_at", "occurred_at must be an RFC 3339 date-time")
                })?),
            };
        let fingerprint = fingerprint(&tenant_id, &event_type, payload, occurred_at.as_deref());
        Ok(Self {
            tenant_id,
            event_type,
            payload: payload.to_string(),
            occurred_at,
            fingerprint,
        })
    }

    /// The parameters of [`STATEMENT`], in order (`None` is SQL NULL).
    pub fn parameters<'a>(&'a self, key: &'a str, path: &'a str) -> [Option<String>; 8] {
        [
            Some(self.tenant_id.clone()),
            Some(key.to_string()),
            Some(self.event_type.clone()),
            Some(self.payload.clone()),
            self.occurred_at.clone(),
            Some(path.to_string()),
            Some(self.fingerprint.clone()),
            Some(crate::outbox::IDEMPOTENCY_TTL_SECONDS.to_string()),
        ]
    }
}

/// Whether any string or object key in `v` holds U+0000.
fn holds_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

fn valid_type(t: &str) -> bool {
    (1..=MAX_TYPE_LENGTH).contains(&t.len())
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// An RFC 3339 date-time string, normalised to UTC.
fn rfc3339(v: &Value) -> Option<String> {
    use time::format_description::well_known::Rfc3339;
    let t = time::OffsetDateTime::parse(v.as_str()?, &Rfc3339).ok()?;
    t.to_offset(time::UtcOffset::UTC).format(&Rfc3339).ok()
}

/// SHA-256 (hex) of the canonical JSON of what makes two requests the same.
pub fn fingerprint(tenant: &str, event_type: &str, payload: &Value, at: Option<&str>) -> String {
    let mut canonical = String::new();
    write_canonical(
        &mut canonical,
        &serde_json::json!({"tenant_id": tenant, "type": event_type, "payload": payload, "occurred_at": at}),
    );
    Sha256::digest(canonical.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// JSON with object keys sorted at every level and no insignificant whitespace.
fn write_canonical(out: &mut String, v: &Value) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(out, v);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, item);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The `Idempotency-Key` header: a structured-field string (`"…"`) or a bare token,
/// 1-200 printable ASCII characters. Missing or malformed is `400`.
pub fn idempotency_key(header: Option<&str>) -> Result<String, Refusal> {
    let missing = || {
        Refusal::new(400, "bad_request", "the Idempotency-Key header is required")
            .with("field", "Idempotency-Key")
    };
    let raw = header
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .ok_or_else(missing)?;
    let key = match raw.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"').unwrap_or(""),
        None => raw,
    };
    let printable = key
        .bytes()
        .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\');
    if key.is_empty() || key.len() > MAX_KEY_LENGTH || !printable {
        return Err(Refusal::new(
            400,
            "bad_request",
            "the Idempotency-Key must be 1-200 printable ASCII characters",
        )
        .with("field", "Idempotency-Key"));
    }
    Ok(key.to_string())
}

/// The publish statement. Parameters: `$1` tenant, `$2` key, `$3` type, `$4` payload,
/// `$5` occurred_at (or NULL), `$6` request path, `$7` fingerprint, `$8` key TTL in
/// seconds, all as text (Spin binds strings as text; the casts happen here).
///
/// * `lock` takes the key's advisory lock without waiting (`false`: in flight).
/// * `prior` is an unexpired stored key, if any.
/// * `fresh` draws the row id first, so the stored response can carry it.
/// * `stored` inserts the key, or takes over an expired one; when a concurrent
///   request committed the key after this statement's snapshot, it returns nothing…
/// * …and `event` then inserts nothing either: the row exists only with its key.
///
/// One row comes back: `held`, `created_id`, `stored_body`, and the prior key's
/// `prior_status`, `prior_body`, `prior_method`, `prior_path`, `prior_fingerprint`.
pub const STATEMENT: &str = r#"
WITH lock AS (
    SELECT pg_try_advisory_xact_lock(
        hashtextextended('crm-events/idempotency/' || $1::text || '/' || $2::text, 0)) AS held
), prior AS (
    SELECT k.status_code, k.response_body, k.request_method, k.request_path, k.request_fingerprint
      FROM idempotency_keys k, lock
     WHERE lock.held AND k.tenant_id = $1::text::uuid AND k.key = $2::text AND k.expires_at > now()
), fresh AS (
    SELECT nextval(pg_get_serial_sequence('outbox_events', 'id')) AS id
      FROM lock
     WHERE lock.held AND NOT EXISTS (SELECT 1 FROM prior)
), stored AS (
    INSERT INTO idempotency_keys AS k
           (tenant_id, key, request_path, request_method, status_code, response_body,
            created_at, expires_at, request_fingerprint)
    SELECT $1::text::uuid, $2::text, $6::text, 'POST', 202,
           '{"ok":true,"id":"' || gen_random_uuid() || '","status":"accepted"}',
           now(), now() + $8::text::bigint * interval '1 second', $7::text
      FROM fresh
    ON CONFLICT (tenant_id, key) DO UPDATE
       SET request_path = EXCLUDED.request_path, request_method = EXCLUDED.request_method,
           status_code = EXCLUDED.status_code, response_body = EXCLUDED.response_body,
           created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at,
           request_fingerprint = EXCLUDED.request_fingerprint
     WHERE k.expires_at <= now()
    RETURNING k.response_body
), event AS (
    INSERT INTO outbox_events (id, tenant_id, type, payload, occurred_at)
    SELECT fresh.id, $1::text::uuid, $3::text, $4::text::jsonb,
           COALESCE($5::text::timestamptz, now())
      FROM fresh, stored
    RETURNING id
)
SELECT lock.held,
       (SELECT id FROM event) AS created_id,
       (SELECT response_body FROM stored) AS stored_body,
       p.status_code::bigint AS prior_status, p.response_body AS prior_body,
       p.request_method AS prior_method, p.request_path AS prior_path,
       p.request_fingerprint AS prior_fingerprint
  FROM lock LEFT JOIN prior p ON true
"#;

/// A stored key that an earlier request left.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Prior {
    /// Its status code.
    pub status: i64,
    /// Its response body.
    pub body: Option<String>,
    /// Its method.
    pub method: String,
    /// Its path.
    pub path: String,
    /// Its fingerprint (`None` for keys the CRM's own code wrote).
    pub fingerprint: Option<String>,
}

/// The statement's one row.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Answer {
    /// Whether the key's lock was free.
    pub held: bool,
    /// The new row's id, when one was inserted.
    pub created_id: Option<i64>,
    /// The new key's stored response.
    pub stored_body: Option<String>,
    /// An unexpired key found first.
    pub prior: Option<Prior>,
}

/// One value of a result row, as the component's Postgres glue hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    /// NULL.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// Text.
    Text(String),
}

impl Cell {
    fn text(&self) -> Option<String> {
        match self {
            Cell::Text(t) => Some(t.clone()),
            _ => None,
        }
    }

    fn int(&self) -> Option<i64> {
        match self {
            Cell::Int(i) => Some(*i),
            _ => None,
        }
    }
}

impl Answer {
    /// Reads the statement's row (columns in [`STATEMENT`]'s order); `None` when it
    /// has another shape.
    pub fn from_row(row: &[Cell]) -> Option<Self> {
        let [held, created, stored, status, body, method, path, fingerprint] = row else {
            return None;
        };
        let Cell::Bool(held) = held else {
            return None;
        };
        let prior = status.int().map(|status| Prior {
            status,
            body: body.text(),
            method: method.text().unwrap_or_default(),
            path: path.text().unwrap_or_default(),
            fingerprint: fingerprint.text(),
        });
        Some(Self {
            held: *held,
            created_id: created.int(),
            stored_body: stored.text(),
            prior,
        })
    }
}

/// What to answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A new row: `202` with this body.
    Created(String),
    /// The same request again: this status and body, marked as a replay.
    Replay(u16, String),
    /// Refused (`409` in flight, `422` another request).
    Refused(Refusal),
    /// A concurrent request committed the key after this statement began: run the
    /// statement again, it will see it.
    Raced,
}

impl Answer {
    /// The answer for `request` at `path`.
    pub fn outcome(self, request: &Publish, path: &str) -> Outcome {
        if !self.held {
            return Outcome::Refused(in_flight());
        }
        if let (Some(_), Some(body)) = (self.created_id, self.stored_body) {
            return Outcome::Created(body);
        }
        let Some(prior) = self.prior else {
            return Outcome::Raced;
        };
        let same = prior.method.eq_ignore_ascii_case("POST")
            && prior.path == path
            && prior.fingerprint.as_deref() == Some(request.fingerprint.as_str());
        if !same {
            return Outcome::Refused(Refusal::new(
                422,
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request",
            ));
        }
        let status = u16::try_from(prior.status).unwrap_or(202);
        Outcome::Replay(status, prior.body.unwrap_or_default())
    }
}

/// `403` unless `identity` holds the `publish` permission. Checked before the body
/// is read: a token that may not publish gets no work done for its body.
pub fn may_publish(identity: &crate::auth::Identity) -> Result<(), Refusal> {
    if identity.permissions.contains(PUBLISH_PERMISSION) {
        return Ok(());
    }
    Err(Refusal::forbidden(format!(
        "the token lacks the {PUBLISH_PERMISSION:?} permission"
    )))
}

/// `403` unless the request lies inside the token's scope: its tenant, and its
/// type when the token names types (a token scoped to some types publishes only
/// those).
pub fn authorise(identity: &crate::auth::Identity, request: &Publish) -> Result<(), Refusal> {
    may_publish(identity)?;
    if !identity.has_tenant(&request.tenant_id) {
        return Err(Refusal::forbidden("the token does not grant this tenant"));
    }
    if let Some(types) = &identity.scope.types {
        if !types.contains(&request.event_type) {
            return Err(
                Refusal::forbidden("the token does not grant this event type")
                    .with("type", request.event_type.clone()),
            );
        }
    }
    Ok(())
}

/// `409`: a request with this key is still being processed.
pub fn in_flight() -> Refusal {
    Refusal::new(
        409,
        "idempotency_key_in_use",
        "a request with this Idempotency-Key is still being processed; retry later",
    )
    .retry_after(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TENANT: &str = "7F3C6E1A-0D2B-4A57-9C1E-2B4F6D8A0C13";

    fn body(payload: &str) -> Vec<u8> {
        format!(r#"{{"type":"JobCreated","tenant_id":"{TENANT}","payload":{payload}}}"#)
            .into_bytes()
    }

    #[test]
    fn valid_requests_are_normalised() {
        let p = Publish::parse(&body(r#"{"JobId":"job-1"}"#)).unwrap();
        assert_eq!(p.tenant_id, TENANT.to_lowercase());
        assert_eq!(p.event_type, "JobCreated");
        assert_eq!(p.occurred_at, None);
        let at = br#"{"type":"T","tenant_id":"7f3c6e1a-0d2b-4a57-9c1e-2b4f6d8a0c13","payload":1,"occurred_at":"2026-11-23T12:00:00+02:00"}"#;
        let p = Publish::parse(at).unwrap();
        assert_eq!(p.occurred_at.as_deref(), Some("2026-11-23T10:00:00Z"));
        let params = p.parameters("k", "/crm-events");
        assert_eq!(params[4].as_deref(), Some("2026-11-23T10:00:00Z"));
        assert_eq!(params[7].as_deref(), Some("86400"));
    }

    #[test]
    fn the_fingerprint_ignores_layout_but_not_content() {
        let a = Publish::parse(&body(r#"{"a":1,"b":{"x":[1,2],"y":null}}"#)).unwrap();
        let b = Publish::parse(&body(r#"{ "b" : { "y":null, "x":[1, 2] }, "a" : 1 }"#)).unwrap();
        let c = Publish::parse(&body(r#"{"a":2,"b":{"x":[1,2],"y":null}}"#)).unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_ne!(a.fingerprint, c.fingerprint);
        assert_eq!(a.fingerprint.len(), 64);
    }

    #[test]
    fn bad_bodies_name_the_field() {
        let field = |b: &[u8]| {
            let r = Publish::parse(b).unwrap_err();
            assert_eq!(r.status, 400);
            serde_json::from_str::<Value>(&r.body()).unwrap()["field"].clone()
        };
        assert_eq!(field(b"not json"), "body");
        assert_eq!(field(b"[1]"), "body");
        assert_eq!(
            field(br#"{"type":"T","tenant_id":"acme","payload":{}}"#),
            "tenant_id"
        );
        let t = format!(r#"{{"type":"bad type","tenant_id":"{TENANT}","payload":{{}}}}"#);
        assert_eq!(field(t.as_bytes()), "type");
        let t = format!(r#"{{"type":"T","tenant_id":"{TENANT}"}}"#);
        assert_eq!(field(t.as_bytes()), "payload");
        let t =
            format!(r#"{{"type":"T","tenant_id":"{TENANT}","payload":1,"occurred_at":"soon"}}"#);
        assert_eq!(field(t.as_bytes()), "occurred_at");
    }

    #[test]
    fn keys_follow_the_draft() {
        assert_eq!(
            idempotency_key(Some(r#""8e03978e-40d5""#)).unwrap(),
            "8e03978e-40d5"
        );
        assert_eq!(idempotency_key(Some(" abc ")).unwrap(), "abc");
        for bad in [None, Some(""), Some(r#""""#), Some("a b"), Some("é")] {
            assert_eq!(idempotency_key(bad).unwrap_err().status, 400, "{bad:?}");
        }
        assert!(idempotency_key(Some(&"k".repeat(201))).is_err());
        assert!(idempotency_key(Some(&"k".repeat(200))).is_ok());
    }

    #[test]
    fn the_statement_spells_the_lock_namespace() {
        assert!(STATEMENT.contains(&format!(
            "'{LOCK_NAMESPACE}' || $1::text || '/' || $2::text"
        )));
        assert_eq!(lock_name("t", "k"), "crm-events/idempotency/t/k");
    }

    #[test]
    fn rows_are_read_by_position() {
        let row = [
            Cell::Bool(true),
            Cell::Int(7),
            Cell::Text(r#"{"ok":true,"id":7}"#.into()),
            Cell::Null,
            Cell::Null,
            Cell::Null,
            Cell::Null,
            Cell::Null,
        ];
        let a = Answer::from_row(&row).unwrap();
        assert_eq!((a.held, a.created_id, a.prior), (true, Some(7), None));
        assert!(Answer::from_row(&row[..3]).is_none());
        let mut replay = row.clone();
        replay[1] = Cell::Null;
        replay[3] = Cell::Int(202);
        replay[5] = Cell::Text("POST".into());
        let a = Answer::from_row(&replay).unwrap();
        assert_eq!(a.prior.unwrap().status, 202);
    }

    #[test]
    fn outcomes() {
        let req = Publish::parse(&body("{}")).unwrap();
        let prior = |fp: &str| Prior {
            status: 202,
            body: Some(r#"{"ok":true,"id":5}"#.into()),
            method: "POST".into(),
            path: "/crm-events".into(),
            fingerprint: Some(fp.into()),
        };
        let answer = |held, created: Option<i64>, prior: Option<Prior>| Answer {
            held,
            created_id: created,
            stored_body: created.map(|id| format!(r#"{{"ok":true,"id":{id}}}"#)),
            prior,
        };
        let status = |o: Outcome| match o {
            Outcome::Created(_) => 202,
            Outcome::Replay(s, _) => s + 1000,
            Outcome::Refused(r) => r.status,
            Outcome::Raced => 0,
        };
        assert_eq!(
            status(answer(false, None, None).outcome(&req, "/crm-events")),
            409
        );
        assert_eq!(
            status(answer(true, Some(6), None).outcome(&req, "/crm-events")),
            202
        );
        let same = answer(true, None, Some(prior(&req.fingerprint)));
        assert_eq!(status(same.clone().outcome(&req, "/crm-events")), 1202);
        assert_eq!(status(same.outcome(&req, "/other")), 422);
        let other = answer(true, None, Some(prior("0000")));
        assert_eq!(status(other.outcome(&req, "/crm-events")), 422);
        assert_eq!(
            status(answer(true, None, None).outcome(&req, "/crm-events")),
            0
        );
    }

    #[test]
    fn a_nul_anywhere_in_the_payload_is_a_400_naming_the_payload() {
        for payload in [r#""a\u0000b""#, r#"{"k\u0000":1}"#, r#"[[{"x":"\u0000"}]]"#] {
            let e = Publish::parse(&body(payload)).unwrap_err();
            assert_eq!((e.status, e.code), (400, "bad_request"), "{payload}");
            assert!(e.body().contains(r#""field":"payload""#), "{}", e.body());
        }
        assert!(Publish::parse(&body(r#""a\u0001b""#)).is_ok());
    }

    #[test]
    fn a_types_scope_limits_what_a_token_publishes() {
        use crate::auth::{Identity, Scope, Tenants};
        let req = Publish::parse(&body("{}")).unwrap();
        let identity = |types: Option<&[&str]>, permissions: &[&str]| Identity {
            subject: "p".into(),
            scope: Scope {
                tenants: Tenants::All,
                types: types.map(|t| t.iter().map(|s| s.to_string()).collect()),
            },
            expires_at: Some(1),
            permissions: permissions.iter().map(|s| s.to_string()).collect(),
        };
        assert!(authorise(&identity(None, &["publish"]), &req).is_ok());
        assert!(authorise(&identity(Some(&["JobCreated"]), &["publish"]), &req).is_ok());
        let e = authorise(&identity(Some(&["ContactUpdated"]), &["publish"]), &req).unwrap_err();
        assert_eq!(e.status, 403);
        assert_eq!(may_publish(&identity(None, &[])).unwrap_err().status, 403);
    }
}
