//! Access control through the real `sse` and `session` components on the host,
//! against a real Redis: token verification (each algorithm, tampering, `none`,
//! algorithm confusion, times, issuer, audience, key ids and rotation), how tokens
//! arrive (header, cookie, query), scopes (403, no leak across tenants under load,
//! on resume and replay alike), expiry with exact resume, limits (429) and the
//! scrape token.

mod common;

use common::{client, get_text, App};
use crm_events_contracts::keys::Keys;
use crm_events_harness::redis_server::RedisServer;
use crm_events_harness::sse_client::{stream_id, SseClient};
use crm_events_harness::tokens::{self, auth_vars, claims, sign, token};
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

/// The app with access control on, accepting the test keys of `algs`, plus `extra`.
async fn app(redis: &RedisServer, algs: &[Algorithm], extra: &[(&str, &str)]) -> App {
    let mut vars = auth_vars(algs);
    vars.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    App::start(redis, &vars).await
}

/// GETs `/crm-events` with headers; returns status, headers and the body when the
/// answer is not a stream.
async fn attempt(
    app: &App,
    query: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = client().get(app.url(&format!("/crm-events{query}")));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    if status == 200 {
        return (status, headers, Value::Null);
    }
    let body = resp.text().await.unwrap();
    let json =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {body}"));
    (status, headers, json)
}

/// A stream attempt with `auth`, from `ip` (a trusted proxy's `X-Forwarded-For`).
async fn attempt_from(app: &App, auth: &str, ip: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    attempt(app, "", &[("authorization", auth), ("x-forwarded-for", ip)]).await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Asserts a 401 with RFC 6750's header and a JSON body that does not echo `token`.
async fn assert_401(app: &App, token: &str, description: &str) {
    let (status, headers, body) = attempt(app, "", &[("authorization", &bearer(token))]).await;
    assert_eq!(status, 401, "{description}: {body}");
    let www = headers["www-authenticate"].to_str().unwrap();
    assert!(
        www.starts_with(r#"Bearer realm="crm-events", error="invalid_token""#),
        "{www}"
    );
    assert_eq!(body["error"], "invalid_token", "{description}");
    assert!(
        body["message"].as_str().unwrap().contains(description),
        "{description}: {body}"
    );
    let text = body.to_string();
    assert!(
        !text.contains(token) && !www.contains(token),
        "the token is echoed"
    );
}

/// Appends an event of `tenant` to the streams as the sidecar would; returns its id
/// in the stream its subscribers read (the tenant's, or the all-tenants stream).
fn add(conn: &mut redis::Connection, offset: i64, tenant: Option<&str>, kind: &str) -> String {
    let value = match tenant {
        Some(t) => format!(r#"{{"Type":"{kind}","TenantId":"{t}","Seq":{offset}}}"#),
        None => format!(r#"{{"Type":"{kind}","Seq":{offset}}}"#),
    };
    let (all, theirs) =
        common::stream::append_both(conn, "*", offset, Some(kind.as_bytes()), &value);
    theirs.unwrap_or(all)
}

#[tokio::test]
async fn every_allowed_algorithm_verifies_and_streams() {
    let redis = RedisServer::start().unwrap();
    let algs = [
        Algorithm::EdDSA,
        Algorithm::ES256,
        Algorithm::RS256,
        Algorithm::HS256,
    ];
    let app = app(&redis, &algs, &[]).await;
    for alg in algs {
        let t = sign(alg, None, &claims("ops", &["*"], 600));
        let mut c =
            SseClient::connect(&app.url("/crm-events"), &[("authorization", &bearer(&t))]).await;
        let (_, connected) = c.next_json(T).await.expect("connected");
        assert_eq!(connected["kind"], "connected", "{alg:?}");
    }
    // PEM keys have no kid: a token that names one is still checked against them.
    let with_kid = sign(
        Algorithm::EdDSA,
        Some("2026-11"),
        &claims("ops", &["*"], 600),
    );
    let (status, _, body) = attempt(&app, "", &[("authorization", &bearer(&with_kid))]).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn bad_tokens_get_401_with_rfc_6750_headers_and_never_an_echo() {
    let redis = RedisServer::start().unwrap();
    let app = app(
        &redis,
        &[Algorithm::EdDSA, Algorithm::RS256],
        &[
            ("auth_issuer", "https://idp.example"),
            ("auth_audience", "crm-events"),
        ],
    )
    .await;
    let good = |c: Value| {
        let mut c = c;
        c["iss"] = json!("https://idp.example");
        c["aud"] = json!("crm-events");
        c
    };
    let valid = sign(Algorithm::EdDSA, None, &good(claims("u", &["*"], 600)));
    let (status, _, _) = attempt(&app, "", &[("authorization", &bearer(&valid))]).await;
    assert_eq!(status, 200, "the valid token itself is accepted");

    // A flipped signature byte.
    let mut tampered = valid.clone().into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    assert_401(
        &app,
        &String::from_utf8(tampered).unwrap(),
        "signature is invalid",
    )
    .await;
    // alg: none, unsigned.
    let b64 = |v: &Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg":"none","typ":"JWT"})),
        b64(&good(claims("u", &["*"], 600)))
    );
    assert_401(&app, &none, "malformed").await;
    // Not allowed: ES256 is not in this app's list.
    let es = sign(Algorithm::ES256, None, &good(claims("u", &["*"], 600)));
    assert_401(&app, &es, "algorithm is not allowed").await;
    // Times, issuer, audience, no exp: one claim changed (null: removed) each.
    let now = tokens_now();
    let cases = [
        ("exp", json!(now - 120), "expired"),
        ("nbf", json!(now + 600), "not valid yet"),
        ("iat", json!(now + 600), "not valid yet"),
        ("iss", json!("https://evil.example"), "issuer"),
        ("aud", json!("another-service"), "audience"),
        ("exp", Value::Null, "no expiry"),
    ];
    for (claim, value, why) in cases {
        let mut c = good(claims("u", &["*"], 600));
        match value {
            Value::Null => c.as_object_mut().unwrap().remove(claim),
            v => c.as_object_mut().unwrap().insert(claim.to_string(), v),
        };
        assert_401(&app, &sign(Algorithm::EdDSA, None, &c), why).await;
    }
    assert_401(&app, "not-a-jwt", "malformed").await;
}

fn tokens_now() -> u64 {
    crm_events_sidecar::token::now()
}

/// An RS256 public key is never an HMAC secret: HS256 signed with the public key's
/// PEM bytes is refused, even when HS256 itself is allowed (with its own secret).
#[tokio::test]
async fn algorithm_confusion_is_refused() {
    let redis = RedisServer::start().unwrap();
    let rsa_public = tokens::keys(Algorithm::RS256).public_pem.clone();
    let forged = crm_events_sidecar::token::sign(
        Algorithm::HS256,
        rsa_public.as_bytes(),
        None,
        &claims("mallory", &["*"], 600),
    )
    .unwrap();
    let rs_only = app(&redis, &[Algorithm::RS256], &[]).await;
    assert_401(&rs_only, &forged, "algorithm is not allowed").await;
    let both = app(&redis, &[Algorithm::RS256, Algorithm::HS256], &[]).await;
    assert_401(&both, &forged, "signature is invalid").await;
}

#[tokio::test]
async fn key_ids_select_keys_and_rotation_keeps_both_valid() {
    let redis = RedisServer::start().unwrap();
    let jwk = |alg: Algorithm, kid: &str| {
        let pem = &tokens::keys(alg).public_pem;
        let key = jsonwebtoken::DecodingKey::from_ed_pem(pem.as_bytes())
            .or_else(|_| jsonwebtoken::DecodingKey::from_ec_pem(pem.as_bytes()))
            .unwrap();
        let mut v = serde_json::to_value(
            jsonwebtoken::jwk::Jwk::from_decoding_key(&key, Some(alg)).unwrap(),
        )
        .unwrap();
        v["kid"] = json!(kid);
        v
    };
    // Overlap: the old (EdDSA, "2026-10") and the new (ES256, "2026-11") key.
    let jwks =
        json!({"keys": [jwk(Algorithm::EdDSA, "2026-10"), jwk(Algorithm::ES256, "2026-11")]})
            .to_string();
    let app = App::start(
        &redis,
        &[
            ("auth_mode", "jwt"),
            ("auth_jwks", &jwks),
            ("auth_algorithms", "EdDSA,ES256"),
        ],
    )
    .await;
    for (alg, kid) in [(Algorithm::EdDSA, "2026-10"), (Algorithm::ES256, "2026-11")] {
        let t = sign(alg, Some(kid), &claims("u", &["*"], 600));
        let (status, _, body) = attempt(&app, "", &[("authorization", &bearer(&t))]).await;
        assert_eq!(status, 200, "{kid}: {body}");
    }
    let unknown = sign(Algorithm::EdDSA, Some("2025-01"), &claims("u", &["*"], 600));
    assert_401(&app, &unknown, "no key matches").await;
    // The right key id with the other key's signature does not pass either.
    let crossed = sign(Algorithm::EdDSA, Some("2026-11"), &claims("u", &["*"], 600));
    assert_401(&app, &crossed, "no key matches").await;
}

#[tokio::test]
async fn missing_or_garbled_credentials_get_401() {
    let redis = RedisServer::start().unwrap();
    let app = app(&redis, &[Algorithm::EdDSA], &[]).await;
    let (status, headers, body) = attempt(&app, "", &[]).await;
    assert_eq!(status, 401);
    assert_eq!(headers["www-authenticate"], r#"Bearer realm="crm-events""#);
    assert_eq!(body["error"], "missing_token");
    for (name, value) in [
        ("authorization", "Basic dXNlcjpwYXNz"),
        ("authorization", "Bearer"),
        ("cookie", "crm_events_session=garbage"),
    ] {
        let (status, _, body) = attempt(&app, "", &[(name, value)]).await;
        assert_eq!(status, 401, "{name}: {value}: {body}");
        assert_eq!(body["error"], "invalid_token");
    }
    // A query token is ignored unless enabled.
    let t = token("u", &["*"]);
    let (status, _, _) = attempt(&app, &format!("?access_token={t}"), &[]).await;
    assert_eq!(status, 401);
    let open = app_with_query_tokens(&redis).await;
    let (status, _, _) = attempt(&open, &format!("?access_token={t}"), &[]).await;
    assert_eq!(status, 200);
}

async fn app_with_query_tokens(redis: &RedisServer) -> App {
    app(redis, &[Algorithm::EdDSA], &[("auth_query_token", "true")]).await
}

#[tokio::test]
async fn the_session_route_trades_a_token_for_a_strict_cookie() {
    let redis = RedisServer::start().unwrap();
    let app = app(&redis, &[Algorithm::EdDSA], &[]).await;
    let t = sign(
        Algorithm::EdDSA,
        None,
        &claims("alice", &["tenant-a", "tenant-b"], 300),
    );
    let resp = client()
        .post(app.url("/crm-events/session"))
        .header("authorization", bearer(&t))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let max_age: u64 = cookie
        .split("Max-Age=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (295..=300).contains(&max_age),
        "cookie lifetime {max_age} is capped at the token's exp"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["subject"], "alice");
    assert_eq!(body["tenants"], json!(["tenant-a", "tenant-b"]));
    assert!(
        !body.to_string().contains(&t),
        "the body does not echo the token"
    );

    let pair = cookie.split(';').next().unwrap().to_string();
    let who: Value = client()
        .get(app.url("/crm-events/session"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(who["subject"], "alice");
    let mut c = SseClient::connect(
        &app.url("/crm-events?tenant=tenant-a"),
        &[("cookie", &pair)],
    )
    .await;
    assert_eq!(c.next_json(T).await.unwrap().1["kind"], "connected");

    let bye = client()
        .delete(app.url("/crm-events/session"))
        .send()
        .await
        .unwrap();
    assert!(bye.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    // A session cannot be opened with a bad token, nor from a cookie.
    let bad = client()
        .post(app.url("/crm-events/session"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 401);
}

#[tokio::test]
async fn query_filters_may_narrow_the_scope_but_never_widen_it() {
    let redis = RedisServer::start().unwrap();
    let app = app(&redis, &[Algorithm::EdDSA], &[]).await;
    let t = bearer(&token("bob", &["tenant-a"]));
    let (status, _, body) = attempt(&app, "?tenant=tenant-b", &[("authorization", &t)]).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
    let (status, _, _) = attempt(&app, "?tenant=tenant-a", &[("authorization", &t)]).await;
    assert_eq!(status, 200);
    let mut typed = claims("carol", &["*"], 600);
    typed["types"] = json!(["JobCreated"]);
    let typed = bearer(&sign(Algorithm::EdDSA, None, &typed));
    let (status, _, _) = attempt(&app, "?type=JobDeleted", &[("authorization", &typed)]).await;
    assert_eq!(status, 403);
    let no_tenants = bearer(&sign(
        Algorithm::EdDSA,
        None,
        &json!({"sub": "dan", "exp": tokens_now() + 600}),
    ));
    let (status, _, body) = attempt(&app, "", &[("authorization", &no_tenants)]).await;
    assert_eq!(status, 403, "a token without tenants sees nothing: {body}");
}

/// 10 tenants × 20 subscribers, 5,000 events mixed across tenants (and some without
/// a tenant): every subscriber gets exactly its tenant's events, in order, live,
/// after a `Last-Event-ID` resume and on a `since=` replay. One subscriber per tenant
/// holds a token for two tenants and reads one of them with `?tenant=`.
#[tokio::test]
async fn no_event_crosses_tenants_under_load_live_resumed_or_replayed() {
    let redis = RedisServer::start().unwrap();
    let app = app(
        &redis,
        &[Algorithm::EdDSA],
        &[("max_streams_per_address", "0")],
    )
    .await;
    let tenant = |i: usize| format!("tenant-{i}");
    // Per subscriber: its token's tenants, the tenant it reads.
    let subscribers: Vec<(Vec<String>, String)> = (0..200)
        .map(|s| {
            let (t, j) = (s / 20, s % 20);
            match j {
                0 => (vec![tenant(t), tenant((t + 1) % 10)], tenant(t)),
                _ => (vec![tenant(t)], tenant(t)),
            }
        })
        .collect();
    let url = |reads: &str| app.url(&format!("/crm-events?tenant={reads}"));
    let auth_of = |s: usize| {
        let refs: Vec<&str> = subscribers[s].0.iter().map(String::as_str).collect();
        bearer(&token(&format!("user-{s}"), &refs))
    };
    let mut clients = Vec::new();
    for (s, (_, reads)) in subscribers.iter().enumerate() {
        let mut c = SseClient::connect(&url(reads), &[("authorization", &auth_of(s))]).await;
        c.next(T).await.expect("connected");
        clients.push(c);
    }
    let mut conn = redis.connection().unwrap();
    let mut all: Vec<(String, Option<String>)> = Vec::new();
    for i in 0..5_000i64 {
        let t = (i % 11 != 10).then(|| tenant((i as usize * 7) % 10));
        let id = add(&mut conn, i, t.as_deref(), "JobUpdated");
        all.push((id, t));
    }
    // The ids of `reads`' events after the first `after` events.
    let expected = |reads: &str, after: usize| -> Vec<String> {
        all[after..]
            .iter()
            .filter(|(_, t)| t.as_deref() == Some(reads))
            .map(|(id, _)| id.clone())
            .collect()
    };
    let tasks: Vec<_> = clients
        .into_iter()
        .zip(subscribers.clone())
        .map(|(mut c, (_, reads))| {
            let want = expected(&reads, 0);
            tokio::spawn(async move {
                let got = c.domain_events(want.len(), Duration::from_secs(120)).await;
                let ids: Vec<&str> = got.iter().map(|(id, _)| stream_id(id)).collect();
                assert_eq!(ids, want, "reading {reads}");
                // Nothing more arrives for it.
                assert!(c
                    .next_json(Duration::from_millis(300))
                    .await
                    .is_none_or(|(_, e)| e["kind"] != "domain_event"));
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    // Resume from the middle and replay from the start, for a sample of subscribers.
    for s in (0..200).step_by(23) {
        let reads = &subscribers[s].1;
        let auth = auth_of(s);
        let middle = (0..2_500)
            .rev()
            .find(|i| all[*i].1.as_deref() == Some(reads.as_str()))
            .unwrap();
        let mut resumed = SseClient::connect(
            &url(reads),
            &[("authorization", &auth), ("last-event-id", &all[middle].0)],
        )
        .await;
        let want = expected(reads, middle + 1);
        let ids: Vec<String> = resumed.domain_stream_ids(want.len(), T).await;
        assert_eq!(ids, want, "resume, reading {reads}");
        let mut replay = SseClient::connect(
            &format!("{}&since=0", url(reads)),
            &[("authorization", &auth)],
        )
        .await;
        let want = expected(reads, 0);
        let ids: Vec<String> = replay.domain_stream_ids(want.len(), T).await;
        assert_eq!(ids, want, "replay, reading {reads}");
    }
}

/// The stream ends at the token's `exp` with an `auth_expired` event; a new token and
/// `Last-Event-ID` resume exactly, events added in between included.
#[tokio::test]
async fn a_stream_ends_at_exp_and_resumes_exactly_with_a_new_token() {
    let redis = RedisServer::start().unwrap();
    let app = app(&redis, &[Algorithm::EdDSA], &[("auth_leeway_seconds", "0")]).await;
    let mut conn = redis.connection().unwrap();
    let short = bearer(&sign(Algorithm::EdDSA, None, &claims("eve", &["t1"], 3)));
    let mut c = SseClient::connect(&app.url("/crm-events"), &[("authorization", &short)]).await;
    c.next(T).await.expect("connected");
    let first: Vec<String> = (0..5)
        .map(|i| add(&mut conn, i, Some("t1"), "JobCreated"))
        .collect();
    let got = c.domain_events(5, T).await;
    let last_seen = got.last().unwrap().0.clone();
    assert_eq!(stream_id(&last_seen), first[4]);
    let ended = loop {
        let e = c
            .next(Duration::from_secs(10))
            .await
            .expect("the auth_expired event before the end");
        if e.event == "auth_expired" {
            break e;
        }
    };
    let body: Value = serde_json::from_str(&ended.data).unwrap();
    assert_eq!(body["kind"], "auth_expired");
    assert_eq!(body["resume_from"], json!(last_seen));
    assert!(
        c.next(Duration::from_secs(5)).await.is_none(),
        "the stream ended"
    );

    let later: Vec<String> = (5..8)
        .map(|i| add(&mut conn, i, Some("t1"), "JobCreated"))
        .collect();
    let fresh = bearer(&token("eve", &["t1"]));
    let mut again = SseClient::connect(
        &app.url("/crm-events"),
        &[("authorization", &fresh), ("last-event-id", &last_seen)],
    )
    .await;
    let ids: Vec<String> = again.domain_stream_ids(3, T).await;
    assert_eq!(ids, later, "exactly the events after the last one seen");
}

#[tokio::test]
async fn per_subject_per_address_and_rate_limits_answer_429_and_recover() {
    let redis = RedisServer::start().unwrap();
    // A 1 s keepalive: a stream notices its client is gone within a couple of seconds.
    let app = app(
        &redis,
        &[Algorithm::EdDSA],
        &[
            ("max_streams_per_subject", "2"),
            ("max_streams_per_address", "3"),
            ("trusted_proxies", "127.0.0.1"),
            ("keepalive_seconds", "1"),
        ],
    )
    .await;
    let alice = bearer(&token("alice", &["*"]));
    let open = |auth: String, ip: &'static str| {
        let url = app.url("/crm-events");
        async move {
            SseClient::connect(&url, &[("authorization", &auth), ("x-forwarded-for", ip)]).await
        }
    };
    let a1 = open(alice.clone(), "198.51.100.1").await;
    let _a2 = open(alice.clone(), "198.51.100.2").await;
    let (status, headers, body) = attempt_from(&app, &alice, "198.51.100.3").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("too_many_streams")),
        "{body}"
    );
    assert!(
        headers["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert_eq!(body["limit"], 2);
    // Closing a stream frees its slot.
    drop(a1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let _a3 = loop {
        let url = app.url("/crm-events");
        let resp = client()
            .get(url)
            .header("authorization", &alice)
            .header("x-forwarded-for", "198.51.100.4")
            .send()
            .await
            .unwrap();
        if resp.status().as_u16() == 200 {
            break resp;
        }
        assert_eq!(resp.status().as_u16(), 429);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed stream's lease was never released"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // Per address: three subjects from one address, a fourth is refused.
    let mut held = Vec::new();
    for s in ["bob", "carol", "dave"] {
        held.push(open(bearer(&token(s, &["*"])), "203.0.113.9").await);
    }
    let erin = bearer(&token("erin", &["*"]));
    let (status, _, body) = attempt_from(&app, &erin, "203.0.113.9").await;
    assert_eq!((status, body["limit"].as_u64()), (429, Some(3)));

    // A dead instance's leases expire: age them past their expiry, and the address
    // is free again without any release.
    let mut conn = redis.connection().unwrap();
    let key = Keys::default().sse_address_leases("203.0.113.9");
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(&key)
        .arg(0)
        .arg(-1)
        .query(&mut conn)
        .unwrap();
    assert_eq!(members.len(), 3);
    for m in &members {
        let () = redis::cmd("ZADD")
            .arg(&key)
            .arg(1)
            .arg(m)
            .query(&mut conn)
            .unwrap();
    }
    let (status, _, body) = attempt_from(&app, &erin, "203.0.113.9").await;
    assert_eq!(status, 200, "{body}");
}

/// Stream openings per address per minute: the window counts every opening, and
/// other addresses are not affected.
#[tokio::test]
async fn openings_per_address_per_minute_answer_429_with_retry_after() {
    let redis = RedisServer::start().unwrap();
    let app = app(
        &redis,
        &[Algorithm::EdDSA],
        &[
            ("max_connects_per_minute", "3"),
            ("trusted_proxies", "127.0.0.1"),
        ],
    )
    .await;
    let fay = bearer(&token("fay", &["*"]));
    for _ in 0..3 {
        let (status, _, _) = attempt_from(&app, &fay, "192.0.2.50").await;
        assert_eq!(status, 200);
    }
    let (status, headers, body) = attempt_from(&app, &fay, "192.0.2.50").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("rate_limited")),
        "{body}"
    );
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let (status, _, _) = attempt_from(&app, &fay, "192.0.2.51").await;
    assert_eq!(status, 200, "another address has its own window");
}

#[tokio::test]
async fn metrics_need_the_scrape_token_when_one_is_set() {
    let redis = RedisServer::start().unwrap();
    let app = App::start(&redis, &[("metrics_token", "scrape-me-please")]).await;
    let plain = client().get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(plain.status().as_u16(), 401);
    let wrong = client()
        .get(app.url("/metrics"))
        .header("authorization", "Bearer scrape-me")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    let ok = client()
        .get(app.url("/metrics"))
        .header("authorization", "Bearer scrape-me-please")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    // Nothing secret in / and /readyz.
    for path in ["/", "/readyz"] {
        let text = get_text(&app.url(path)).await;
        assert!(!text.contains("scrape-me-please"), "{path}: {text}");
    }
}

#[tokio::test]
async fn readyz_reports_auth_without_key_material_and_fails_without_keys() {
    let redis = RedisServer::start().unwrap();
    let app = app(&redis, &[Algorithm::EdDSA], &[]).await;
    let body: Value = client()
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["checks"]["auth"], "jwt (1 keys)");
    assert!(!body.to_string().contains("BEGIN"));
    let keyless = App::start(&redis, &[("auth_mode", "jwt")]).await;
    let resp = client().get(keyless.url("/readyz")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["failed"].as_array().unwrap().contains(&json!("auth")),
        "{body}"
    );
    let (status, _, body) = attempt(&keyless, "", &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (500, Some("configuration"))
    );
}
