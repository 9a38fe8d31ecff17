//! The end-to-end checks again under the real Spin CLI (`spin up`), where one is
//! installed: `SPIN_BIN`, else `spin` on `PATH`. Without one the test is reported
//! skipped by name (in `target/skipped-checks.txt`, which `make test` prints); it
//! never passes silently.

mod common;

use common::{client, root};
use crm_events_harness::app::{build_components, manifest_path};
use crm_events_harness::redis_server::{free_port, RedisServer};
use crm_events_harness::sse_client::{stream_id, SseClient};
use crm_events_harness::tools::report_skipped;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// The Spin CLI to test against, if there is one.
fn spin_binary() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("SPIN_BIN") {
        return Some(PathBuf::from(bin));
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("spin"))
            .find(|candidate| candidate.is_file())
    })
}

/// `spin up` on `spin.toml`, killed when dropped.
struct SpinUp {
    child: Child,
    base: String,
}

impl Drop for SpinUp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn spin_up(spin: &PathBuf, redis: &RedisServer) -> SpinUp {
    build_components();
    let port = free_port().unwrap();
    let child = Command::new(spin)
        .arg("up")
        .arg("--from")
        .arg(manifest_path())
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("SPIN_VARIABLE_REDIS_HOST", redis.host_port())
        .env("SPIN_VARIABLE_AUTH_MODE", "none")
        .current_dir(root())
        .spawn()
        .expect("spin up starts");
    let up = SpinUp {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let health = format!("{}/healthz", up.base);
    crm_events_harness::wait::until(
        "spin up to answer /healthz",
        Duration::from_secs(120),
        || {
            let health = health.clone();
            async move {
                client()
                    .get(&health)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        },
    )
    .await
    .unwrap();
    up
}

/// Every route answers under `spin up`, and an event written to the stream reaches
/// an SSE client.
#[tokio::test]
async fn spin_up_serves_every_route_and_streams() {
    let Some(spin) = spin_binary() else {
        report_skipped(
            "spin_cli::spin_up_serves_every_route_and_streams",
            "no Spin CLI here (set SPIN_BIN or put spin on PATH)",
        );
        return;
    };
    let redis = RedisServer::start().unwrap();
    let up = spin_up(&spin, &redis).await;
    let get = |path: &str| client().get(format!("{}{path}", up.base)).send();
    let info = get("/").await.unwrap();
    assert_eq!(info.status().as_u16(), 200);
    let info: serde_json::Value = info.json().await.unwrap();
    assert_eq!(info["service"], "crm-events", "{info}");
    let ready = get("/readyz").await.unwrap();
    assert_eq!(ready.status().as_u16(), 503, "no sidecar heartbeat yet");
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(metrics.contains("crm_events_sse_clients "), "{metrics}");
    let viewer = get("/ops/crm-events").await.unwrap();
    assert_eq!(viewer.status().as_u16(), 200);
    assert_eq!(
        get("/.well-known/spin/health")
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );

    let mut stream = SseClient::connect(&format!("{}/crm-events", up.base), &[]).await;
    stream.next(T).await.expect("connected");
    let id = add_event(&redis);
    let got = stream.domain_stream_ids(1, T).await;
    assert_eq!(got, [id]);
}

/// Appends one envelope to the stream as the sidecar would.
fn add_event(redis: &RedisServer) -> String {
    let value = r#"{"Type":"JobCreated","TenantId":"t1","JobId":1}"#;
    let id = common::stream::append(&mut redis.connection().unwrap(), "*", 0, None, value);
    stream_id(&id).to_string()
}
