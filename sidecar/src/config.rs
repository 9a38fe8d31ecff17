//! Settings of the sidecar, from command-line flags or environment variables.
//!
//! Every setting has a flag and an environment variable; defaults are those of the
//! service's earlier releases. Brokers, topic and librdkafka pass-through
//! (`KAFKA_PROP_*`, `--kafka-config`) are [`KafkaArgs`], shared with the publisher.

use clap::Args;
use crm_events_contracts::config::DEFAULT_KAFKA_GROUP;
use crm_events_contracts::keys::DEFAULT_PREFIX;
use crm_events_contracts::outbox::DEFAULT_DEDUP_WINDOW;
pub use crm_events_native::kafka::KafkaArgs;
use std::path::PathBuf;
use std::time::Duration;

/// How the relay consumes and writes.
#[derive(Args, Debug, Clone)]
pub struct RelayConfig {
    /// Brokers, topic, librdkafka properties.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Consumer group.
    #[arg(long, env = "KAFKA_GROUP", default_value = DEFAULT_KAFKA_GROUP)]
    pub kafka_group: String,
    /// Where a group with no committed offset starts: earliest or latest.
    #[arg(long, env = "KAFKA_OFFSET_RESET", default_value = "earliest")]
    pub kafka_offset_reset: String,
    /// Redis URL (redis:// or rediss://, with credentials if needed).
    #[arg(long, env = "REDIS_URL", default_value = "redis://redis:6379")]
    pub redis_url: String,
    /// Redis servers holding the tenant streams (comma-separated URLs): a tenant's
    /// stream lives on the one its id hashes to. Empty: REDIS_URL holds them. Must
    /// list the same servers, in the same order, as the app's redis_shards.
    #[arg(long, env = "REDIS_SHARDS", default_value = "")]
    pub redis_shards: String,
    /// Keep the all-tenants stream (operators' `*` tokens and the viewer's operator
    /// mode read it; events without a tenant go only there). false: tenant streams
    /// only.
    #[arg(long, env = "ALL_TENANTS_STREAM", default_value_t = true, action = clap::ArgAction::Set)]
    pub all_tenants_stream: bool,
    /// Write each event with a tenant to its tenant's stream as well.
    #[arg(long, env = "TENANT_STREAMS", default_value_t = true, action = clap::ArgAction::Set)]
    pub tenant_streams: bool,
    /// Entries each tenant stream keeps at most (0: no count limit); it may exceed
    /// this by 1% between trims.
    #[arg(long, env = "TENANT_STREAM_MAXLEN", default_value_t = 10_000)]
    pub tenant_stream_maxlen: u64,
    /// How long a tenant stream keeps an entry, seconds (0: no age limit). A stream
    /// with no event for this long expires whole.
    #[arg(long, env = "TENANT_RETENTION_SECONDS", default_value_t = crm_events_contracts::tenant::DEFAULT_RETENTION_SECONDS)]
    pub tenant_retention_seconds: u64,
    /// Prefix of every Redis key; must match the app's key_prefix.
    #[arg(long, env = "KEY_PREFIX", default_value = DEFAULT_PREFIX)]
    pub key_prefix: String,
    /// Length of the Redis stream (history kept for resume); it may exceed this by 1%
    /// between trims. 0 keeps everything.
    #[arg(long, env = "STREAM_MAXLEN", default_value_t = 100_000)]
    pub stream_maxlen: u64,
    /// Largest batch written to Redis at once.
    #[arg(long, env = "BATCH_MAX", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub batch_max: u64,
    /// Longest a record waits for its batch to fill, ms.
    #[arg(long, env = "BATCH_LINGER_MS", default_value_t = 2)]
    pub batch_linger_ms: u64,
    /// Values larger than this are relayed as an oversize marker (0 = no limit).
    #[arg(long, env = "MAX_VALUE_BYTES", default_value_t = 1_048_576)]
    pub max_value_bytes: usize,
    /// Heartbeat TTL in Redis, seconds (refreshed every third of it).
    #[arg(long, env = "HEARTBEAT_TTL_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(3..))]
    pub heartbeat_ttl_seconds: u64,
    /// Longest the shutdown waits for the last batch to reach Redis, seconds.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECONDS", default_value_t = 10)]
    pub shutdown_timeout_seconds: u64,
    /// librdkafka statistics interval (consumer lag), ms.
    #[arg(long, env = "KAFKA_STATS_INTERVAL_MS", default_value_t = 5000)]
    pub kafka_stats_interval_ms: u64,
    /// Outbox ids remembered to drop records a publisher re-sent (the newest this
    /// many; 0 turns the check off).
    #[arg(long, env = "OUTBOX_DEDUP_WINDOW", default_value_t = DEFAULT_DEDUP_WINDOW)]
    pub outbox_dedup_window: u64,
}

impl RelayConfig {
    /// The Redis servers of the tenant streams (REDIS_URL when none are listed).
    pub fn shards(&self) -> Vec<String> {
        crm_events_contracts::tenant::parse_shards(&self.redis_shards, &self.redis_url)
    }

    /// Linger as a duration.
    pub fn linger(&self) -> Duration {
        Duration::from_millis(self.batch_linger_ms)
    }

    /// librdkafka properties: ours, then `KAFKA_PROP_*`, then `--kafka-config`
    /// (later wins).
    pub fn kafka_properties(&self) -> Vec<(String, String)> {
        let own = [
            ("group.id", self.kafka_group.clone()),
            ("auto.offset.reset", self.kafka_offset_reset.clone()),
            ("enable.auto.commit", "false".to_string()),
            ("enable.auto.offset.store", "false".to_string()),
            ("enable.partition.eof", "false".to_string()),
            // Prefetch deep enough that the relay never waits on the fetcher; memory
            // stays bounded by queued.max.messages.kbytes (64 MiB by default). With
            // librdkafka's default of 100000 the relay ran at a third of this speed.
            ("queued.min.messages", "1000000".to_string()),
            // Kafka answers a waiting fetch as soon as data arrives, so this only bounds
            // idle polling; brokers that do not answer early (librdkafka's mock) add up
            // to this much latency. --embedded-kafka lowers it.
            ("fetch.wait.max.ms", "100".to_string()),
            // Small fetch requests go out at once rather than waiting on Nagle.
            ("socket.nagle.disable", "true".to_string()),
            // A connection that stops answering without closing (a partition, a
            // half-dead broker) is given up after 10 s, not librdkafka's 60 s: a request
            // caught in flight when a broker went down held the relay for a minute.
            ("socket.timeout.ms", "10000".to_string()),
            // Partitions added to the topic join the group's assignment at the next
            // metadata refresh: within a minute, not librdkafka's default 5.
            ("topic.metadata.refresh.interval.ms", "60000".to_string()),
            (
                "statistics.interval.ms",
                self.kafka_stats_interval_ms.to_string(),
            ),
        ];
        self.kafka
            .properties_over(own.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }
}

/// What `crm-events-sidecar` (or `… run`) runs with: the relay, its ops port and the
/// embedded broker of demos.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub relay: RelayConfig,
    /// Address of the sidecar's /healthz, /readyz and /metrics.
    #[arg(long, env = "HTTP_LISTEN", default_value = "0.0.0.0:9090")]
    pub http_listen: String,
    /// Start an in-memory Kafka-protocol broker with the topic (3 partitions) and a
    /// demo producer, and relay from it; KAFKA_BROKERS is ignored.
    #[arg(long, env = "EMBEDDED_KAFKA", default_value_t = false)]
    pub embedded_kafka: bool,
    /// Demo events per second with --embedded-kafka (0: no demo producer; `make run`
    /// writes its demo events through the outbox instead).
    #[arg(long, env = "DEMO_RATE", default_value_t = 5)]
    pub demo_rate: u32,
    /// With --embedded-kafka: write the broker's address (host:port) into this file
    /// once it listens, for other processes (the outbox publisher) to find it.
    #[arg(long, env = "EMBEDDED_KAFKA_FILE")]
    pub embedded_kafka_file: Option<PathBuf>,
}
