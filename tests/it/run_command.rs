//! `make run`'s script in demo mode: it starts Redis, the sidecar with its embedded
//! broker and demo producer, and the app; events reach an SSE client; Ctrl-C stops
//! everything it started.

mod common;

use crm_events_harness::redis_server::free_port;
use crm_events_harness::sse_client::SseClient;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test]
async fn run_script_serves_demo_events_and_stops_cleanly() {
    let (port, sidecar_port, redis_port) = (
        free_port().unwrap(),
        free_port().unwrap(),
        free_port().unwrap(),
    );
    let auth_dir = std::env::temp_dir().join(format!("crm-events-run-auth-{port}"));
    let mut child = Command::new("bash")
        .arg(common::root().join("scripts/run.sh"))
        .env("PORT", port.to_string())
        .env("SIDECAR_PORT", sidecar_port.to_string())
        .env("REDIS_PORT", redis_port.to_string())
        .env("DEMO_RATE", "50")
        .env("AUTH_DIR", &auth_dir)
        .env_remove("KAFKA_BROKERS")
        .env_remove("REDIS_URL")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("run.sh");

    let ready = format!("http://127.0.0.1:{port}/readyz");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(r) = reqwest::get(&ready).await {
            if r.status().is_success() {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the app never became ready");
        assert!(child.try_wait().unwrap().is_none(), "run.sh exited early");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Access control is on: without the printed token the stream is refused, with
    // it the demo events flow.
    let url = format!("http://127.0.0.1:{port}/crm-events");
    let refused = reqwest::get(&url).await.unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    let token = std::fs::read_to_string(auth_dir.join("token")).expect("run.sh wrote a token");
    let bearer = format!("Bearer {}", token.trim());
    let mut c = SseClient::connect(&url, &[("authorization", &bearer)]).await;
    let events = c.domain_events(5, Duration::from_secs(30)).await;
    for (_, e) in &events {
        assert!(e["value"]["TenantId"]
            .as_str()
            .unwrap()
            .starts_with("tenant-"));
        assert!(e["value"]["Type"].is_string());
    }
    drop(c);

    // Ctrl-C: the script stops what it started and exits.
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "run.sh did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for p in [port, sidecar_port, redis_port] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", p)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "port {p} still served after the stop"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let _ = std::fs::remove_dir_all(&auth_dir);
}
