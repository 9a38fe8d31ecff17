//! The viewer page at /ops/crm-events in a real headless Chromium (Debian's
//! `chromium`, driven by `playwright-core` from `tests/browser/viewer.mjs`), with
//! access control on: a bad token is refused, a good one signs in through the
//! session cookie and the page shows who is signed in; events produced to Kafka
//! appear (each card with its tenant, entity and local time), pause buffers, resume shows
//! (a payload built to break a card does not stop the list), the text filter hides and
//! shows, the download is valid JSONL of the kept events, keyboard and phone width
//! work, and the status follows the app going down and coming back.

mod common;

use common::sidecar::Sidecar;
use crm_events_harness::mock_kafka::Kafka;
use crm_events_harness::redis_server::{free_port, RedisServer};
use crm_events_harness::tokens;
use jsonwebtoken::Algorithm;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

const TOPIC: &str = "aetherlink.events";

/// The app as its own process (so stopping it really drops the browser's stream).
fn start_app(port: u16, redis: &RedisServer) -> Child {
    let child = crm_events_harness::app::host_command(port, redis)
        .args(["--variable", "retry_ms=500"])
        .args(["--variable", "auth_mode=jwt"])
        .args(["--variable", "auth_algorithms=EdDSA"])
        .args([
            "--variable",
            &format!(
                "auth_public_keys={}",
                tokens::keys(Algorithm::EdDSA).public_pem
            ),
        ])
        .env("RUST_LOG", "error")
        .spawn()
        .unwrap();
    crm_events_harness::app::wait_listening(port);
    child
}

fn event(kafka: &Kafka, i: usize, kind: &str, tenant: &str) {
    let value = format!(
        r#"{{"Type":"{kind}","TenantId":"{tenant}","JobId":"job-{i}","Title":"Visit {i}"}}"#
    );
    kafka.send(
        (i % 3) as i32,
        Some(kind.as_bytes()),
        Some(value.as_bytes()),
    );
}

#[test]
fn viewer_page_in_headless_chromium() {
    let browser_dir = common::root().join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: npm ci --prefix tests/browser (make test does)"
    );
    let redis = RedisServer::start().unwrap();
    let kafka = Kafka::start(TOPIC, 3);
    let _sidecar = Sidecar::start(
        &redis.url(),
        &kafka.brokers(),
        TOPIC,
        &[("BATCH_LINGER_MS", "1")],
    );
    let port = free_port().unwrap();
    let mut app = start_app(port, &redis);

    let out_dir = common::root().join("target/screenshots");
    std::fs::create_dir_all(&out_dir).unwrap();
    let mut node = Command::new(node_binary(&browser_dir))
        .arg(browser_dir.join("viewer.mjs"))
        .current_dir(&browser_dir)
        .env("BASE_URL", format!("http://127.0.0.1:{port}"))
        .env("TOKEN", tokens::token("ops-alice", &["*"]))
        .env("SCREENSHOT", out_dir.join("viewer.png"))
        .env("SCREENSHOT_PHONE", out_dir.join("viewer-phone.png"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node");
    let mut to_node = node.stdin.take().unwrap();
    let from_node = BufReader::new(node.stdout.take().unwrap());
    let mut reply = |line: String| writeln!(to_node, "{line}").unwrap();

    let mut result = None;
    for line in from_node.lines() {
        let line = line.unwrap();
        match line.as_str() {
            "READY" => {
                let batch = [
                    ("JobCreated", "tenant-acme"),
                    ("JobUpdated", "tenant-globex"),
                    ("JobDeleted", "tenant-acme"),
                    ("ContactCreated", "tenant-initech"),
                    ("ContactUpdated", "tenant-globex"),
                ];
                for (i, (kind, tenant)) in batch.iter().enumerate() {
                    event(&kafka, i, kind, tenant);
                }
                kafka.flush();
                reply(batch.len().to_string());
            }
            "PAUSED" => {
                // The middle one is built to break a card: a field that is an
                // object whose toString cannot be called.
                event(&kafka, 5, "JobUpdated", "tenant-acme");
                kafka.send(
                    0,
                    Some(b"JobUpdated"),
                    Some(br#"{"Type":"JobUpdated","TenantId":"tenant-acme","JobId":"job-6","Title":{"toString":1}}"#),
                );
                event(&kafka, 7, "JobUpdated", "tenant-acme");
                kafka.flush();
                reply("3".into());
            }
            "FILTERED" => reply("2".into()),
            "STOP_APP" => {
                let _ = app.kill();
                let _ = app.wait();
                reply("stopped".into());
            }
            "START_APP" => {
                event(&kafka, 8, "JobCreated", "tenant-acme");
                kafka.flush();
                app = start_app(port, &redis);
                reply("1".into());
            }
            "FLUSH" => {
                let () = redis::cmd("FLUSHALL")
                    .query(&mut redis.connection().unwrap())
                    .unwrap();
                reply("flushed".into());
            }
            "OK" => {
                result = Some(Ok(()));
                break;
            }
            other if other.starts_with("FAIL") => {
                result = Some(Err(other.to_string()));
                break;
            }
            other => eprintln!("viewer.mjs: {other}"),
        }
    }
    let _ = node.wait();
    let _ = app.kill();
    match result {
        Some(Ok(())) => {}
        Some(Err(e)) => panic!("{e}"),
        None => panic!("viewer.mjs ended without a verdict"),
    }
    assert!(out_dir.join("viewer.png").exists());
}

/// Node.js for playwright-core (20 or newer): the one `scripts/setup.sh` installs
/// into `tests/browser` when the machine's is older, else the machine's.
fn node_binary(browser_dir: &std::path::Path) -> std::path::PathBuf {
    let local = browser_dir.join("node_modules/.bin/node");
    let node = if local.exists() { local } else { "node".into() };
    let version = Command::new(&node)
        .arg("--version")
        .output()
        .expect("Node.js is required for the viewer test (scripts/setup.sh --test installs it)");
    let version = String::from_utf8_lossy(&version.stdout);
    let major: u32 = version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(
        major >= 20,
        "{} is Node.js {version}; playwright-core needs 20 or newer (scripts/setup.sh --test installs one)",
        node.display()
    );
    node
}
