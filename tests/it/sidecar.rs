//! The sidecar against a real Kafka-protocol broker (librdkafka's mock cluster) and
//! a real redis-server: envelopes, order, marked values, graceful stop, and its own
//! health and metrics. Crashes, outages and rebalances are in `faults.rs`.

mod common;

use common::sidecar::Sidecar;
use common::stream::{assert_all_relayed_exactly_once, entries, wait_for, wait_for_watermarks};
use crm_events_contracts::keys::Keys;
use crm_events_harness::mock_kafka::Kafka;
use crm_events_harness::redis_server::RedisServer;
use std::time::Duration;

const TOPIC: &str = "aetherlink.events";

fn last_offsets(per_partition: &[usize]) -> Vec<i64> {
    per_partition.iter().map(|n| *n as i64 - 1).collect()
}

#[test]
fn events_from_all_partitions_arrive_with_envelopes_in_order() {
    let redis = RedisServer::start().unwrap();
    let kafka = Kafka::start(TOPIC, 3);
    let per = kafka.send_events(300, 3, 0);
    let _sidecar = Sidecar::start(&redis.url(), &kafka.brokers(), TOPIC, &[]);
    let all = assert_all_relayed_exactly_once(&redis.url(), TOPIC, &per, Duration::from_secs(60));
    let (_, first) = &all[0];
    assert_eq!(first["kind"], "domain_event");
    assert_eq!(first["topic"], TOPIC);
    assert_eq!(first["key"], "JobCreated");
    assert_eq!(first["value"]["Type"], "JobCreated");
    assert!(first["timestamp"].as_i64().unwrap() > 1_600_000_000_000);
    assert!(first.get("value_encoding").is_none());
    let partitions: std::collections::BTreeSet<i64> = all
        .iter()
        .map(|(_, e)| e["partition"].as_i64().unwrap())
        .collect();
    assert_eq!(partitions.len(), 3);
}

#[test]
fn malformed_binary_oversize_and_tombstone_values_arrive_marked() {
    let redis = RedisServer::start().unwrap();
    let kafka = Kafka::start(TOPIC, 1);
    kafka.send(0, Some(b"Note"), Some(b"plain text, not JSON\n\ndata: x"));
    kafka.send(0, Some(&[0xff, 0xfe]), Some(&[0x00, 0xff, 0x10, 0x80]));
    kafka.send(0, None, Some(&[b'7'; 5000]));
    kafka.send(0, Some(b"Gone"), None);
    kafka.send(0, None, Some(br#"{"ok":1}"#));
    kafka.flush();
    let _sidecar = Sidecar::start(
        &redis.url(),
        &kafka.brokers(),
        TOPIC,
        &[("MAX_VALUE_BYTES", "1000")],
    );
    let keys = Keys::default();
    wait_for_watermarks(&redis.url(), &keys, TOPIC, &[4], Duration::from_secs(60));
    let all = entries(&mut redis.connection().unwrap(), &keys);
    let v: Vec<&serde_json::Value> = all.iter().map(|(_, e)| e).collect();
    assert_eq!(v.len(), 5);
    assert_eq!(v[0]["value_encoding"], "text");
    assert_eq!(v[0]["value"], "plain text, not JSON\n\ndata: x");
    assert_eq!(v[1]["value_encoding"], "base64");
    assert_eq!(v[1]["value"], "AP8QgA==");
    assert_eq!(v[1]["key"]["base64"], "//4=");
    assert_eq!(v[2]["value_encoding"], "oversize");
    assert_eq!(v[2]["value_size"], 5000);
    assert_eq!(v[2]["offset"], 2);
    assert_eq!(v[3]["value_encoding"], "none");
    assert_eq!(v[4]["value"]["ok"], 1);
}

/// A sidecar relaying `n` events over three partitions, once all of them are in Redis.
async fn caught_up(n: usize, settings: &[(&str, &str)]) -> (RedisServer, Kafka, Sidecar) {
    let redis = RedisServer::start().unwrap();
    let kafka = Kafka::start(TOPIC, 3);
    let per = kafka.send_events(n, 3, 0);
    let sidecar = Sidecar::start(&redis.url(), &kafka.brokers(), TOPIC, settings);
    let (url, marks) = (redis.url(), last_offsets(&per));
    tokio::task::spawn_blocking(move || {
        wait_for_watermarks(
            &url,
            &Keys::default(),
            TOPIC,
            &marks,
            Duration::from_secs(60),
        )
    })
    .await
    .unwrap();
    (redis, kafka, sidecar)
}

#[tokio::test]
async fn health_metrics_and_graceful_stop() {
    // A 3 s heartbeat TTL: the metrics mirror is refreshed every second.
    let (redis, _kafka, mut sidecar) = caught_up(90, &[("HEARTBEAT_TTL_SECONDS", "3")]).await;
    let keys = Keys::default();

    let client = common::client();
    let ready = client
        .get(format!("{}/readyz", sidecar.http))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["checks"]["assigned_partitions"], 3);
    let health = client
        .get(format!("{}/healthz", sidecar.http))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let metrics = client
        .get(format!("{}/metrics", sidecar.http))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("crm_events_sidecar_events_consumed_total 90"),
        "{metrics}"
    );
    assert!(
        metrics.contains("crm_events_sidecar_events_written_total 90"),
        "{metrics}"
    );
    assert!(
        metrics.contains("crm_events_sidecar_redis_write_seconds_count"),
        "{metrics}"
    );
    assert!(
        metrics.contains("crm_events_sidecar_event_age_seconds_bucket"),
        "{metrics}"
    );

    // The heartbeat and the metrics mirror are in Redis for the Spin app.
    let mut conn = redis.connection().unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg(keys.heartbeat())
        .query(&mut conn)
        .unwrap();
    assert!(ttl > 0, "heartbeat TTL {ttl}");
    let mirrored = |field: &str| -> Option<String> {
        redis::cmd("HGET")
            .arg(keys.sidecar_metrics())
            .arg(field)
            .query(&mut redis.connection().unwrap())
            .unwrap()
    };
    wait_for(
        "the mirror to show all 90 consumed events",
        Duration::from_secs(15),
        || mirrored("events_consumed_total").as_deref() == Some("90"),
    );
    assert_eq!(mirrored("events_written_total").as_deref(), Some("90"));
    let age: f64 = mirrored("last_event_age_seconds").unwrap().parse().unwrap();
    assert!((0.0..60.0).contains(&age), "last event age {age}");

    // SIGTERM: exits 0 within the shutdown bound.
    sidecar.terminate();
    let status = sidecar.exit_status(Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status}");
}

/// Kafka gone before the stop (the brokers stopped first, as `compose down` or a
/// node drain may do it): SIGTERM still ends the sidecar, cleanly and within its
/// shutdown bound. rdkafka's own close waits for the group coordinator with no bound.
#[tokio::test]
async fn a_stop_after_kafka_is_gone_is_still_bounded() {
    let (_redis, kafka, mut sidecar) = caught_up(9, &[("SHUTDOWN_TIMEOUT_SECONDS", "3")]).await;
    drop(kafka);
    sidecar.terminate();
    let status = sidecar.exit_status(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn an_unreachable_kafka_is_retried_and_visible_in_health() {
    let redis = RedisServer::start().unwrap();
    // Nothing listens on this port.
    let nowhere = format!(
        "127.0.0.1:{}",
        crm_events_harness::redis_server::free_port().unwrap()
    );
    let mut sidecar = Sidecar::start(&redis.url(), &nowhere, TOPIC, &[]);
    let client = common::client();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let body = loop {
        if let Some((503, body)) = sidecar.readiness().await {
            if body["checks"]["kafka"] != "ok" {
                break body;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the Kafka failure never showed in /readyz"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(body["checks"]["assigned_partitions"], 0);
    assert_eq!(body["checks"]["redis"], "ok");
    let health = client
        .get(format!("{}/healthz", sidecar.http))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200, "still alive, still retrying");
    assert!(
        sidecar.child.try_wait().unwrap().is_none(),
        "the sidecar keeps running"
    );
}
