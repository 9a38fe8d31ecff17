//! The Kafka consumer and what happens on rebalance.
//!
//! On assignment each partition starts at its Redis watermark + 1 (the offset after
//! the last event already in the stream), not at the committed offset: the commit
//! follows the write, so after a crash between the two the committed offset is
//! behind and would re-read events the stream already has. (The write script skips
//! those anyway; starting at the watermark just avoids reading them.) A partition
//! with no watermark starts where the group's committed offset or
//! `auto.offset.reset` says.

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
use std::sync::Arc;

/// The consumer type the relay uses.
pub type RelayConsumer = StreamConsumer<RelayContext>;

/// Callbacks from librdkafka: rebalances, statistics (lag), errors.
pub struct RelayContext {
    redis: redis::Client,
    keys: Keys,
    telemetry: Arc<Telemetry>,
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
                self.start_at_watermarks(tpl);
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
    /// Sets each partition's start offset to its watermark + 1, where there is one.
    fn start_at_watermarks(&self, tpl: &mut TopicPartitionList) {
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
                for ((topic, partition, _), mark) in fields.iter().zip(marks) {
                    if let Some(mark) = mark {
                        if let Err(e) =
                            tpl.set_partition_offset(topic, *partition, Offset::Offset(mark + 1))
                        {
                            tracing::warn!(error = %e, partition, "cannot set start offset");
                        }
                    }
                }
            }
            // The write script still skips what the stream has; only re-reading is
            // not avoided.
            Err(e) => {
                tracing::warn!(error = %e, "cannot read watermarks at assignment; starting at committed offsets")
            }
        }
    }
}

fn partition_list(tpl: &TopicPartitionList) -> Vec<(i32, Offset)> {
    tpl.elements()
        .iter()
        .map(|e| (e.partition(), e.offset()))
        .collect()
}

/// Creates the consumer (not yet subscribed).
pub fn create(
    properties: &[(String, String)],
    redis_url: &str,
    keys: Keys,
    telemetry: Arc<Telemetry>,
) -> KafkaResult<RelayConsumer> {
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
    })
}
