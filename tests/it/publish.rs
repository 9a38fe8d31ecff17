//! `POST /crm-events` through the real `sse` component on the host, against a real
//! PostgreSQL (the host's `spin:postgres` interface) and Redis: the Idempotency-Key
//! semantics (created, replayed, 422, 409, 400), concurrent requests with one key,
//! who may publish (the `publish` permission, the tenant scope, the publish token),
//! and Postgres away or unmigrated.

mod common;

use common::outbox::{migrated_postgres, tenant};
use common::{client, App};
use crm_events_contracts::publish::lock_name;
use crm_events_harness::postgres::Postgres;
use crm_events_harness::redis_server::RedisServer;
use crm_events_harness::tokens::{auth_vars, claims, sign};
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

/// The app with access control on and Postgres at `pg`, plus `extra`.
async fn app(redis: &RedisServer, pg: &Postgres, extra: &[(&str, &str)]) -> App {
    let mut vars = auth_vars(&[Algorithm::EdDSA]);
    vars.push(("postgres_host", pg.host_port()));
    vars.push(("postgres_sslmode", "disable".to_string()));
    vars.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    App::start(redis, &vars).await
}

/// A token for `tenants` with `permissions`.
fn token(tenants: &[&str], permissions: &[&str]) -> String {
    let mut c = claims("producer", tenants, 3600);
    c["permissions"] = json!(permissions);
    format!("Bearer {}", sign(Algorithm::EdDSA, None, &c))
}

fn event(tenant_id: &str, seq: i64) -> Value {
    json!({"type": "JobCreated", "tenant_id": tenant_id, "payload": {"JobId": "job-1", "Seq": seq}})
}

/// What a POST answered.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

async fn post(app: &App, auth: Option<&str>, key: Option<&str>, body: &str) -> Answer {
    let mut req = client()
        .post(app.url("/crm-events"))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let body =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text}"));
    Answer {
        status,
        headers,
        body,
    }
}

async fn rows(pg: &Postgres) -> i64 {
    let c = pg.client().await.unwrap();
    c.query_one("SELECT count(*) FROM outbox_events", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn the_same_key_replays_the_stored_answer_and_another_body_is_422() {
    let (redis, pg) = (RedisServer::start().unwrap(), migrated_postgres().await);
    let app = app(&redis, &pg, &[]).await;
    let auth = token(&[&tenant(1)], &["publish"]);
    let body = event(&tenant(1), 1).to_string();
    let first = post(&app, Some(&auth), Some("order-1"), &body).await;
    assert_eq!(first.status, 202, "{}", first.body);
    // A receipt id that counts nothing: a random UUID, not the row's serial id.
    let id = first.body["id"].as_str().unwrap().to_string();
    assert_eq!(uuid_version(&id), Some('4'), "{id}");
    assert_eq!(
        first.body,
        json!({"ok": true, "id": id, "status": "accepted"})
    );
    let c = pg.client().await.unwrap();
    let row = c
        .query_one("SELECT tenant_id::text, type, payload->>'JobId', published_at IS NULL FROM outbox_events", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), tenant(1));
    assert_eq!(row.get::<_, String>(1), "JobCreated");
    assert_eq!(row.get::<_, String>(2), "job-1");
    assert!(row.get::<_, bool>(3), "pending for the publisher");

    // The same request again (laid out differently): the stored answer, no new row.
    let again = format!(
        r#"{{ "payload": {{"Seq": 1, "JobId": "job-1"}}, "tenant_id": "{}", "type": "JobCreated" }}"#,
        tenant(1).to_uppercase()
    );
    let replay = post(&app, Some(&auth), Some("\"order-1\""), &again).await;
    assert_eq!((replay.status, &replay.body), (202, &first.body));
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    assert!(first.headers.get("idempotent-replayed").is_none());
    // The same key with another request: 422, nothing written.
    let other = post(
        &app,
        Some(&auth),
        Some("order-1"),
        &event(&tenant(1), 2).to_string(),
    )
    .await;
    assert_eq!(
        (other.status, other.body["error"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
    // Another key: another row.
    let second = post(&app, Some(&auth), Some("order-2"), &body).await;
    assert_eq!(second.status, 202);
    assert_ne!(second.body["id"], first.body["id"]);
    assert_eq!(rows(&pg).await, 2);
    // Keys are per tenant: the same key for another tenant is a new request.
    let auth_both = token(&[&tenant(1), &tenant(2)], &["publish"]);
    let t2 = post(
        &app,
        Some(&auth_both),
        Some("order-1"),
        &event(&tenant(2), 1).to_string(),
    )
    .await;
    assert_eq!(t2.status, 202);
    assert_eq!(rows(&pg).await, 3);
}

#[tokio::test]
async fn missing_keys_and_bad_bodies_are_refused_and_write_nothing() {
    let (redis, pg) = (RedisServer::start().unwrap(), migrated_postgres().await);
    let app = app(&redis, &pg, &[("publish_max_body_bytes", "2048")]).await;
    let auth = token(&["*"], &["publish"]);
    let good = event(&tenant(1), 1).to_string();
    let no_key = post(&app, Some(&auth), None, &good).await;
    assert_eq!(
        (no_key.status, no_key.body["field"].as_str()),
        (400, Some("Idempotency-Key"))
    );
    let bad_key = post(&app, Some(&auth), Some("has space"), &good).await;
    assert_eq!(bad_key.status, 400);
    for (body, field) in [
        ("not json", "body"),
        (
            r#"{"type":"JobCreated","tenant_id":"acme","payload":{}}"#,
            "tenant_id",
        ),
        (
            &*format!(r#"{{"tenant_id":"{}","payload":{{}}}}"#, tenant(1)),
            "type",
        ),
        (
            &*format!(r#"{{"type":"T","tenant_id":"{}"}}"#, tenant(1)),
            "payload",
        ),
    ] {
        let a = post(&app, Some(&auth), Some("k"), body).await;
        assert_eq!(
            (a.status, a.body["field"].as_str()),
            (400, Some(field)),
            "{body}"
        );
    }
    let big = json!({"type": "T", "tenant_id": tenant(1), "payload": "x".repeat(4096)}).to_string();
    let too_large = post(&app, Some(&auth), Some("k"), &big).await;
    assert_eq!(
        (too_large.status, too_large.body["max_bytes"].as_u64()),
        (413, Some(2048))
    );
    let text = client()
        .post(app.url("/crm-events"))
        .header("authorization", &auth)
        .header("idempotency-key", "k")
        .header("content-type", "text/plain")
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(text.status().as_u16(), 415);
    assert_eq!(rows(&pg).await, 0);
}

#[tokio::test]
async fn a_key_whose_request_is_still_running_is_409() {
    let (redis, pg) = (RedisServer::start().unwrap(), migrated_postgres().await);
    let app = app(&redis, &pg, &[]).await;
    let auth = token(&["*"], &["publish"]);
    // A request with this key is in its transaction: it holds the key's lock.
    let mut holder = pg.client().await.unwrap();
    let tx = holder.transaction().await.unwrap();
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1::text, 0))",
        &[&lock_name(&tenant(1), "busy")],
    )
    .await
    .unwrap();
    let busy = post(
        &app,
        Some(&auth),
        Some("busy"),
        &event(&tenant(1), 1).to_string(),
    )
    .await;
    assert_eq!(
        (busy.status, busy.body["error"].as_str()),
        (409, Some("idempotency_key_in_use"))
    );
    assert!(busy.headers.contains_key("retry-after"));
    tx.commit().await.unwrap();
    let done = post(
        &app,
        Some(&auth),
        Some("busy"),
        &event(&tenant(1), 1).to_string(),
    )
    .await;
    assert_eq!(done.status, 202);
    assert_eq!(rows(&pg).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_with_one_key_make_one_row() {
    let (redis, pg) = (RedisServer::start().unwrap(), migrated_postgres().await);
    let app = std::sync::Arc::new(app(&redis, &pg, &[]).await);
    let auth = token(&["*"], &["publish"]);
    let body = event(&tenant(1), 1).to_string();
    let attempts: Vec<_> = (0..20)
        .map(|_| {
            let (app, auth, body) = (app.clone(), auth.clone(), body.clone());
            tokio::spawn(async move { post(&app, Some(&auth), Some("same"), &body).await })
        })
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    for a in attempts {
        let a = a.await.unwrap();
        match a.status {
            202 => {
                ids.insert(a.body["id"].as_str().unwrap().to_string());
            }
            409 => assert_eq!(a.body["error"], "idempotency_key_in_use"),
            other => panic!("unexpected {other}: {}", a.body),
        }
    }
    assert_eq!(ids.len(), 1, "every 202 names the one row: {ids:?}");
    assert_eq!(rows(&pg).await, 1);
}

#[tokio::test]
async fn publishing_needs_the_permission_and_stays_in_the_tokens_tenants() {
    let (redis, pg) = (RedisServer::start().unwrap(), migrated_postgres().await);
    let app = app(&redis, &pg, &[]).await;
    let body = event(&tenant(1), 1).to_string();
    let anonymous = post(&app, None, Some("k"), &body).await;
    assert_eq!(
        (anonymous.status, anonymous.body["error"].as_str()),
        (401, Some("missing_token"))
    );
    assert!(anonymous.headers.contains_key("www-authenticate"));
    let reader = post(&app, Some(&token(&["*"], &[])), Some("k"), &body).await;
    assert_eq!(reader.status, 403, "a subscriber's token cannot publish");
    let other_tenant = post(
        &app,
        Some(&token(&[&tenant(2)], &["publish"])),
        Some("k"),
        &body,
    )
    .await;
    assert_eq!(other_tenant.status, 403, "{}", other_tenant.body);
    // The session cookie does not publish (a cross-site form could send it).
    let cookie = client()
        .post(app.url("/crm-events"))
        .header(
            "cookie",
            format!("crm_events_session={}", &token(&["*"], &["publish"])[7..]),
        )
        .header("idempotency-key", "k")
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(cookie.status().as_u16(), 401);
    assert_eq!(rows(&pg).await, 0);
    let ok = post(
        &app,
        Some(&token(&[&tenant(1)], &["publish"])),
        Some("k"),
        &body,
    )
    .await;
    assert_eq!(ok.status, 202);
    // The token never comes back.
    let text = ok.body.to_string();
    assert!(!text.contains("eyJ"), "{text}");
}

#[tokio::test]
async fn with_auth_off_the_publish_token_guards_publishing() {
    let (redis, pg) = (RedisServer::start().unwrap(), migrated_postgres().await);
    let body = event(&tenant(1), 1).to_string();
    let closed = app(&redis, &pg, &[("auth_mode", "none")]).await;
    let refused = post(&closed, None, Some("k"), &body).await;
    assert_eq!(refused.status, 403, "no publish_token: publishing is off");
    let open = app(
        &redis,
        &pg,
        &[("auth_mode", "none"), ("publish_token", "pub-s3cret")],
    )
    .await;
    assert_eq!(post(&open, None, Some("k"), &body).await.status, 401);
    let wrong = post(&open, Some("Bearer nope"), Some("k"), &body).await;
    assert_eq!(
        (wrong.status, wrong.body["error"].as_str()),
        (401, Some("invalid_token"))
    );
    assert!(!wrong.body.to_string().contains("pub-s3cret"));
    assert_eq!(
        post(&open, Some("Bearer pub-s3cret"), Some("k"), &body)
            .await
            .status,
        202
    );
    assert_eq!(rows(&pg).await, 1);
}

#[tokio::test]
async fn postgres_away_is_503_and_unmigrated_tables_are_500() {
    let redis = RedisServer::start().unwrap();
    let mut pg = Postgres::start().unwrap();
    let app = app(&redis, &pg, &[]).await;
    let auth = token(&["*"], &["publish"]);
    let body = event(&tenant(1), 1).to_string();
    let unmigrated = post(&app, Some(&auth), Some("k"), &body).await;
    assert_eq!(
        (unmigrated.status, unmigrated.body["error"].as_str()),
        (500, Some("configuration"))
    );
    assert!(unmigrated.body["message"]
        .as_str()
        .unwrap()
        .contains("crm-events-outbox migrate"));
    pg.stop();
    let away = post(&app, Some(&auth), Some("k"), &body).await;
    assert_eq!(
        (away.status, away.body["error"].as_str()),
        (503, Some("postgres_unavailable"))
    );
    assert!(away.headers.contains_key("retry-after"));
}

/// The version digit of a UUID in its canonical text form (`None` if it is not one).
fn uuid_version(text: &str) -> Option<char> {
    let groups: Vec<&str> = text.split('-').collect();
    let shape = groups.iter().map(|g| g.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12];
    let hex = text.chars().all(|c| c == '-' || c.is_ascii_hexdigit());
    (shape && hex).then(|| groups[2].chars().next()).flatten()
}
