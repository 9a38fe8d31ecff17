//! What the sidecar knows about itself: Prometheus metrics for its own `/metrics`,
//! the health facts behind `/readyz`, and the heartbeat plus metrics mirror it
//! keeps in Redis for the Spin app.

use crm_events_contracts::keys::Keys;
use crm_events_contracts::metrics::{names, register, sidecar_field};
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// The sidecar's metrics and health state, shared by its tasks.
pub struct Telemetry {
    registry: Registry,
    /// Records consumed from Kafka.
    pub consumed: IntCounter,
    /// Events new to the stream.
    pub written: IntCounter,
    /// Batches written.
    pub batches: IntCounter,
    /// Errors by kind (`redis`, `kafka`, `commit`).
    pub errors: IntCounterVec,
    /// Redis batch write latency.
    pub redis_write: Histogram,
    /// Event age, Kafka timestamp -> written.
    pub event_age: Histogram,
    /// Age of the newest written event at its write.
    pub last_event_age: Gauge,
    /// Lag by partition.
    pub lag: IntGaugeVec,
    /// Partitions currently assigned.
    pub assigned: IntGauge,
    redis_ok: AtomicBool,
    kafka_error: Mutex<Option<String>>,
    /// Whether `kafka_error` is set: checked on every record without the lock.
    kafka_error_set: AtomicBool,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Names and labels here are constants; a failure is a programming error.
    r.expect("valid metric definition")
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    /// Registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let consumed = register(
            &registry,
            must(IntCounter::new(
                names::EVENTS_CONSUMED_TOTAL,
                "Kafka records consumed.",
            )),
        );
        let written = register(
            &registry,
            must(IntCounter::new(
                names::EVENTS_WRITTEN_TOTAL,
                "Events written to the Redis stream.",
            )),
        );
        let batches = register(
            &registry,
            must(IntCounter::new(
                names::BATCHES_TOTAL,
                "Batches written to Redis.",
            )),
        );
        let errors = register(
            &registry,
            must(IntCounterVec::new(
                Opts::new(names::ERRORS_TOTAL, "Errors by kind."),
                &["kind"],
            )),
        );
        let redis_write = register(
            &registry,
            must(Histogram::with_opts(
                HistogramOpts::new(
                    names::REDIS_WRITE_SECONDS,
                    "Latency of one batch write to Redis, seconds.",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                ]),
            )),
        );
        let event_age = register(
            &registry,
            must(Histogram::with_opts(
                HistogramOpts::new(
                    names::EVENT_AGE_SECONDS,
                    "Event age from its Kafka timestamp to its write to Redis, seconds.",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    300.0,
                ]),
            )),
        );
        let last_event_age = register(
            &registry,
            must(Gauge::new(
                names::LAST_EVENT_AGE_SECONDS,
                "Age of the newest written event at its write, seconds.",
            )),
        );
        let lag = register(
            &registry,
            must(IntGaugeVec::new(
                Opts::new(names::CONSUMER_LAG, "Consumer lag by partition, records."),
                &["partition"],
            )),
        );
        let assigned = register(
            &registry,
            must(IntGauge::new(
                names::ASSIGNED_PARTITIONS,
                "Partitions assigned to this sidecar.",
            )),
        );
        Self {
            registry,
            consumed,
            written,
            batches,
            errors,
            redis_write,
            event_age,
            last_event_age,
            lag,
            assigned,
            redis_ok: AtomicBool::new(false),
            kafka_error: Mutex::new(None),
            kafka_error_set: AtomicBool::new(false),
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        must(prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out));
        String::from_utf8(out).unwrap_or_default()
    }

    /// Records whether the last Redis operation worked.
    pub fn set_redis_ok(&self, ok: bool) {
        self.redis_ok.store(ok, Ordering::Relaxed);
    }

    /// Whether the last Redis operation worked.
    pub fn redis_ok(&self) -> bool {
        self.redis_ok.load(Ordering::Relaxed)
    }

    /// Records a Kafka client error (cleared when records flow again).
    pub fn set_kafka_error(&self, error: Option<String>) {
        let mut slot = self.kafka_error.lock().unwrap_or_else(|p| p.into_inner());
        self.kafka_error_set
            .store(error.is_some(), Ordering::Relaxed);
        *slot = error;
    }

    /// Whether a Kafka client error stands (cheap: no lock, no copy).
    pub fn has_kafka_error(&self) -> bool {
        self.kafka_error_set.load(Ordering::Relaxed)
    }

    /// The last Kafka client error, if it still stands.
    pub fn kafka_error(&self) -> Option<String> {
        self.kafka_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Readiness: `(ready, checks)`; ready needs Redis and a partition assignment.
    pub fn readiness(&self) -> (bool, serde_json::Value) {
        let redis = self.redis_ok();
        let assigned = self.assigned.get();
        let kafka = self.kafka_error();
        let ready = redis && assigned > 0;
        (
            ready,
            serde_json::json!({
                "redis": if redis { "ok".to_string() } else { "unreachable".to_string() },
                "kafka": kafka.unwrap_or_else(|| "ok".to_string()),
                "assigned_partitions": assigned,
            }),
        )
    }

    /// The `(field, value)` pairs mirrored into Redis for the Spin `/metrics`.
    pub fn mirror_fields(&self) -> Vec<(String, String)> {
        let mut fields = vec![
            (
                sidecar_field::EVENTS_CONSUMED.to_string(),
                self.consumed.get().to_string(),
            ),
            (
                sidecar_field::EVENTS_WRITTEN.to_string(),
                self.written.get().to_string(),
            ),
            (
                sidecar_field::BATCHES.to_string(),
                self.batches.get().to_string(),
            ),
            (
                sidecar_field::LAST_EVENT_AGE.to_string(),
                self.last_event_age.get().to_string(),
            ),
        ];
        for family in self.registry.gather() {
            let name = family.name();
            for m in family.get_metric() {
                let label = m.get_label().first().map(|l| l.value().to_string());
                match (name, label) {
                    (names::CONSUMER_LAG, Some(p)) => fields.push((
                        sidecar_field::lag(p.parse().unwrap_or(-1)),
                        m.get_gauge().get_value().to_string(),
                    )),
                    (names::ERRORS_TOTAL, Some(kind)) => fields.push((
                        sidecar_field::errors(&kind),
                        m.get_counter().get_value().to_string(),
                    )),
                    _ => {}
                }
            }
        }
        fields
    }

    /// Writes the heartbeat (with its TTL) and the metrics mirror.
    pub async fn beat(
        &self,
        conn: &mut redis::aio::ConnectionManager,
        keys: &Keys,
        ttl_seconds: u64,
    ) -> redis::RedisResult<()> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .set_ex(keys.heartbeat(), std::process::id(), ttl_seconds)
            .ignore()
            .hset_multiple(keys.sidecar_metrics(), &self.mirror_fields())
            .ignore();
        pipe.query_async(conn).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_and_render_share_names() {
        let t = Telemetry::new();
        t.consumed.inc_by(3);
        t.lag.with_label_values(&["2"]).set(7);
        t.errors.with_label_values(&["redis"]).inc();
        let fields = t.mirror_fields();
        assert!(fields.contains(&("events_consumed_total".into(), "3".into())));
        assert!(fields.contains(&("lag:2".into(), "7".into())));
        assert!(fields.contains(&("errors_total:redis".into(), "1".into())));
        let text = t.render();
        assert!(text.contains("crm_events_sidecar_consumer_lag{partition=\"2\"} 7"));
        assert!(text.contains("# TYPE crm_events_sidecar_redis_write_seconds histogram"));
        // The SLO rules select the 1 s bucket as le="1".
        assert!(text.contains(r#"crm_events_sidecar_event_age_seconds_bucket{le="1"}"#));
        let (ready, checks) = t.readiness();
        assert!(!ready);
        assert_eq!(checks["redis"], "unreachable");
    }
}
