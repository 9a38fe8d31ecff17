//! Settings of the sidecar, from command-line flags or environment variables.
//!
//! Every setting has a flag and an environment variable; defaults are those of the
//! service's earlier releases. Any librdkafka property can be passed through, with
//! `--kafka-config key=value` (repeatable) or an environment variable
//! `KAFKA_PROP_<NAME>` where `_` stands for `.` (`KAFKA_PROP_SECURITY_PROTOCOL=SASL_SSL`
//! sets `security.protocol`), so SASL and TLS clusters work.

use clap::Args;
use crm_events_contracts::config::{
    DEFAULT_KAFKA_BROKERS, DEFAULT_KAFKA_GROUP, DEFAULT_KAFKA_TOPIC,
};
use crm_events_contracts::keys::DEFAULT_PREFIX;
use std::time::Duration;

/// Environment prefix of librdkafka pass-through properties.
pub const KAFKA_PROP_PREFIX: &str = "KAFKA_PROP_";

/// Where Kafka is: shared by `run` and `produce`.
#[derive(Args, Debug, Clone)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers.
    #[arg(long = "kafka-brokers", env = "KAFKA_BROKERS", default_value = DEFAULT_KAFKA_BROKERS)]
    pub brokers: String,
    /// Topic.
    #[arg(long = "kafka-topic", env = "KAFKA_TOPIC", default_value = DEFAULT_KAFKA_TOPIC)]
    pub topic: String,
    /// Extra librdkafka property, key=value (repeatable); see also KAFKA_PROP_*.
    #[arg(long = "kafka-config", value_parser = parse_property)]
    pub properties: Vec<(String, String)>,
}

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
}

impl RelayConfig {
    /// Linger as a duration.
    pub fn linger(&self) -> Duration {
        Duration::from_millis(self.batch_linger_ms)
    }

    /// librdkafka properties: ours, then `KAFKA_PROP_*`, then `--kafka-config`
    /// (later wins).
    pub fn kafka_properties(&self) -> Vec<(String, String)> {
        let mut props = vec![
            ("bootstrap.servers".to_string(), self.kafka.brokers.clone()),
            ("group.id".to_string(), self.kafka_group.clone()),
            (
                "auto.offset.reset".to_string(),
                self.kafka_offset_reset.clone(),
            ),
            ("enable.auto.commit".to_string(), "false".to_string()),
            ("enable.auto.offset.store".to_string(), "false".to_string()),
            ("enable.partition.eof".to_string(), "false".to_string()),
            // Prefetch deep enough that the relay never waits on the fetcher; memory
            // stays bounded by queued.max.messages.kbytes (64 MiB by default). With
            // librdkafka's default of 100000 the relay ran at a third of this speed.
            ("queued.min.messages".to_string(), "1000000".to_string()),
            // Kafka answers a waiting fetch as soon as data arrives, so this only bounds
            // idle polling; brokers that do not answer early (librdkafka's mock) add up
            // to this much latency. --embedded-kafka lowers it.
            ("fetch.wait.max.ms".to_string(), "100".to_string()),
            // Small fetch requests go out at once rather than waiting on Nagle.
            ("socket.nagle.disable".to_string(), "true".to_string()),
            (
                "statistics.interval.ms".to_string(),
                self.kafka_stats_interval_ms.to_string(),
            ),
        ];
        props.extend(env_properties(std::env::vars()));
        props.extend(self.kafka.properties.iter().cloned());
        props
    }
}

/// `KAFKA_PROP_SASL_MECHANISM=PLAIN` -> `("sasl.mechanism", "PLAIN")`.
pub fn env_properties(
    vars: impl Iterator<Item = (String, String)>,
) -> impl Iterator<Item = (String, String)> {
    vars.filter_map(|(k, v)| {
        let name = k.strip_prefix(KAFKA_PROP_PREFIX)?;
        (!name.is_empty()).then(|| (name.to_lowercase().replace('_', "."), v))
    })
}

/// Parses a `key=value` librdkafka property (`--kafka-config`).
pub fn parse_property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected key=value, got {s:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_properties_map_underscores_to_dots() {
        let vars = vec![
            (
                "KAFKA_PROP_SECURITY_PROTOCOL".to_string(),
                "SASL_SSL".to_string(),
            ),
            ("KAFKA_BROKERS".to_string(), "x".to_string()),
            ("KAFKA_PROP_".to_string(), "ignored".to_string()),
        ];
        let props: Vec<_> = env_properties(vars.into_iter()).collect();
        assert_eq!(
            props,
            vec![("security.protocol".to_string(), "SASL_SSL".to_string())]
        );
    }

    #[test]
    fn property_flag_needs_key_and_value() {
        assert_eq!(
            parse_property("sasl.password=a=b").unwrap(),
            ("sasl.password".to_string(), "a=b".to_string())
        );
        assert!(parse_property("novalue").is_err());
        assert!(parse_property("=x").is_err());
    }
}
