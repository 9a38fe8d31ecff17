//! The Kafka consumer and what happens on rebalance.
//!
//! On assignment each partition starts at its Redis watermark + 1 (the offset after
//! the last event already in the stream), not at the committed offset: the commit
//! follows the write, so after a crash between the two the committed offset is
//! behind and would re-read events the stream already has. (The write script skips
//! those anyway; starting at the watermark just avoids reading them.) A partition
//! with no watermark starts where the group's committed offset or
//! `auto.offset.reset` says — unless the group did commit an offset: then the events
//! before it were in a stream Redis no longer has, so the partition starts
//! `STREAM_MAXLEN` offsets before it (all the stream can have held) and the writer is
//! told to start a new epoch ([`crate::continuity`]).

use crate::telemetry::Telemetry;
use crm_events_contracts::keys::Keys;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The consumer type the relay uses.
pub type RelayConsumer = StreamConsumer<RelayContext>;

/// Callbacks from librdkafka: rebalances, statistics (lag), errors.
pub struct RelayContext {
    redis: redis::Client,
    keys: Keys,
    telemetry: Arc<Telemetry>,
    /// The stream's length limit (how far back a lost stream reached).
    maxlen: u64,
    /// Set when a partition's stream is found gone at assignment.
    lost_at_start: Arc<AtomicBool>,
}

impl ClientContext for RelayContext {
    fn stats(&self, stats: Statistics) {
        for topic in stats.topics.values() {
            for (partition, p) in &topic.partitions {
                if *partition >= 0 && p.consumer_lag >= 0 {
                    self.telemetry
                        .lag
                        .with_label_values(&[&partition.to_string()])
                        .set(p.consumer_lag);
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "Kafka client error");
        self.telemetry.errors.with_label_values(&["kafka"]).inc();
        self.telemetry
            .set_kafka_error(Some(format!("{error}: {reason}")));
    }
}

impl ConsumerContext for RelayContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.start_at_watermarks(consumer, tpl);
                let r = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                tracing::info!(partitions = ?partition_list(tpl), "partitions assigned");
                r
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!(partitions = ?partition_list(tpl), "partitions revoked");
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                tracing::error!(error = ?other, "rebalance error");
                consumer.unassign()
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "applying the rebalance failed");
        }
        let assigned = consumer.assignment().map(|a| a.count()).unwrap_or(0);
        self.telemetry.assigned.set(assigned as i64);
    }
}

impl RelayContext {
    /// Sets each partition's start offset to its watermark + 1, where there is one
    /// (and, where there is none but a committed offset, `maxlen` before that).
    fn start_at_watermarks(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let fields: Vec<(String, i32, String)> = tpl
            .elements()
            .iter()
            .map(|e| {
                (
                    e.topic().to_string(),
                    e.partition(),
                    Keys::offsets_field(e.topic(), e.partition()),
                )
            })
            .collect();
        if fields.is_empty() {
            return;
        }
        let marks: redis::RedisResult<Vec<Option<i64>>> = self
            .redis
            .get_connection_with_timeout(std::time::Duration::from_secs(3))
            .and_then(|mut c| {
                redis::cmd("HMGET")
                    .arg(self.keys.offsets())
                    .arg(fields.iter().map(|f| f.2.as_str()).collect::<Vec<_>>())
                    .query(&mut c)
            });
        match marks {
            Ok(marks) => {
                let mut missing = Vec::new();
                for ((topic, partition, _), mark) in fields.iter().zip(marks) {
                    match mark {
                        Some(mark) => set_start(tpl, topic, *partition, mark + 1),
                        None => missing.push((topic.clone(), *partition)),
                    }
                }
                self.start_lost_streams(consumer, tpl, &missing);
            }
            // The write script still skips what the stream has; only re-reading is
            // not avoided.
            Err(e) => {
                tracing::warn!(error = %e, "cannot read watermarks at assignment; starting at committed offsets")
            }
        }
    }
}

impl RelayContext {
    /// Partitions without a watermark whose group committed an offset: their stream
    /// is gone (Redis lost it). They start `maxlen` offsets before the commit, and the
    /// writer starts a new epoch.
    fn start_lost_streams(
        &self,
        consumer: &BaseConsumer<Self>,
        tpl: &mut TopicPartitionList,
        missing: &[(String, i32)],
    ) {
        if missing.is_empty() {
            return;
        }
        let mut ask = TopicPartitionList::new();
        for (topic, p) in missing {
            ask.add_partition(topic, *p);
        }
        let Ok(committed) = consumer.committed_offsets(ask, std::time::Duration::from_secs(5))
        else {
            return;
        };
        for e in committed.elements() {
            if let Offset::Offset(c) = e.offset() {
                let from = if self.maxlen == 0 {
                    0
                } else {
                    (c - self.maxlen as i64).max(0)
                };
                tracing::warn!(
                    partition = e.partition(),
                    committed = c,
                    from,
                    "no watermark but a committed offset: the stream was lost, reading again"
                );
                set_start(tpl, e.topic(), e.partition(), from);
                self.lost_at_start.store(true, Ordering::Relaxed);
            }
        }
    }
}

fn set_start(tpl: &mut TopicPartitionList, topic: &str, partition: i32, offset: i64) {
    if let Err(e) = tpl.set_partition_offset(topic, partition, Offset::Offset(offset)) {
        tracing::warn!(error = %e, partition, "cannot set start offset");
    }
}

fn partition_list(tpl: &TopicPartitionList) -> Vec<(i32, Offset)> {
    tpl.elements()
        .iter()
        .map(|e| (e.partition(), e.offset()))
        .collect()
}

/// What the consumer's rebalance needs besides the properties.
pub struct Setup {
    /// Redis (for the watermarks).
    pub redis_url: String,
    /// The key names.
    pub keys: Keys,
    /// Metrics and health.
    pub telemetry: Arc<Telemetry>,
    /// `STREAM_MAXLEN`.
    pub maxlen: u64,
    /// Shared with the writer: a stream found gone at assignment.
    pub lost_at_start: Arc<AtomicBool>,
}

/// Creates the consumer (not yet subscribed).
pub fn create(properties: &[(String, String)], setup: Setup) -> KafkaResult<RelayConsumer> {
    let Setup {
        redis_url,
        keys,
        telemetry,
        maxlen,
        lost_at_start,
    } = setup;
    let redis_url = redis_url.as_str();
    let mut config = ClientConfig::new();
    for (k, v) in properties {
        config.set(k, v);
    }
    let redis = redis::Client::open(redis_url)
        .map_err(|e| KafkaError::ClientCreation(format!("REDIS_URL {redis_url:?}: {e}")))?;
    config.create_with_context(RelayContext {
        redis,
        keys,
        telemetry,
        maxlen,
        lost_at_start,
    })
}
