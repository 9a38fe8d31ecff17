//! Kafka for tests and benchmarks: librdkafka's mock cluster (a real Kafka-protocol broker on
//! loopback, owned by the test process) and a producer.

use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use std::time::Duration;

/// A mock cluster with one topic of `partitions` partitions.
pub struct Kafka {
    pub cluster: MockCluster<'static, DefaultProducerContext>,
    pub topic: String,
    pub producer: ThreadedProducer<DefaultProducerContext>,
}

impl Kafka {
    pub fn start(topic: &str, partitions: i32) -> Kafka {
        Self::start_with_linger(topic, partitions, 2)
    }

    /// As [`Kafka::start`], with the producer's `linger.ms` (0 for latency runs).
    pub fn start_with_linger(topic: &str, partitions: i32, linger_ms: u32) -> Kafka {
        Self::start_with(topic, partitions, 1, linger_ms)
    }

    /// A cluster of `brokers` brokers (ids 1..=brokers), the topic replicated on all.
    pub fn start_on(topic: &str, partitions: i32, brokers: i32) -> Kafka {
        Self::start_with(topic, partitions, brokers, 2)
    }

    fn start_with(topic: &str, partitions: i32, brokers: i32, linger_ms: u32) -> Kafka {
        let cluster = MockCluster::new(brokers).expect("mock cluster");
        cluster
            .create_topic(topic, partitions, brokers)
            .expect("create topic");
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("linger.ms", linger_ms.to_string())
            .set("socket.nagle.disable", "true")
            .set("queue.buffering.max.messages", "1000000")
            .create()
            .expect("producer");
        Kafka {
            cluster,
            topic: topic.to_string(),
            producer,
        }
    }

    pub fn brokers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// Produces one record to a partition.
    pub fn send(&self, partition: i32, key: Option<&[u8]>, value: Option<&[u8]>) {
        let mut record: BaseRecord<'_, [u8], [u8]> =
            BaseRecord::to(&self.topic).partition(partition);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        let mut record = record;
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((e, r)) => {
                    // Queue full: let the producer drain, then retry the same record.
                    assert!(
                        matches!(
                            e,
                            rdkafka::error::KafkaError::MessageProduction(
                                rdkafka::types::RDKafkaErrorCode::QueueFull
                            )
                        ),
                        "produce failed: {e}"
                    );
                    record = r;
                    self.producer.poll(Duration::from_millis(10));
                }
            }
        }
    }

    /// Produces `n` CRM-like JSON events, round-robin over partitions; returns how
    /// many went to each partition.
    pub fn send_events(&self, n: usize, partitions: i32, first: usize) -> Vec<usize> {
        let mut per = vec![0; partitions as usize];
        for i in first..first + n {
            let p = (i % partitions as usize) as i32;
            let value = format!(
                r#"{{"Type":"JobCreated","TenantId":"t{}","JobId":{i},"Title":"job {i}"}}"#,
                i % 3
            );
            self.send(p, Some(b"JobCreated"), Some(value.as_bytes()));
            per[p as usize] += 1;
        }
        self.flush();
        per
    }

    pub fn flush(&self) {
        self.producer.flush(Duration::from_secs(30)).expect("flush");
    }
}
