//! Hostile clients against the real host and the real components, with a real
//! Redis: each way an anonymous or low-privileged client could stop the service or
//! widen its access, and what it gets instead.
//!
//! * connections: idle and half-sent heads are closed (slowloris), the connection
//!   caps answer `503`/`429` as JSON, and descriptor exhaustion (a lowered limit)
//!   never ends the listener: the host serves again once the attackers leave;
//! * bodies: half-sent bodies hold no instance (the host reads bodies before it
//!   takes one, and in its Spin-like mode the components read none they do not
//!   need), oversized bodies are refused before they are read;
//! * failed authentications: limited per address (`429` with `Retry-After`);
//! * claims: fractional and overflowing `exp`, `tenants` as a string or with `*`
//!   beside a tenant, `sub` missing or not a string, `crit`, a types-scoped
//!   publisher, a NUL in a payload;
//! * the viewer's headers (no framing, no inline script).

mod common;

use common::{client, App, Killed};
use crm_events_contracts::http::routes;
use crm_events_harness::redis_server::{free_port, RedisServer};
use crm_events_harness::sse_client::SseClient;
use crm_events_harness::tokens::{auth_vars, now, sign_claims, sign_with_header, token};
use crm_events_host::limits::ServerLimits;
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TENANT: &str = "7f3c6e1a-0d2b-4a57-9c1e-2b4f6d8a0c13";
const T: Duration = Duration::from_secs(20);

/// The app with access control on (EdDSA test key) and `extra` variables.
async fn app(
    redis: &RedisServer,
    extra: &[(&str, &str)],
    tune: impl FnOnce(&mut crm_events_host::HostConfig),
) -> App {
    let mut vars: Vec<(&str, String)> = auth_vars(&[Algorithm::EdDSA]);
    vars.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    App::start_tuned(redis, &vars, tune).await
}

fn addr(app: &App) -> String {
    app.base.trim_start_matches("http://").to_string()
}

/// Opens a connection and sends `head` (and nothing more).
async fn send_head(app_addr: &str, head: &str) -> TcpStream {
    let mut s = TcpStream::connect(app_addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

/// Everything the server sends until it closes, or `None` when it is still open
/// after `timeout`.
async fn read_to_close(s: &mut TcpStream, timeout: Duration) -> Option<String> {
    let mut out = Vec::new();
    match tokio::time::timeout(timeout, s.read_to_end(&mut out)).await {
        Ok(_) => Some(String::from_utf8_lossy(&out).into_owned()),
        Err(_) => None,
    }
}

/// The status and JSON body of a raw HTTP/1.1 response.
fn parse_response(raw: &str) -> (u16, Value) {
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {raw:?}"));
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A token with the given claims on top of a valid subject, tenant and hour.
fn token_with(overrides: Value) -> String {
    let mut claims =
        json!({"sub": "abuse", "tenants": [TENANT], "iat": now(), "exp": now() + 3600});
    for (k, v) in overrides.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    sign_claims(&claims)
}

/// `method path` with `headers`, bounded to 5 s.
async fn send(
    app: &App,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
) -> reqwest::Result<reqwest::Response> {
    let mut req = client()
        .request(method, app.url(path))
        .timeout(Duration::from_secs(5));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await
}

/// `GET path`'s status (`None` when it did not answer within 5 s).
async fn status_of(app: &App, path: &str, headers: &[(&str, &str)]) -> Option<u16> {
    let resp = send(app, reqwest::Method::GET, path, headers).await;
    resp.ok().map(|r| r.status().as_u16())
}

/// Half-sent requests to every route: each announces a 100-byte body and sends none.
async fn half_sent_bodies(app: &App, per_route: usize, no_publish: &str) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for head in half_sent_heads(per_route, no_publish) {
        held.push(send_head(&addr(app), &head).await);
    }
    held
}

/// The heads of [`half_sent_bodies`], `per_route` for each route in turn.
fn half_sent_heads(per_route: usize, no_publish: &str) -> Vec<String> {
    let paths = [
        "/",
        "/healthz",
        "/readyz",
        "/metrics",
        "/ops/crm-events",
        "/crm-events/session",
        "/crm-events",
    ];
    paths
        .iter()
        .flat_map(|path| std::iter::repeat_n(path, per_route))
        .map(|path| {
            format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {no_publish}\r\n\
                 Content-Type: application/json\r\nIdempotency-Key: k1\r\nContent-Length: 100\r\n\r\n"
            )
        })
        .collect()
}

/// While half-sent bodies are outstanding, every route still answers, and a valid
/// stream opens.
async fn assert_routes_answer(app: &App, good: &str) {
    for path in ["/healthz", "/", "/ops/crm-events"] {
        assert_eq!(status_of(app, path, &[]).await, Some(200), "{path} is held");
    }
    let ready = status_of(app, "/readyz", &[]).await;
    assert!(
        matches!(ready, Some(200 | 503)),
        "/readyz is held: {ready:?}"
    );
    let auth = bearer(good);
    let stream = tokio::time::timeout(
        Duration::from_secs(5),
        SseClient::connect(&app.url("/crm-events"), &[("authorization", &auth)]),
    )
    .await;
    assert!(stream.is_ok(), "a valid stream could not open");
}

/// Finding 2: half-sent bodies held every instance slot, so every route answered 500.
#[tokio::test]
async fn half_sent_bodies_hold_no_instance() {
    let redis = RedisServer::start().unwrap();
    let app = app(&redis, &[], |c| {
        c.max_instances = 20;
        c.limits.body_timeout = Duration::from_secs(2);
    })
    .await;
    let no_publish = token("reader", &[TENANT]);
    let mut held = half_sent_bodies(&app, 10, &no_publish).await;
    assert_routes_answer(&app, &no_publish).await;
    // The host ends each late body with a JSON 408 (not an instance's 500).
    for s in held.iter_mut() {
        let raw = read_to_close(s, Duration::from_secs(10))
            .await
            .expect("a late body is ended");
        let (status, body) = parse_response(&raw);
        assert!(status == 408 || status == 413, "{status}: {raw}");
        assert!(body["error"].is_string(), "{raw}");
    }
}

/// Finding 2 under Spin, where the host's body limits do not exist: no component
/// reads a body it does not need, and publishing checks the permission first.
#[tokio::test]
async fn in_spin_like_mode_half_sent_bodies_hold_no_route_either() {
    let redis = RedisServer::start().unwrap();
    let app = app(&redis, &[], |c| {
        c.max_instances = 20;
        c.limits.spin_like = true;
    })
    .await;
    let no_publish = token("reader", &[TENANT]);
    // Each attacker is answered without its body (the publish attempts with 403)
    // and keeps its connection open, its body never sent; the next comes after.
    // (Sent all at once, the 70 would be in flight together, past the cap of 20
    // instances: 500s, as under Spin, whatever the bodies.)
    let mut held = Vec::new();
    for head in half_sent_heads(10, &no_publish) {
        let mut attacker = send_head(&addr(&app), &head).await;
        let answer = first_bytes(&mut attacker).await;
        assert!(answer.starts_with("HTTP/1.1 "), "{head}: {answer}");
        assert!(!answer.starts_with("HTTP/1.1 500"), "{head}: {answer}");
        if head.starts_with("POST /crm-events HTTP") {
            assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
        }
        held.push(attacker);
    }
    assert_routes_answer(&app, &no_publish).await;
}

/// The first bytes the server sends on `s` (at least the status line).
async fn first_bytes(s: &mut TcpStream) -> String {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("answered without its body")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Finding 3: bodies on routes that take none were buffered whole, without limit.
/// Every route: 256 MiB announced where none is taken, 4 KiB past the session's and
/// the (lowered) publish limit.
#[tokio::test]
async fn bodies_past_a_routes_limit_are_refused_before_they_are_read() {
    let redis = RedisServer::start().unwrap();
    let app = app(&redis, &[("publish_max_body_bytes", "2048")], |_| {}).await;
    let no_body = routes::ALL
        .iter()
        .filter(|r| **r != routes::EVENTS && **r != routes::SESSION);
    let attempts = no_body
        .map(|r| (*r, 268_435_456u64))
        .chain([(routes::SESSION, 4096), (routes::EVENTS, 4096)]);
    for (path, length) in attempts {
        let head = format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n");
        let mut s = send_head(&addr(&app), &head).await;
        let raw = read_to_close(&mut s, Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("{path}: no answer before the body"));
        let (status, body) = parse_response(&raw);
        assert_eq!(status, 413, "{path}: {raw}");
        assert_eq!(body["error"], "payload_too_large", "{path}");
    }
    // Chunked, with no length to go by: refused once past the limit.
    let resp = client()
        .post(app.url("/healthz"))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(
            (0..64).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 1024])),
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
}

/// Bodies within their limits still add up: the bodies being received share a
/// memory budget, and a request past it gets 503 at once instead of memory.
#[tokio::test]
async fn bodies_being_received_share_a_memory_budget() {
    let redis = RedisServer::start().unwrap();
    let app = app(&redis, &[("publish_max_body_bytes", "4096")], |c| {
        c.limits.max_buffered_body_bytes = 8192;
        c.limits.body_timeout = Duration::from_secs(2);
    })
    .await;
    let head = "POST /crm-events HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\n\r\n";
    let mut held = [
        send_head(&addr(&app), head).await,
        send_head(&addr(&app), head).await,
    ];
    crm_events_harness::wait::until("the held bodies are being received", T, || async {
        app.host.body_budget_kib_left() == Some(0)
    })
    .await
    .unwrap();
    let mut third = send_head(&addr(&app), head).await;
    let raw = read_to_close(&mut third, Duration::from_secs(5))
        .await
        .unwrap();
    let (status, body) = parse_response(&raw);
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("server_busy")),
        "{raw}"
    );
    assert_eq!(status_of(&app, "/healthz", &[]).await, Some(200));
    // The held ones are ended by the body deadline.
    for s in held.iter_mut() {
        let raw = read_to_close(s, Duration::from_secs(10)).await.unwrap();
        assert_eq!(parse_response(&raw).0, 408, "{raw}");
    }
    // Spent no more: a whole body is read again (and its missing token refused).
    let resp = send(&app, reqwest::Method::POST, "/crm-events", &[])
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
}

/// Slowloris: a connection that sends no head, or half a head, is closed.
#[tokio::test]
async fn connections_that_do_not_send_a_head_are_closed() {
    let redis = RedisServer::start().unwrap();
    let app = app(&redis, &[], |c| {
        c.limits.header_timeout = Duration::from_secs(1)
    })
    .await;
    let mut idle = TcpStream::connect(addr(&app)).await.unwrap();
    let mut partial = send_head(&addr(&app), "GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
    let started = Instant::now();
    assert!(
        read_to_close(&mut idle, Duration::from_secs(5))
            .await
            .is_some(),
        "an idle connection stays open"
    );
    assert!(
        read_to_close(&mut partial, Duration::from_secs(5))
            .await
            .is_some(),
        "a partial head stays open"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(status_of(&app, "/healthz", &[]).await, Some(200));
}

/// The caps answer with JSON and free their places as connections close.
#[tokio::test]
async fn the_connection_caps_answer_503_and_429_as_json() {
    let redis = RedisServer::start().unwrap();
    for (limits, status) in [
        (
            ServerLimits {
                max_connections: 100,
                max_connections_per_address: 4,
                ..ServerLimits::default()
            },
            429,
        ),
        (
            ServerLimits {
                max_connections: 4,
                max_connections_per_address: 0,
                ..ServerLimits::default()
            },
            503,
        ),
    ] {
        let app = app(&redis, &[], |c| c.limits = limits).await;
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(send_head(&addr(&app), "GET /healthz HTTP/1.1\r\nHost: x\r\n").await);
        }
        // The fifth waits until the four are counted (they are accepted in order).
        let mut fifth = send_head(&addr(&app), "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let raw = read_to_close(&mut fifth, Duration::from_secs(5))
            .await
            .expect("an answer");
        let (got, body) = parse_response(&raw);
        assert_eq!(got, status, "{raw}");
        assert_eq!(body["error"], "too_many_connections");
        assert!(raw.to_ascii_lowercase().contains("retry-after: 1"), "{raw}");
        drop(held);
        crm_events_harness::wait::until("the places are free", T, || async {
            status_of(&app, "/healthz", &[]).await == Some(200)
        })
        .await
        .unwrap();
    }
}

/// The host as its own process with a descriptor limit of 128.
fn host_with_few_descriptors(redis: &RedisServer, port: u16, extra: &[&str]) -> Killed {
    use std::os::unix::process::CommandExt;
    let mut cmd = crm_events_harness::app::host_command(port, redis);
    cmd.args(["--variable", "auth_mode=none", "--max-instances", "8"])
        .args(extra)
        .env("RUST_LOG", "warn");
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| rlimit::setrlimit(rlimit::Resource::NOFILE, 128, 128));
    }
    let child = Killed(cmd.spawn().unwrap());
    crm_events_harness::app::wait_listening(port);
    child
}

/// `GET /healthz` on `port` answers 200 within `timeout`.
async fn healthz_answers(port: u16, timeout: Duration) -> bool {
    let url = format!("http://127.0.0.1:{port}/healthz");
    crm_events_harness::wait::until("/healthz answers", timeout, || async {
        let r = client()
            .get(&url)
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        r.is_ok_and(|r| r.status().as_u16() == 200)
    })
    .await
    .is_ok()
}

/// Finding 1: idle connections used up the descriptors, `accept` failed and the
/// listener ended for good. Here the cap is set past what the descriptors allow, so
/// `accept` does fail (EMFILE): the host backs off, and serves once they are gone.
#[tokio::test]
async fn the_host_serves_again_after_its_descriptors_ran_out() {
    let _ = rlimit::increase_nofile_limit(4096);
    let redis = RedisServer::start().unwrap();
    let port = free_port().unwrap();
    let mut host = host_with_few_descriptors(
        &redis,
        port,
        &[
            "--max-connections",
            "100000",
            "--header-timeout-ms",
            "60000",
        ],
    );
    // More than the 128 descriptors, and fewer than they and the listen queue hold
    // (past that, connects wait on SYN retransmissions).
    let mut attackers = Vec::new();
    for _ in 0..200 {
        attackers.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    // The host is out of descriptors: a request now cannot be served...
    let during = client()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(
        during.map(|r| r.status().as_u16() != 200).unwrap_or(true),
        "served while out of descriptors?"
    );
    // ...and once the attackers leave, it is.
    drop(attackers);
    let served = healthz_answers(port, T).await;
    assert!(host.alive(), "the host exited");
    assert!(
        served,
        "the host does not serve after its descriptors came back"
    );
}

/// With the default cap, the host keeps the connections within its descriptors:
/// the ones past it get a JSON 503, and nothing fails.
#[tokio::test]
async fn by_default_the_connection_cap_fits_the_descriptor_limit() {
    let _ = rlimit::increase_nofile_limit(4096);
    let redis = RedisServer::start().unwrap();
    let port = free_port().unwrap();
    let _host = host_with_few_descriptors(&redis, port, &["--header-timeout-ms", "60000"]);
    let mut attackers = Vec::new();
    for _ in 0..100 {
        attackers.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    // 128 descriptors less the reserve and 2 per instance leave 48 connections (two
    // more are allowed for the start-up probes, whose close may not be counted yet).
    // Without the cap they would get no answer at all; a loaded machine (CI runs
    // lint beside the tests) may take seconds to write the answers, so wait long.
    for (i, s) in attackers.iter_mut().enumerate().skip(50) {
        let raw = read_to_close(s, T)
            .await
            .unwrap_or_else(|| panic!("connection {i} past the cap got no answer"));
        let (status, body) = parse_response(&raw);
        assert_eq!(
            (status, body["error"].as_str()),
            (503, Some("too_many_connections")),
            "{raw}"
        );
    }
    drop(attackers);
    let served = healthz_answers(port, T).await;

    assert!(served);
}

/// Finding 4: failed authentications were not limited. Two addresses behind a
/// trusted proxy: the one that fails gets 429 (even with a good token, until the
/// window ends); the other streams on. A missing token is not a failure.
#[tokio::test]
async fn failed_authentications_are_limited_per_address() {
    let redis = RedisServer::start().unwrap();
    let app = app(
        &redis,
        &[
            ("max_auth_failures_per_minute", "3"),
            ("trusted_proxies", "127.0.0.1"),
        ],
        |_| {},
    )
    .await;
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    let attacker = "203.0.113.9";
    for _ in 0..5 {
        assert_eq!(
            status_of(&app, "/crm-events", &from("192.0.2.1")).await,
            Some(401)
        );
    }
    let bad = bearer("eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln");
    for _ in 0..3 {
        let h = [
            ("x-forwarded-for", attacker),
            ("authorization", bad.as_str()),
        ];
        assert_eq!(status_of(&app, "/crm-events", &h).await, Some(401));
    }
    let good = bearer(&token("ann", &[TENANT]));
    let as_attacker = [
        ("x-forwarded-for", attacker),
        ("authorization", good.as_str()),
    ];
    let resp = send(&app, reqwest::Method::GET, "/crm-events", &as_attacker)
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "too_many_auth_failures");
    let session = send(
        &app,
        reqwest::Method::POST,
        "/crm-events/session",
        &as_attacker,
    )
    .await
    .unwrap();
    assert_eq!(
        session.status().as_u16(),
        429,
        "the session route shares the limit"
    );
    let other = [
        ("x-forwarded-for", "198.51.100.7"),
        ("authorization", good.as_str()),
    ];
    SseClient::connect(&app.url("/crm-events"), &other).await;
}

/// 401 with a JSON body for `token` on the stream route.
async fn assert_refused(app: &App, token: &str, what: &str) {
    let auth = bearer(token);
    let resp = send(
        app,
        reqwest::Method::GET,
        "/crm-events",
        &[("authorization", &auth)],
    )
    .await
    .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 401, "{what}: {body}");
    assert_eq!(body["error"], "invalid_token", "{what}");
}

/// Findings 6-8 and 10: claims read as their RFCs type them, nothing widened.
#[tokio::test]
async fn claims_are_read_strictly() {
    let redis = RedisServer::start().unwrap();
    let app = app(&redis, &[], |_| {}).await;
    assert_refused(
        &app,
        &token_with(json!({"exp": u64::MAX})),
        "exp = 2^64 - 1",
    )
    .await;
    assert_refused(&app, &token_with(json!({"exp": 1e300})), "exp = 1e300").await;
    assert_refused(
        &app,
        &token_with(json!({"tenants": format!("{TENANT},*")})),
        "tenants as a string",
    )
    .await;
    assert_refused(
        &app,
        &token_with(json!({"tenants": [TENANT, "*"]})),
        "* beside a tenant",
    )
    .await;
    assert_refused(&app, &token_with(json!({"sub": null})), "no sub").await;
    assert_refused(&app, &token_with(json!({"sub": 42})), "a numeric sub").await;
    let claims = json!({"sub": "c", "tenants": [TENANT], "exp": now() + 3600});
    let crit = sign_with_header(
        &json!({"alg": "EdDSA", "typ": "JWT", "crit": ["x-ext"], "x-ext": 1}),
        &claims,
    );
    assert_refused(&app, &crit, "an unknown crit").await;
    // A plain header with the same claims is fine (the refusal is the crit's).
    let plain = sign_with_header(&json!({"alg": "EdDSA", "typ": "JWT"}), &claims);
    let _open = SseClient::connect(
        &app.url("/crm-events"),
        &[("authorization", &bearer(&plain))],
    )
    .await;
    // Nothing leaked: no instance or lease is left behind by the refusals.
    app.wait_live_instances(1, T).await;
}

/// Finding 5: a fractional `exp` lost the stream's expiry and the cookie's lifetime.
#[tokio::test]
async fn a_fractional_exp_ends_the_stream_and_the_session_on_time() {
    let redis = RedisServer::start().unwrap();
    let app = app(&redis, &[], |_| {}).await;
    let exp = now() as f64 + 3.5;
    let t = token_with(json!({"exp": exp}));
    let session = client()
        .post(app.url("/crm-events/session"))
        .header("authorization", bearer(&t))
        .send()
        .await
        .unwrap();
    assert_eq!(session.status().as_u16(), 200);
    let cookie = session.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    let body: Value = session.json().await.unwrap();
    assert_eq!(body["expires_at"], json!(exp.floor() as u64), "{body}");
    let max_age: u64 = cookie
        .split("Max-Age=")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!((1..=4).contains(&max_age), "{cookie}");
    let mut stream =
        SseClient::connect(&app.url("/crm-events"), &[("authorization", &bearer(&t))]).await;
    let expired = stream
        .wait_raw(Duration::from_secs(15), |raw| {
            raw.contains("event: auth_expired")
        })
        .await;
    assert!(expired, "no auth_expired: {}", stream.raw());
}

/// Finding 9 and 12: a types-scoped publisher publishes only its types, and a NUL in
/// a payload is the client's error (400), not an outage (503). Neither reaches
/// Postgres, so none runs here.
#[tokio::test]
async fn publishing_is_held_to_the_types_scope_and_refuses_nul() {
    let redis = RedisServer::start().unwrap();
    let app = app(&redis, &[("postgres_host", "127.0.0.1:1")], |_| {}).await;
    let scoped = token_with(json!({"types": ["JobCreated"], "permissions": ["publish"]}));
    let publish = |token: String, body: String| {
        let app_url = app.url("/crm-events");
        async move {
            let resp = client()
                .post(app_url)
                .header("authorization", bearer(&token))
                .header("idempotency-key", "abuse-1")
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let other_type =
        format!(r#"{{"type":"ContactUpdated","tenant_id":"{TENANT}","payload":{{}}}}"#);
    let (status, body) = publish(scoped.clone(), other_type).await;
    assert_eq!(status, 403, "{body}");
    let nul = format!(
        r#"{{"type":"JobCreated","tenant_id":"{TENANT}","payload":{{"note":"a\u0000b"}}}}"#
    );
    let (status, body) = publish(scoped, nul).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("payload")),
        "{body}"
    );
}

/// Finding 8: `crm-events-sidecar token` needs `--sub` and says whom it minted for.
#[test]
fn the_token_command_requires_a_subject_and_prints_it() {
    let dir = std::env::temp_dir().join(format!("crm-events-abuse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pem = dir.join("private.pem");
    std::fs::write(
        &pem,
        &crm_events_harness::tokens::keys(Algorithm::EdDSA).private_pem,
    )
    .unwrap();
    let run = |extra: &[&str]| {
        std::process::Command::new(crm_events_harness::app::binary("crm-events-sidecar"))
            .args(["token", "--key", pem.to_str().unwrap(), "--tenant", TENANT])
            .args(extra)
            .output()
            .unwrap()
    };
    let without = run(&[]);
    assert!(!without.status.success());
    assert!(String::from_utf8_lossy(&without.stderr).contains("--sub"));
    let with = run(&["--sub", "ann@example.com"]);
    assert!(with.status.success());
    assert!(String::from_utf8_lossy(&with.stderr).contains(r#"sub="ann@example.com""#));
    assert_eq!(
        String::from_utf8_lossy(&with.stdout)
            .trim()
            .split('.')
            .count(),
        3
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Finding 13: the viewer could be framed by any site, and its policy had to allow
/// inline script.
#[tokio::test]
async fn the_viewer_cannot_be_framed_and_runs_no_inline_script() {
    let redis = RedisServer::start().unwrap();
    let app = app(&redis, &[], |_| {}).await;
    let page = send(&app, reqwest::Method::GET, "/ops/crm-events", &[])
        .await
        .unwrap();
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let html = page.text().await.unwrap();
    for tag in html.split("<script").skip(1) {
        let open = tag.split('>').next().unwrap();
        assert!(open.contains("src="), "an inline script: <script{open}>");
    }
    assert!(!html.contains("<style"), "an inline style");
    let content_type = |r: &reqwest::Response| {
        let value = r.headers()["content-type"].to_str().unwrap();
        value.split(';').next().unwrap().to_string()
    };
    let get = reqwest::Method::GET;
    let script = send(&app, get.clone(), "/ops/crm-events/viewer.js", &[])
        .await
        .unwrap();
    assert_eq!(script.status().as_u16(), 200);
    assert_eq!(content_type(&script), "text/javascript");
    let style = send(&app, get, "/ops/crm-events/viewer.css", &[])
        .await
        .unwrap();
    assert_eq!(content_type(&style), "text/css");
}
