//! What the publisher knows about itself: its metrics (families from the shared
//! crate) and the facts behind its `/readyz`.

use crate::store::Backlog;
use crm_events_contracts::metrics as m;
use crm_events_native::ops::Probe;
use prometheus::{Gauge, Histogram, IntCounter, IntCounterVec, IntGauge, Registry};
use std::sync::Mutex;

/// Whether a dependency answered, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Not checked yet.
    Unknown,
    /// Answered.
    Ok,
    /// Failed, with the error.
    Failed(String),
}

impl Check {
    fn json(&self) -> serde_json::Value {
        match self {
            Check::Unknown => "unknown".into(),
            Check::Ok => "ok".into(),
            Check::Failed(e) => e.clone().into(),
        }
    }
}

/// The publisher's metrics and health, shared by its tasks.
pub struct Telemetry {
    registry: Registry,
    /// Rows published.
    pub published: IntCounter,
    /// Rows marked failed.
    pub failed: IntCounter,
    /// Errors by kind (`row`, `kafka`, `postgres`).
    pub errors: IntCounterVec,
    /// occurred_at -> acknowledged.
    pub latency: Histogram,
    /// 1 while leading.
    pub leader: IntGauge,
    /// Rows deleted by retention, by table.
    pub retention_deleted: IntCounterVec,
    pending: IntGauge,
    oldest: Gauge,
    failed_rows: IntGauge,
    postgres: Mutex<Check>,
    kafka: Mutex<Check>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

fn lock(m: &Mutex<Check>) -> std::sync::MutexGuard<'_, Check> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Telemetry {
    /// Registers every publisher family, as the shared crate defines it.
    pub fn new() -> Self {
        let registry = Registry::new();
        Self {
            published: m::OUTBOX_PUBLISHED_TOTAL.int_counter(&registry),
            failed: m::OUTBOX_FAILED_TOTAL.int_counter(&registry),
            errors: m::OUTBOX_ERRORS_TOTAL.int_counter_vec(&registry),
            latency: m::OUTBOX_PUBLISH_LATENCY_SECONDS.histogram(&registry),
            leader: m::OUTBOX_LEADER.int_gauge(&registry),
            retention_deleted: m::OUTBOX_RETENTION_DELETED_TOTAL.int_counter_vec(&registry),
            pending: m::OUTBOX_PENDING_ROWS.int_gauge(&registry),
            oldest: m::OUTBOX_OLDEST_PENDING_AGE_SECONDS.gauge(&registry),
            failed_rows: m::OUTBOX_FAILED_ROWS.int_gauge(&registry),
            registry,
            postgres: Mutex::new(Check::Unknown),
            kafka: Mutex::new(Check::Unknown),
        }
    }

    /// Counts an error of `kind`.
    pub fn error(&self, kind: &str) {
        self.errors.with_label_values(&[kind]).inc();
    }

    /// Records the backlog the stats task read.
    pub fn set_backlog(&self, b: Backlog) {
        self.pending.set(b.pending);
        self.oldest.set(b.oldest_age_seconds);
        self.failed_rows.set(b.failed);
    }

    /// Records whether Postgres answered.
    pub fn set_postgres(&self, check: Check) {
        *lock(&self.postgres) = check;
    }

    /// Records whether Kafka answered.
    pub fn set_kafka(&self, check: Check) {
        *lock(&self.kafka) = check;
    }

    /// Whether this publisher holds the lease.
    pub fn is_leader(&self) -> bool {
        self.leader.get() == 1
    }
}

impl Probe for Telemetry {
    /// Ready when Postgres and Kafka both answer; the role is reported beside.
    fn readiness(&self) -> (bool, serde_json::Value) {
        let postgres = lock(&self.postgres).clone();
        let kafka = lock(&self.kafka).clone();
        let ready = postgres == Check::Ok && kafka == Check::Ok;
        let role = if self.is_leader() {
            "leader"
        } else {
            "standby"
        };
        (
            ready,
            serde_json::json!({
                "postgres": postgres.json(),
                "kafka": kafka.json(),
                "role": role,
                "pending_rows": self.pending.get(),
                "failed_rows": self.failed_rows.get(),
            }),
        )
    }

    fn render(&self) -> String {
        m::encode(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_both_and_reports_the_role() {
        let t = Telemetry::new();
        assert!(!t.readiness().0);
        t.set_postgres(Check::Ok);
        t.set_kafka(Check::Failed("all brokers down".into()));
        let (ready, checks) = t.readiness();
        assert!(!ready);
        assert_eq!(checks["kafka"], "all brokers down");
        assert_eq!(checks["role"], "standby");
        t.set_kafka(Check::Ok);
        t.leader.set(1);
        t.set_backlog(Backlog {
            pending: 3,
            oldest_age_seconds: 1.5,
            failed: 1,
        });
        let (ready, checks) = t.readiness();
        assert!(ready);
        assert_eq!(checks["role"], "leader");
        let text = t.render();
        for want in [
            "crm_events_outbox_pending_rows 3",
            "crm_events_outbox_oldest_pending_age_seconds 1.5",
            "crm_events_outbox_failed_rows 1",
            "crm_events_outbox_leader 1",
        ] {
            assert!(text.lines().any(|l| l == want), "{want} in\n{text}");
        }
    }
}
