//! The viewer page at /ops/crm-events in a real headless Chromium (Debian's
//! `chromium`, driven by `playwright-core` from `tests/browser/viewer.mjs`), with
//! access control on: a bad token is refused, a good one signs in through the
//! session cookie and the page shows who is signed in; events produced to Kafka
//! appear (each card with its tenant, entity and local time), pause buffers, resume shows
//! (a payload built to break a card does not stop the list), the text filter hides and
//! shows, the download is valid JSONL of the kept events, keyboard and phone width
//! work, and the status follows the app going down and coming back.

mod common;

use common::node::converse;
use common::sidecar::Sidecar;
use common::Killed;
use crm_events_harness::mock_kafka::Kafka;
use crm_events_harness::redis_server::{free_port, RedisServer};
use crm_events_harness::tokens;
use jsonwebtoken::Algorithm;

const TOPIC: &str = "aetherlink.events";

/// The app as its own process (so stopping it really drops the browser's stream).
fn start_app(port: u16, redis: &RedisServer) -> Killed {
    let mut vars = tokens::auth_vars(&[Algorithm::EdDSA]);
    vars.push(("retry_ms", "500".into()));
    common::spawn_app(port, redis, &vars)
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
    let env = [
        ("BASE_URL", format!("http://127.0.0.1:{port}")),
        ("TOKEN", tokens::token("ops-alice", &["*"])),
        (
            "SCREENSHOT",
            out_dir.join("viewer.png").display().to_string(),
        ),
        (
            "SCREENSHOT_PHONE",
            out_dir.join("viewer-phone.png").display().to_string(),
        ),
    ];
    converse("viewer.mjs", &env, |step| match step {
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
            Some(batch.len().to_string())
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
            Some("3".into())
        }
        "FILTERED" => Some("2".into()),
        "STOP_APP" => {
            app.kill();
            Some("stopped".into())
        }
        "START_APP" => {
            event(&kafka, 8, "JobCreated", "tenant-acme");
            kafka.flush();
            app = start_app(port, &redis);
            Some("1".into())
        }
        "FLUSH" => {
            let () = redis::cmd("FLUSHALL")
                .query(&mut redis.connection().unwrap())
                .unwrap();
            Some("flushed".into())
        }
        _ => None,
    });
    app.kill();
    assert!(out_dir.join("viewer.png").exists());
}
