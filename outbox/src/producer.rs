//! The Kafka side: an idempotent producer that keeps order, and what its errors mean.
//!
//! * `enable.idempotence=true`, `acks=all`: a retried send is written once, and the
//!   records of one partition stay in the order they were produced.
//! * `message.timeout.ms=0` (no local timeout): while Kafka is down, records wait in
//!   librdkafka, which reconnects and retries with backoff, and are delivered in
//!   order when it is back. A timed-out record followed by a delivered one would be a
//!   reordering; with no timeout there is none. The rows stay pending in Postgres
//!   meanwhile, and the pipeline's depth bounds how many wait in memory.
//! * `enable.gapless.guarantee=true`: an error that could leave a gap in a
//!   partition's sequence stops the producer (a fatal error) rather than let later
//!   records overtake; the publisher then starts a fresh producer and re-sends from
//!   the outbox.
//!
//! An error is either about the row ([`Failure::Row`]: it is too large or Kafka
//! rejects its contents; it counts towards `max_retries`) or about Kafka
//! ([`Failure::Kafka`]: unreachable, unknown topic, fenced; the row waits and is
//! sent again, uncounted).

use crm_events_native::kafka::KafkaArgs;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;

/// Why a row did not reach Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The row itself was refused (counted against `max_retries`).
    Row(String),
    /// Kafka or the producer failed (the row waits, uncounted).
    Kafka(String),
}

/// The producer's own settings; `KAFKA_PROP_*` and `--kafka-config` may override.
pub fn properties() -> Vec<(String, String)> {
    [
        ("enable.idempotence", "true"),
        ("acks", "all"),
        ("message.timeout.ms", "0"),
        ("enable.gapless.guarantee", "true"),
        // Rows arrive claimed in batches; a short linger groups each into few requests
        // without adding much to the commit → client latency.
        ("linger.ms", "2"),
        ("socket.nagle.disable", "true"),
        // A produce request caught by a broker that stops answering is retried after
        // 10 s rather than 60 s.
        ("socket.timeout.ms", "10000"),
        ("queue.buffering.max.messages", "1000000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A producer for `kafka`.
pub fn create(kafka: &KafkaArgs) -> Result<FutureProducer, KafkaError> {
    let mut config = ClientConfig::new();
    for (k, v) in kafka.properties_over(properties()) {
        config.set(k, v);
    }
    config.create()
}

/// What an error of a send or a delivery means.
pub fn classify(e: &KafkaError) -> Failure {
    let row_codes = [
        RDKafkaErrorCode::MessageSizeTooLarge,
        RDKafkaErrorCode::InvalidMessageSize,
        RDKafkaErrorCode::InvalidMessage,
        RDKafkaErrorCode::InvalidRecord,
        RDKafkaErrorCode::MessageBatchTooLarge,
        RDKafkaErrorCode::PolicyViolation,
        RDKafkaErrorCode::BadMessage,
    ];
    match e {
        KafkaError::MessageProduction(code) if row_codes.contains(code) => {
            Failure::Row(format!("Kafka refused the record: {e}"))
        }
        other => Failure::Kafka(other.to_string()),
    }
}

/// Whether a send failed only because librdkafka's queue is full (wait, retry).
pub fn is_queue_full(e: &KafkaError) -> bool {
    matches!(
        e,
        KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_records_are_the_rows_fault_and_outages_are_not() {
        let too_large = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        assert!(matches!(classify(&too_large), Failure::Row(_)));
        let down = KafkaError::MessageProduction(RDKafkaErrorCode::AllBrokersDown);
        assert!(matches!(classify(&down), Failure::Kafka(_)));
        let unknown = KafkaError::MessageProduction(RDKafkaErrorCode::UnknownTopicOrPartition);
        assert!(matches!(classify(&unknown), Failure::Kafka(_)));
        assert!(is_queue_full(&KafkaError::MessageProduction(
            RDKafkaErrorCode::QueueFull
        )));
    }

    #[test]
    fn order_and_idempotence_are_on() {
        let p = properties();
        for want in [
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("message.timeout.ms", "0"),
        ] {
            assert!(
                p.iter().any(|(k, v)| k == want.0 && v == want.1),
                "{want:?}"
            );
        }
    }
}
