//! `make run`'s script in demo mode: it starts Redis, a throwaway PostgreSQL, the
//! sidecar with its embedded broker, the outbox publisher, the demo CRM writing into
//! the outbox and the app; events reach an SSE client through the whole chain;
//! Ctrl-C stops everything it started.

mod common;

use crm_events_harness::redis_server::free_port;
use crm_events_harness::signal;
use crm_events_harness::sse_client::SseClient;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Kills run.sh's whole process group when the test ends early, so a failure
/// leaves no redis-server, postgres or sidecar behind.
struct Group(u32);

impl Drop for Group {
    fn drop(&mut self) {
        signal::to_group(self.0, "KILL");
    }
}

#[tokio::test]
async fn run_script_serves_demo_events_and_stops_cleanly() {
    let ports: Vec<u16> = (0..5).map(|_| free_port().unwrap()).collect();
    let (port, sidecar_port, redis_port, pg_port, publisher_port) =
        (ports[0], ports[1], ports[2], ports[3], ports[4]);
    let auth_dir = std::env::temp_dir().join(format!("crm-events-run-auth-{port}"));
    let mut child = Command::new("bash")
        .arg(common::root().join("scripts/run.sh"))
        .env("PORT", port.to_string())
        .env("SIDECAR_PORT", sidecar_port.to_string())
        .env("REDIS_PORT", redis_port.to_string())
        .env("PG_PORT", pg_port.to_string())
        .env("PUBLISHER_PORT", publisher_port.to_string())
        .env("DEMO_RATE", "50")
        // The tests' build; `make run` starts the release one.
        .env("BIN", "target/debug")
        .env("AUTH_DIR", &auth_dir)
        .env_remove("KAFKA_BROKERS")
        .env_remove("REDIS_URL")
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("run.sh");
    let _group = Group(child.id());

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
    let tenants = crm_events_contracts::demo::TENANTS;
    for (_, e) in &events {
        let tenant = e["value"]["TenantId"].as_str().unwrap();
        assert!(tenants.iter().any(|(id, _)| *id == tenant), "{e}");
        assert!(e["value"]["Type"].is_string());
        // They came through the outbox: each carries its row id.
        assert!(
            e["headers"]["outbox-id"]
                .as_str()
                .unwrap()
                .parse::<i64>()
                .is_ok(),
            "{e}"
        );
    }
    drop(c);

    // Ctrl-C: the script stops what it started and exits.
    assert!(signal::to_process(child.id(), "INT"));
    let interrupted = Instant::now();
    let deadline = interrupted + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "run.sh did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Read by scripts/stress-stop.sh, which runs this test under load.
    eprintln!("run.sh stopped in {} ms", interrupted.elapsed().as_millis());
    for p in ports {
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
