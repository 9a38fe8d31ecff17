//! What the sidecar knows about itself: Prometheus metrics for its own `/metrics`,
//! the health facts behind `/readyz`, and the heartbeat plus metrics mirror it
//! keeps in Redis for the Spin app.

use crate::batch::Batch;
use crate::writer::Written;
use crm_events_contracts::keys::Keys;
use crm_events_contracts::metrics::{self as m, sidecar_field};
use crm_events_native::ops::Probe;
use prometheus::{Gauge, Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The sidecar's metrics and health state, shared by its tasks.
pub struct Telemetry {
    registry: Registry,
    /// Records consumed from Kafka.
    pub consumed: IntCounter,
    /// Events new to the stream.
    pub written: IntCounter,
    /// Batches written.
    pub batches: IntCounter,
    /// Re-sent outbox records dropped.
    pub duplicates: IntCounter,
    /// Redis data losses found (new epochs).
    pub redis_lost: IntCounter,
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

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    /// Registers every sidecar family, as the shared crate defines it.
    pub fn new() -> Self {
        let registry = Registry::new();
        Self {
            consumed: m::EVENTS_CONSUMED_TOTAL.int_counter(&registry),
            written: m::EVENTS_WRITTEN_TOTAL.int_counter(&registry),
            batches: m::BATCHES_TOTAL.int_counter(&registry),
            duplicates: m::DUPLICATES_DROPPED_TOTAL.int_counter(&registry),
            redis_lost: m::REDIS_DATA_LOST_TOTAL.int_counter(&registry),
            errors: m::ERRORS_TOTAL.int_counter_vec(&registry),
            redis_write: m::REDIS_WRITE_SECONDS.histogram(&registry),
            event_age: m::EVENT_AGE_SECONDS.histogram(&registry),
            last_event_age: m::LAST_EVENT_AGE_SECONDS.gauge(&registry),
            lag: m::CONSUMER_LAG.int_gauge_vec(&registry),
            assigned: m::ASSIGNED_PARTITIONS.int_gauge(&registry),
            registry,
            redis_ok: AtomicBool::new(false),
            kafka_error: Mutex::new(None),
            kafka_error_set: AtomicBool::new(false),
        }
    }

    /// Records a batch that reached Redis: latency, counts, and the events' ages.
    pub fn observe_write(&self, batch: &Batch, written: Written, latency: Duration) {
        self.set_redis_ok(true);
        self.redis_write.observe(latency.as_secs_f64());
        self.batches.inc();
        self.written.inc_by(written.fresh);
        self.duplicates.inc_by(written.duplicates);
        let now_ms = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        let ages = batch.events.iter().filter_map(|e| e.timestamp);
        let mut newest = None;
        for ts in ages {
            let age = (now_ms as i64 - ts).max(0) as f64 / 1000.0;
            self.event_age.observe(age);
            newest = Some(age);
        }
        if let Some(age) = newest {
            self.last_event_age.set(age);
        }
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
    fn ready_checks(&self) -> (bool, serde_json::Value) {
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
        use prometheus::core::Collector;
        let mut fields: Vec<(String, String)> = [
            (sidecar_field::EVENTS_CONSUMED, self.consumed.get() as f64),
            (sidecar_field::EVENTS_WRITTEN, self.written.get() as f64),
            (sidecar_field::BATCHES, self.batches.get() as f64),
            (
                sidecar_field::DUPLICATES_DROPPED,
                self.duplicates.get() as f64,
            ),
            (sidecar_field::REDIS_DATA_LOST, self.redis_lost.get() as f64),
            (sidecar_field::LAST_EVENT_AGE, self.last_event_age.get()),
        ]
        .into_iter()
        .map(|(field, value)| (field.to_string(), value.to_string()))
        .collect();
        for family in self.lag.collect().iter().chain(&self.errors.collect()) {
            for metric in family.get_metric() {
                let Some(label) = metric.get_label().first() else {
                    continue;
                };
                fields.push(if family.name() == m::CONSUMER_LAG.name {
                    let lag = metric.get_gauge().get_value();
                    (sidecar_field::lag(label.value()), lag.to_string())
                } else {
                    let errors = metric.get_counter().get_value();
                    (sidecar_field::errors(label.value()), errors.to_string())
                });
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

impl Probe for Telemetry {
    fn readiness(&self) -> (bool, serde_json::Value) {
        self.ready_checks()
    }

    fn render(&self) -> String {
        m::encode(&self.registry)
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
        t.last_event_age.set(0.25);
        let fields = t.mirror_fields();
        assert!(fields.contains(&("last_event_age_seconds".into(), "0.25".into())));
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
