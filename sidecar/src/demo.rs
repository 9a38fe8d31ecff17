//! Demo mode and the `produce` command: an embedded Kafka-protocol broker
//! (librdkafka's mock cluster) with the topic, a producer of realistic CRM events,
//! and one-off publishing of a JSON event for docs and troubleshooting.
//!
//! The embedded broker keeps its data in memory (at most 5 MB per partition) and
//! lives as long as the sidecar: it is for `make run` and trying things out, not for
//! production.

use anyhow::{Context, Result};
use crm_events_contracts::outbox::KeyBy;
use crm_events_native::pace::Pace;
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

/// Publishes demo events at `rate` per second until the task is dropped. Sends do
/// not wait for their acknowledgement (a failed one is logged), so the rate holds
/// whatever the broker's round trip.
pub async fn run_demo_producer(producer: FutureProducer, topic: String, rate: u32) {
    let pace = Pace::new(rate);
    let mut tick = tokio::time::interval(pace.every);
    let mut n = 0u64;
    loop {
        tick.tick().await;
        let now_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        for _ in 0..pace.per_tick {
            let record = crm_events_contracts::demo::event(n)
                .row(n as i64, now_ms)
                .record(&KeyBy::Tenant);
            let kafka_record = FutureRecord::to(&topic)
                .key(&record.key)
                .payload(&record.value);
            match producer.send_result(kafka_record) {
                Ok(delivery) => {
                    tokio::spawn(async move {
                        if let Ok(Err((e, _))) = delivery.await {
                            tracing::warn!(error = %e, "demo producer could not publish");
                        }
                    });
                }
                Err((e, _)) => tracing::warn!(error = %e, "demo producer could not publish"),
            }
            n += 1;
        }
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
