//! Every route of the app, through the real components on the test host, against
//! a real redis-server.

mod common;

use common::{client, get_text, App};
use crm_events_contracts::keys::Keys;
use crm_events_harness::redis_server::RedisServer;
use redis::Commands;
use serde_json::Value;

async fn json(resp: reqwest::Response) -> (u16, String, Value) {
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = resp.text().await.unwrap();
    let value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    (status, ctype, value)
}

#[tokio::test]
async fn info_reports_service_and_kafka_settings() {
    let redis = RedisServer::start().unwrap();
    let app = App::start(&redis, &[("kafka_brokers", "broker-a:9092,broker-b:9092")]).await;
    let (status, ctype, body) = json(client().get(app.url("/")).send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(ctype, "application/json");
    assert_eq!(body["ok"], true);
    assert_eq!(body["service"], "crm-events");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["kafka_brokers"], "broker-a:9092,broker-b:9092");
    assert_eq!(body["topic"], "aetherlink.events");
    assert_eq!(body["group"], "crm-events-sse");
}

#[tokio::test]
async fn unknown_paths_are_json_404_and_wrong_methods_405() {
    let redis = RedisServer::start().unwrap();
    let app = App::start(&redis, &[]).await;
    let (status, ctype, body) = json(client().get(app.url("/nope")).send().await.unwrap()).await;
    assert_eq!((status, ctype.as_str()), (404, "application/json"));
    assert_eq!(body["error"], "not_found");
    assert_eq!(body["path"], "/nope");

    for path in ["/", "/healthz", "/readyz", "/metrics", "/crm-events"] {
        // POST publishes on /crm-events: PUT is wrong everywhere.
        let resp = client().put(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 405, "{path}");
        let allow = resp.headers()["allow"].to_str().unwrap().to_string();
        assert!(allow.contains("GET"), "{path}: allow {allow}");
        let (_, _, body) = json(resp).await;
        assert_eq!(body["error"], "method_not_allowed");
    }
}

/// HTTP/1.0 allows leaving Host out; there is no URL then: 400 JSON, not a 500.
#[tokio::test]
async fn a_request_without_a_host_header_is_400_json() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let redis = RedisServer::start().unwrap();
    let app = App::start(&redis, &[]).await;
    let addr = app.base.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.0 400"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["error"], "bad_request");
}

#[tokio::test]
async fn healthz_is_ok_and_does_not_need_redis() {
    let mut redis = RedisServer::start().unwrap();
    let app = App::start(&redis, &[]).await;
    redis.stop();
    let (status, ctype, body) = json(client().get(app.url("/healthz")).send().await.unwrap()).await;
    assert_eq!((status, ctype.as_str()), (200, "application/json"));
    assert_eq!(body, serde_json::json!({"ok": true}));
}

#[tokio::test]
async fn readyz_follows_redis_and_the_sidecar_heartbeat() {
    let mut redis = RedisServer::start().unwrap();
    let app = App::start(&redis, &[]).await;
    let keys = Keys::default();
    let ready = || async { json(client().get(app.url("/readyz")).send().await.unwrap()).await };

    // Redis up, no sidecar heartbeat.
    let (status, _, body) = ready().await;
    assert_eq!(status, 503);
    assert_eq!(body["failed"], serde_json::json!(["sidecar"]));
    assert_eq!(body["checks"]["redis"], "ok");

    let beat = |redis: &RedisServer| {
        let _: () = redis
            .connection()
            .unwrap()
            .set_ex(keys.heartbeat(), "1", 30)
            .unwrap();
    };
    beat(&redis);
    let (status, _, body) = ready().await;
    assert_eq!((status, body["ok"].clone()), (200, Value::Bool(true)));

    // Redis goes away.
    redis.stop();
    let (status, _, body) = ready().await;
    assert_eq!(status, 503);
    assert_eq!(body["failed"], serde_json::json!(["redis"]));
    assert!(body["checks"]["redis"].as_str().unwrap().contains("redis"));

    // And comes back (empty: the sidecar writes its heartbeat again).
    redis.restart().unwrap();
    beat(&redis);
    let (status, _, _) = ready().await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn metrics_count_requests_and_pass_promtool() {
    let redis = RedisServer::start().unwrap();
    let app = App::start(&redis, &[]).await;
    for _ in 0..3 {
        client().get(app.url("/")).send().await.unwrap();
    }
    client().get(app.url("/readyz")).send().await.unwrap();
    client().get(app.url("/no-such-page")).send().await.unwrap();
    client()
        .get(app.url("/ops/crm-events"))
        .send()
        .await
        .unwrap();
    client().post(app.url("/crm-events")).send().await.unwrap();
    client().get(app.url("/healthz")).send().await.unwrap();
    let resp = client().get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = resp.text().await.unwrap();
    for line in [
        r#"crm_events_http_requests_total{method="GET",path="/"} 3"#,
        r#"crm_events_http_requests_total{method="GET",path="/readyz"} 1"#,
        r#"crm_events_http_requests_total{method="GET",path="other"} 1"#,
        r#"crm_events_http_requests_total{method="GET",path="/ops/crm-events"} 1"#,
        r#"crm_events_http_requests_total{method="POST",path="/crm-events"} 1"#,
        r#"crm_events_http_requests_total{method="GET",path="/metrics"} 1"#,
        "crm_events_sse_clients 0",
        "crm_events_sse_max_clients 900",
        "crm_events_messages_total 0",
        "crm_events_sidecar_up 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }

    // A second scrape sees the first one counted.
    let text = get_text(&app.url("/metrics")).await;
    assert!(text.contains(r#"crm_events_http_requests_total{method="GET",path="/metrics"} 2"#));
    // Liveness never touches Redis, so it is the one route not counted.
    assert!(!text.contains(r#"path="/healthz""#), "{text}");

    crm_events_harness::tools::promtool(&["check", "metrics"], &text);
}

#[tokio::test]
async fn metrics_answer_503_json_when_redis_is_down() {
    let mut redis = RedisServer::start().unwrap();
    let app = App::start(&redis, &[]).await;
    redis.stop();
    let (status, _, body) = json(client().get(app.url("/metrics")).send().await.unwrap()).await;
    assert_eq!(status, 503);
    assert_eq!(body["error"], "redis_unavailable");
}

#[test]
fn spin_toml_agrees_with_the_contracts() {
    use crm_events_contracts::config as c;
    use crm_events_contracts::http::routes;
    let manifest = crm_events_host::manifest::Manifest::load(
        &common::root().join("spin.toml"),
        &Default::default(),
    )
    .expect("spin.toml loads with its defaults");
    for path in routes::ALL {
        assert!(manifest.route(path).is_some(), "no component serves {path}");
    }
    let sse = &manifest.components["sse"];
    for name in [
        c::REDIS_ADDRESS,
        c::KEY_PREFIX,
        c::KAFKA_TOPIC,
        c::KAFKA_GROUP,
        c::KEEPALIVE_SECONDS,
        c::MAX_STREAM_SECONDS,
        c::MAX_CLIENTS,
        c::RETRY_MS,
        c::READ_COUNT,
        c::CORS_ALLOWED_ORIGINS,
    ] {
        assert!(
            sse.variables.contains_key(name),
            "sse component lacks variable {name}"
        );
    }
    let info = &manifest.components["info"];
    assert_eq!(info.variables[c::KAFKA_BROKERS], c::DEFAULT_KAFKA_BROKERS);
    assert_eq!(info.variables[c::KAFKA_TOPIC], c::DEFAULT_KAFKA_TOPIC);
    assert_eq!(info.variables[c::KAFKA_GROUP], c::DEFAULT_KAFKA_GROUP);
    // The defaults the components would fall back to are the ones spin.toml sets.
    let config =
        c::SseConfig::load(&|name: &str| sse.variables.get(name).cloned()).expect("valid defaults");
    assert_eq!(config, c::SseConfig::load(&|_: &str| None).unwrap());
    for spec in manifest.components.values() {
        for (name, default_port) in [(c::REDIS_ADDRESS, 6379), (c::POSTGRES_ADDRESS, 5432)] {
            if let Some(addr) = spec.variables.get(name) {
                assert!(
                    crm_events_host::spin_apis::address_allowed(
                        addr,
                        &spec.allowed_outbound_hosts,
                        default_port
                    ),
                    "{}: {name} is not in allowed_outbound_hosts",
                    spec.id
                );
            }
        }
    }
    let publishing = c::PublishConfig::load(&|name: &str| sse.variables.get(name).cloned())
        .expect("valid publish defaults");
    assert_eq!(publishing.max_body_bytes, c::DEFAULT_PUBLISH_MAX_BODY_BYTES);
}

/// The route table of docs/src/api.md lists exactly the routes `spin.toml` triggers, each with
/// the component that serves it.
#[test]
fn docs_route_table_matches_spin_toml() {
    let mut in_manifest = common::manifest_routes();
    let page = std::fs::read_to_string(common::root().join("docs/src/api.md")).unwrap();
    let table = page
        .split("\n## Routes\n")
        .nth(1)
        .expect("docs/src/api.md has a ## Routes section");
    let mut in_readme: Vec<(String, String)> = table
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|row| {
            let cells: Vec<&str> = row.split('|').map(|c| c.trim().trim_matches('`')).collect();
            (cells[1].to_string(), cells[2].to_string())
        })
        .collect();
    in_manifest.sort();
    in_readme.sort();
    assert_eq!(
        in_readme, in_manifest,
        "docs/src/api.md ## Routes vs spin.toml triggers"
    );
}

/// Like `spin up`, the host answers HTTP/2 with prior knowledge (h2c), streams included.
#[tokio::test]
async fn http2_prior_knowledge_is_served_like_spin() {
    use futures::StreamExt;
    let redis = RedisServer::start().unwrap();
    let app = App::start(&redis, &[]).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap();
    let resp = h2.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status().as_u16(), 200);
    let stream = h2.get(app.url("/crm-events")).send().await.unwrap();
    assert_eq!(stream.version(), reqwest::Version::HTTP_2);
    assert_eq!(stream.status().as_u16(), 200);
    let first = stream.bytes_stream().next().await.unwrap().unwrap();
    assert!(
        String::from_utf8_lossy(&first).starts_with("retry: "),
        "{first:?}"
    );
    // HTTP/1.1 still works on the same port.
    let h1 = client().get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(h1.version(), reqwest::Version::HTTP_11);
}
