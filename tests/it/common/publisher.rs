//! The outbox publisher as a child process, and what the tests ask of it.

use super::sidecar::Native;
use std::time::Duration;

/// Starts `crm-events-outbox run` against `database_url` and `brokers`, with quick
/// standby polling and extra settings.
pub fn start(database_url: &str, brokers: &str, topic: &str, extra: &[(&str, &str)]) -> Native {
    let base = [
        ("DATABASE_URL", database_url),
        ("KAFKA_BROKERS", brokers),
        ("KAFKA_TOPIC", topic),
        ("OUTBOX_STANDBY_POLL_MS", "100"),
    ];
    Native::spawn(
        crm_events_harness::app::binary("crm-events-outbox"),
        &[&base[..], extra].concat(),
    )
}

/// Whether `publisher` says it leads (its `/readyz` role).
pub async fn is_leader(publisher: &Native) -> bool {
    publisher
        .readiness()
        .await
        .is_some_and(|(_, body)| body["checks"]["role"] == "leader")
}

/// The index of the publisher that leads, once one does (panics after `timeout`).
pub async fn leader(publishers: &[&Native], timeout: Duration) -> usize {
    let found = std::cell::Cell::new(0);
    crm_events_harness::wait::until("a publisher to lead", timeout, || async {
        for (i, p) in publishers.iter().enumerate() {
            if is_leader(p).await {
                found.set(i);
                return true;
            }
        }
        false
    })
    .await
    .unwrap();
    found.get()
}

/// Runs `crm-events-outbox <args>` to completion; returns stdout (panics on failure).
pub fn command(database_url: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = std::process::Command::new(crm_events_harness::app::binary("crm-events-outbox"))
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .expect("run crm-events-outbox");
    assert!(
        out.status.success(),
        "crm-events-outbox {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
