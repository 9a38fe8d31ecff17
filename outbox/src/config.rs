//! Settings of the publisher, from flags or environment variables. The defaults are
//! the earlier .NET publisher's: poll every 5 s, batches of 100, `acks=all`,
//! `enable.idempotence=true`, 5 attempts, topic `aetherlink.events`.

use clap::Args;
use crm_events_contracts::outbox::{self, KeyBy};
use crm_events_native::kafka::KafkaArgs;
use std::time::Duration;

/// Where the outbox lives.
#[derive(Args, Debug, Clone)]
pub struct DatabaseArgs {
    /// Postgres URL of the CRM database (`postgres://user:password@host:5432/db`;
    /// `?sslmode=require` for TLS).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://crm_events@postgres:5432/crm"
    )]
    pub database_url: String,
}

/// How the publisher works.
#[derive(Args, Debug, Clone)]
pub struct PublisherConfig {
    /// The outbox database.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Kafka brokers, topic and librdkafka properties.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Rows per claim.
    #[arg(long, env = "OUTBOX_BATCH_SIZE", default_value_t = outbox::DEFAULT_BATCH_SIZE, value_parser = clap::value_parser!(u64).range(1..=50_000))]
    pub batch_size: u64,
    /// Claims produced but not yet acknowledged, at most (the pipeline's depth).
    #[arg(long, env = "OUTBOX_PIPELINE_DEPTH", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub pipeline_depth: u64,
    /// Postgres sessions that mark acknowledged rows published, in turn (the marks
    /// are the publisher's most expensive statements; more help when the database
    /// has cores to spare).
    #[arg(long, env = "OUTBOX_MARK_SESSIONS", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=16))]
    pub mark_sessions: u64,
    /// Poll interval when no notification arrives, ms (LISTEN/NOTIFY wakes it at once).
    #[arg(long, env = "OUTBOX_POLL_INTERVAL_MS", default_value_t = outbox::DEFAULT_POLL_INTERVAL_MS, value_parser = clap::value_parser!(u64).range(10..))]
    pub poll_interval_ms: u64,
    /// Refused attempts before a row is marked failed.
    #[arg(long, env = "OUTBOX_MAX_RETRIES", default_value_t = outbox::DEFAULT_MAX_RETRIES, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_retries: u32,
    /// Delay before a refused row is tried again, ms (doubling per attempt, at most 60 s);
    /// its tenant's later rows wait behind it.
    #[arg(long, env = "OUTBOX_RETRY_BACKOFF_MS", default_value_t = 1_000)]
    pub retry_backoff_ms: u64,
    /// Record key: `tenant` (one tenant's events in order on one partition) or
    /// `aggregate` (`<tenant>/<aggregate id>`: one entity's events in order).
    #[arg(long, env = "OUTBOX_KEY", default_value = "tenant")]
    pub key: String,
    /// Payload fields naming the aggregate, first present wins (`OUTBOX_KEY=aggregate`).
    #[arg(long, env = "OUTBOX_AGGREGATE_FIELDS", default_value = outbox::DEFAULT_AGGREGATE_FIELDS)]
    pub aggregate_fields: String,
    /// Largest record (key + value + headers), bytes; a larger row is refused (and
    /// ends failed) instead of being sent.
    #[arg(long, env = "OUTBOX_MAX_MESSAGE_BYTES", default_value_t = outbox::DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,
    /// Days a published row is kept (0 keeps them forever).
    #[arg(long, env = "OUTBOX_RETENTION_DAYS", default_value_t = outbox::DEFAULT_RETENTION_DAYS as f64)]
    pub retention_days: f64,
    /// Rows deleted per retention statement (small, so the table never locks long).
    #[arg(long, env = "OUTBOX_RETENTION_BATCH", default_value_t = 1_000, value_parser = clap::value_parser!(i64).range(1..=100_000))]
    pub retention_batch: i64,
    /// Seconds between retention passes.
    #[arg(long, env = "OUTBOX_RETENTION_INTERVAL_SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub retention_interval_seconds: u64,
    /// How often a standby tries to take the lease, ms.
    #[arg(long, env = "OUTBOX_STANDBY_POLL_MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(10..))]
    pub standby_poll_ms: u64,
    /// Longest the graceful stop waits for Kafka's acknowledgements, seconds.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECONDS", default_value_t = 10)]
    pub shutdown_timeout_seconds: u64,
    /// Apply the migrations at start.
    #[arg(long, env = "OUTBOX_MIGRATE", default_value_t = true, action = clap::ArgAction::Set)]
    pub migrate: bool,
}

impl PublisherConfig {
    /// The record key rule.
    pub fn key_by(&self) -> Result<KeyBy, String> {
        KeyBy::parse(&self.key, &self.aggregate_fields)
    }

    /// The fallback poll interval.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    /// How long a refused row waits before its `attempt`-th retry.
    pub fn retry_delay(&self, attempt: u32) -> Duration {
        let factor = 1u64 << attempt.saturating_sub(1).min(16);
        Duration::from_millis(self.retry_backoff_ms.saturating_mul(factor).min(60_000))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: PublisherConfig,
    }

    #[test]
    fn defaults_are_the_old_publishers() {
        let c = Cli::parse_from(["x"]).config;
        assert_eq!(c.batch_size, 100);
        assert_eq!(c.poll_interval(), Duration::from_secs(5));
        assert_eq!(c.max_retries, 5);
        assert_eq!(c.kafka.topic, "aetherlink.events");
        assert_eq!(c.key_by().unwrap(), KeyBy::Tenant);
        assert!(c.migrate);
    }

    #[test]
    fn retry_delays_double_and_cap() {
        let c = Cli::parse_from(["x", "--retry-backoff-ms", "100"]).config;
        let d: Vec<u128> = (1..=4).map(|a| c.retry_delay(a).as_millis()).collect();
        assert_eq!(d, [100, 200, 400, 800]);
        assert_eq!(c.retry_delay(40), Duration::from_secs(60));
    }
}

/// What `crm-events-outbox` (or `… run`) runs with: the publisher and its ops port.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub publisher: PublisherConfig,
    /// Address of the publisher's /healthz, /readyz and /metrics.
    #[arg(long, env = "HTTP_LISTEN", default_value = "0.0.0.0:9094")]
    pub http_listen: String,
}
