//! The Kafka consumer and what happens on rebalance.
//!
//! On assignment each partition starts at its Redis watermark + 1 (the offset after
//! the last event already in the stream), not at the committed offset: the commit
//! follows the write, so after a crash between the two the committed offset is
//! behind and would re-read events the stream already has. (The write script skips
//! those anyway; starting at the watermark just avoids reading them.) A partition
//! with no watermark ([`Unwritten`]):
//! * whose group committed an offset: the events before it were in a stream Redis no
//!   longer has, so the partition starts `STREAM_MAXLEN` offsets before it (all the
//!   stream can have held) and the writer is told to start a new epoch
//!   ([`crate::continuity`]);
//! * with no commit, of a topic the relay has written before: the relay has never
//!   written this partition (it was added to the topic, or its first events came
//!   while no sidecar ran), so it starts at its first offset — whatever
//!   `auto.offset.reset` says, which is for a group's first start only;
//! * otherwise (the group's first start): where `auto.offset.reset` says.

use crate::telemetry::Telemetry;
use crm_events_contracts::keys::Keys;
use crm_events_native::logging::redact_url;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The consumer type the relay uses.
pub type RelayConsumer = StreamConsumer<RelayContext>;

/// Callbacks from librdkafka: rebalances, statistics (lag), errors.
pub struct RelayContext {
    /// Each destination's Redis and watermark hash.
    watermarks: Vec<(redis::Client, Watermarks)>,
    telemetry: Arc<Telemetry>,
    /// The stream's length limit (how far back a lost stream reached).
    maxlen: u64,
}

/// Where one destination keeps its watermarks.
pub struct Watermarks {
    /// Its Redis.
    pub redis_url: String,
    /// Its watermark hash.
    pub key: String,
    /// Set when its watermarks are found gone at assignment.
    pub lost_at_start: Arc<AtomicBool>,
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
    /// Sets each partition's start offset to its watermark + 1 (the least over the
    /// destinations), where every destination has one; where one has none, see
    /// [`Unwritten`].
    fn start_at_watermarks(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        if tpl.count() == 0 {
            return;
        }
        let mut all = Vec::new();
        for (client, w) in &self.watermarks {
            match read_watermarks(client, &w.key) {
                Ok(marks) => all.push(marks),
                // The writers still skip what the streams have; only re-reading is
                // not avoided.
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read watermarks at assignment; starting at committed offsets");
                    return;
                }
            }
        }
        let assigned: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        let mut missing = Vec::new();
        for (topic, partition) in assigned {
            let field = Keys::offsets_field(&topic, partition);
            let marks: Vec<Option<i64>> = all.iter().map(|m| m.get(&field).copied()).collect();
            let least = marks.iter().flatten().min().copied();
            if marks.iter().all(Option::is_some) {
                set_start(tpl, &topic, partition, least.unwrap_or(-1) + 1);
            } else {
                let lacking = marks.iter().map(Option::is_none).collect();
                missing.push(Missing {
                    topic,
                    partition,
                    least,
                    lacking,
                });
            }
        }
        // A field is `<topic>/<partition>`; Kafka's topic names have no `/`.
        let written = |topic: &str| {
            all.iter()
                .flat_map(|m| m.keys())
                .any(|f| f.rsplit_once('/').is_some_and(|(t, _)| t == topic))
        };
        self.start_unwritten(consumer, tpl, &missing, written);
    }
}

/// Reads one destination's watermark hash.
fn read_watermarks(client: &redis::Client, key: &str) -> redis::RedisResult<HashMap<String, i64>> {
    client
        .get_connection_with_timeout(std::time::Duration::from_secs(3))
        .and_then(|mut c| redis::cmd("HGETALL").arg(key).query(&mut c))
}

/// A partition some destination has no watermark for.
struct Missing {
    topic: String,
    partition: i32,
    /// The least watermark of the destinations that have one.
    least: Option<i64>,
    /// Per destination: it has none.
    lacking: Vec<bool>,
}

/// Where a partition with no watermark in Redis starts.
#[derive(Debug, PartialEq)]
enum Unwritten {
    /// The group committed an offset: the stream that held the events before it is
    /// gone (Redis lost it). Read again from `from` (`maxlen` before the commit)
    /// under a new epoch.
    Lost { from: i64 },
    /// No commit, but the relay has written other partitions of the topic: this one
    /// is new to it (added to the topic, or its first events came while no sidecar
    /// ran). Read from its first offset, so none of its events is skipped.
    New,
    /// The group's first start: where `auto.offset.reset` says.
    FirstStart,
}

impl Unwritten {
    fn classify(committed: Option<i64>, topic_written: bool, maxlen: u64) -> Unwritten {
        match committed {
            Some(_) if maxlen == 0 => Unwritten::Lost { from: 0 },
            Some(c) => Unwritten::Lost {
                from: (c - maxlen as i64).max(0),
            },
            None if topic_written => Unwritten::New,
            None => Unwritten::FirstStart,
        }
    }
}

impl RelayContext {
    /// Sets the start of the partitions without a watermark ([`Unwritten`]).
    fn start_unwritten(
        &self,
        consumer: &BaseConsumer<Self>,
        tpl: &mut TopicPartitionList,
        missing: &[Missing],
        topic_written: impl Fn(&str) -> bool,
    ) {
        if missing.is_empty() {
            return;
        }
        let mut ask = TopicPartitionList::new();
        for m in missing {
            ask.add_partition(&m.topic, m.partition);
        }
        let Ok(committed) = consumer.committed_offsets(ask, std::time::Duration::from_secs(5))
        else {
            return;
        };
        for e in committed.elements() {
            let commit = match e.offset() {
                Offset::Offset(c) => Some(c),
                _ => None,
            };
            let (topic, partition) = (e.topic(), e.partition());
            let Some(m) = missing
                .iter()
                .find(|m| m.topic == topic && m.partition == partition)
            else {
                continue;
            };
            match Unwritten::classify(commit, topic_written(topic), self.maxlen) {
                Unwritten::Lost { from } => {
                    tracing::warn!(
                        partition,
                        committed = commit,
                        from,
                        "no watermark but a committed offset: the stream was lost (or is new), reading again"
                    );
                    let from = m.least.map_or(from, |least| from.min(least + 1));
                    set_start(tpl, topic, partition, from);
                    for ((_, w), lacking) in self.watermarks.iter().zip(&m.lacking) {
                        if *lacking {
                            w.lost_at_start.store(true, Ordering::Relaxed);
                        }
                    }
                }
                Unwritten::New => {
                    tracing::info!(
                        partition,
                        "a partition the relay has never written: reading it from its first offset"
                    );
                    set_position(tpl, topic, partition, Offset::Beginning);
                }
                Unwritten::FirstStart => {
                    if let Some(least) = m.least {
                        set_start(tpl, topic, partition, least + 1);
                    }
                }
            }
        }
    }
}

fn set_start(tpl: &mut TopicPartitionList, topic: &str, partition: i32, offset: i64) {
    set_position(tpl, topic, partition, Offset::Offset(offset));
}

fn set_position(tpl: &mut TopicPartitionList, topic: &str, partition: i32, offset: Offset) {
    if let Err(e) = tpl.set_partition_offset(topic, partition, offset) {
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
    /// Each destination's watermarks.
    pub watermarks: Vec<Watermarks>,
    /// Metrics and health.
    pub telemetry: Arc<Telemetry>,
    /// `STREAM_MAXLEN`.
    pub maxlen: u64,
}

/// Creates the consumer (not yet subscribed).
pub fn create(properties: &[(String, String)], setup: Setup) -> KafkaResult<RelayConsumer> {
    let Setup {
        watermarks,
        telemetry,
        maxlen,
    } = setup;
    let mut config = ClientConfig::new();
    for (k, v) in properties {
        config.set(k, v);
    }
    let mut clients = Vec::new();
    for w in watermarks {
        let client = redis::Client::open(w.redis_url.as_str()).map_err(|e| {
            KafkaError::ClientCreation(format!("Redis URL {}: {e}", redact_url(&w.redis_url)))
        })?;
        clients.push((client, w));
    }
    config.create_with_context(RelayContext {
        watermarks: clients,
        telemetry,
        maxlen,
    })
}

#[cfg(test)]
mod tests {
    use super::Unwritten;

    #[test]
    fn a_commit_without_a_watermark_is_a_lost_stream_read_again_from_maxlen_before() {
        let lost = |from| Unwritten::Lost { from };
        assert_eq!(Unwritten::classify(Some(500), true, 100), lost(400));
        assert_eq!(Unwritten::classify(Some(50), false, 100), lost(0));
        assert_eq!(Unwritten::classify(Some(50), true, 0), lost(0));
    }

    #[test]
    fn no_commit_is_a_new_partition_once_the_topic_was_written_else_a_first_start() {
        assert_eq!(Unwritten::classify(None, true, 100), Unwritten::New);
        assert_eq!(Unwritten::classify(None, false, 100), Unwritten::FirstStart);
    }
}
