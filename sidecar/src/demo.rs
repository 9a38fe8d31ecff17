//! Demo mode and the `produce` command: an embedded Kafka-protocol broker
//! (librdkafka's mock cluster) with the topic, a producer of realistic CRM events,
//! and one-off publishing of a JSON event for docs and troubleshooting.
//!
//! The embedded broker keeps its data in memory (at most 5 MB per partition) and
//! lives as long as the sidecar: it is for `make run` and trying things out, not for
//! production.

use anyhow::{Context, Result};
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use std::time::Duration;

/// A running embedded broker.
pub struct EmbeddedKafka {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl EmbeddedKafka {
    /// Starts a one-broker cluster with `topic` of `partitions` partitions.
    pub fn start(topic: &str, partitions: i32) -> Result<Self> {
        let cluster = MockCluster::new(1).context("starting the embedded Kafka broker")?;
        cluster
            .create_topic(topic, partitions, 1)
            .with_context(|| format!("creating topic {topic}"))?;
        Ok(Self { cluster })
    }

    /// Its bootstrap servers (a loopback address).
    pub fn brokers(&self) -> String {
        self.cluster.bootstrap_servers()
    }
}

/// A producer for `brokers` with extra librdkafka properties.
pub fn producer(brokers: &str, properties: &[(String, String)]) -> Result<FutureProducer> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("message.timeout.ms", "10000");
    for (k, v) in properties {
        config.set(k, v);
    }
    config.create().context("creating the Kafka producer")
}

const TENANTS: [&str; 3] = ["tenant-acme", "tenant-globex", "tenant-initech"];
const STATUSES: [&str; 4] = ["Open", "Scheduled", "InProgress", "Done"];

/// The `n`-th demo event: `(type, JSON value)`.
pub fn demo_event(n: u64, now: time::OffsetDateTime) -> (&'static str, String) {
    let tenant = TENANTS[(n % 3) as usize];
    let ts = now
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let (kind, body) = match n % 10 {
        0..=3 => (
            "JobCreated",
            format!(r#""JobId":"job-{n}","Title":"Service visit #{n}","Status":"Open""#),
        ),
        4..=6 => (
            "JobUpdated",
            format!(
                r#""JobId":"job-{}","Title":"Service visit #{}","Status":"{}""#,
                n - 4,
                n - 4,
                STATUSES[(n % 4) as usize]
            ),
        ),
        7 => (
            "JobDeleted",
            format!(r#""JobId":"job-{}""#, n.saturating_sub(7)),
        ),
        8 => (
            "ContactCreated",
            format!(
                r#""ContactId":"contact-{n}","Name":"Contact {n}","Email":"contact{n}@example.com""#
            ),
        ),
        _ => (
            "ContactUpdated",
            format!(
                r#""ContactId":"contact-{}","Phone":"+1-555-01{:02}""#,
                n - 1,
                n % 100
            ),
        ),
    };
    (
        kind,
        format!(r#"{{"Type":"{kind}","TenantId":"{tenant}",{body},"Ts":"{ts}"}}"#),
    )
}

/// Publishes demo events at `rate` per second until the task is dropped.
pub async fn run_demo_producer(producer: FutureProducer, topic: String, rate: u32) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
    let mut n = 0u64;
    loop {
        tick.tick().await;
        let (kind, value) = demo_event(n, time::OffsetDateTime::now_utc());
        let record = FutureRecord::to(&topic).key(kind).payload(&value);
        if let Err((e, _)) = producer.send(record, Duration::from_secs(5)).await {
            tracing::warn!(error = %e, "demo producer could not publish");
        }
        n += 1;
    }
}

/// Publishes one event; returns `(partition, offset)`.
pub async fn produce_one(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&str>,
    partition: Option<i32>,
    value: &[u8],
) -> Result<(i32, i64)> {
    let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).payload(value);
    if let Some(k) = key {
        record = record.key(k);
    }
    if let Some(p) = partition {
        record = record.partition(p);
    }
    let delivery = producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| anyhow::anyhow!("publishing to {topic}: {e}"))?;
    Ok((delivery.partition, delivery.offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_events_are_json_with_tenant_and_type() {
        let now = time::OffsetDateTime::from_unix_timestamp(1_730_592_000).unwrap();
        for n in 0..20 {
            let (kind, value) = demo_event(n, now);
            let v: serde_json::Value = serde_json::from_str(&value).unwrap();
            assert_eq!(v["Type"], kind);
            assert!(v["TenantId"].as_str().unwrap().starts_with("tenant-"));
            assert_eq!(v["Ts"], "2024-11-03T00:00:00Z");
        }
    }
}
