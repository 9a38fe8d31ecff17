//! Metric names and the Prometheus exposition of the Spin `/metrics` route.
//!
//! The Spin components keep no state between requests, so their counters live in
//! Redis ([`crate::keys::Keys`]) and `/metrics` renders a [`Snapshot`] read from there.
//! The sidecar mirrors its headline numbers into a Redis hash (fields named by
//! [`sidecar_field`]) so one scrape of the app shows the whole pipeline; its own
//! port serves the full set, histograms included.

use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Every metric name crm-events exports, in one place (the dashboard and alert
/// rules are checked against this list).
pub mod names {
    /// Gauge: open SSE streams (live leases).
    pub const SSE_CLIENTS: &str = "crm_events_sse_clients";
    /// Counter: envelopes written to SSE clients.
    pub const MESSAGES_TOTAL: &str = "crm_events_messages_total";
    /// Counter: HTTP requests by `method` and `path`.
    pub const HTTP_REQUESTS_TOTAL: &str = "crm_events_http_requests_total";
    /// Gauge: 1 while the sidecar's heartbeat is fresh.
    pub const SIDECAR_UP: &str = "crm_events_sidecar_up";
    /// Counter: Kafka records consumed by the sidecar.
    pub const EVENTS_CONSUMED_TOTAL: &str = "crm_events_sidecar_events_consumed_total";
    /// Counter: events written to the Redis stream.
    pub const EVENTS_WRITTEN_TOTAL: &str = "crm_events_sidecar_events_written_total";
    /// Counter: batches written.
    pub const BATCHES_TOTAL: &str = "crm_events_sidecar_batches_total";
    /// Counter: errors by `kind`.
    pub const ERRORS_TOTAL: &str = "crm_events_sidecar_errors_total";
    /// Gauge: consumer lag (high watermark - next offset) by `partition`.
    pub const CONSUMER_LAG: &str = "crm_events_sidecar_consumer_lag";
    /// Gauge: age of the newest written event when it was written, seconds.
    pub const LAST_EVENT_AGE_SECONDS: &str = "crm_events_sidecar_last_event_age_seconds";
    /// Histogram (sidecar port): Redis batch write latency, seconds.
    pub const REDIS_WRITE_SECONDS: &str = "crm_events_sidecar_redis_write_seconds";
    /// Histogram (sidecar port): event age Kafka timestamp -> written to Redis, seconds.
    pub const EVENT_AGE_SECONDS: &str = "crm_events_sidecar_event_age_seconds";
    /// Gauge (sidecar port): partitions assigned to the sidecar.
    pub const ASSIGNED_PARTITIONS: &str = "crm_events_sidecar_assigned_partitions";

    /// Every name above.
    pub const ALL: &[&str] = &[
        SSE_CLIENTS,
        MESSAGES_TOTAL,
        HTTP_REQUESTS_TOTAL,
        SIDECAR_UP,
        EVENTS_CONSUMED_TOTAL,
        EVENTS_WRITTEN_TOTAL,
        BATCHES_TOTAL,
        ERRORS_TOTAL,
        CONSUMER_LAG,
        LAST_EVENT_AGE_SECONDS,
        REDIS_WRITE_SECONDS,
        EVENT_AGE_SECONDS,
        ASSIGNED_PARTITIONS,
    ];

    /// Histograms (exported as `_bucket`, `_sum` and `_count` series).
    pub const HISTOGRAMS: &[&str] = &[REDIS_WRITE_SECONDS, EVENT_AGE_SECONDS];
}

/// The sidecar-hash fields the Spin `/metrics` re-exports.
pub mod sidecar_field {
    /// Records consumed.
    pub const EVENTS_CONSUMED: &str = "events_consumed_total";
    /// Events written.
    pub const EVENTS_WRITTEN: &str = "events_written_total";
    /// Batches written.
    pub const BATCHES: &str = "batches_total";
    /// Age of the newest written event, seconds.
    pub const LAST_EVENT_AGE: &str = "last_event_age_seconds";

    /// The field of the lag of one partition.
    pub fn lag(partition: i32) -> String {
        format!("lag:{partition}")
    }

    /// The field of the error counter of one kind.
    pub fn errors(kind: &str) -> String {
        format!("errors_total:{kind}")
    }
}

/// Registers a collector and hands it back. Registering freshly made, uniquely named
/// collectors cannot fail; this keeps that assumption in one place.
pub fn register<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric names");
    c
}

/// What `/metrics` renders, read from Redis.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Live SSE leases.
    pub sse_clients: i64,
    /// Envelopes relayed to SSE clients.
    pub messages_total: u64,
    /// `("METHOD path", count)` pairs.
    pub http_requests: Vec<(String, u64)>,
    /// Whether the sidecar heartbeat is fresh.
    pub sidecar_up: bool,
    /// `(field, value)` pairs of the sidecar hash.
    pub sidecar: Vec<(String, String)>,
}

/// Renders the snapshot in the Prometheus text format 0.0.4.
pub fn render(s: &Snapshot) -> String {
    let registry = Registry::new();
    let gauge = |name, help| register(&registry, IntGauge::new(name, help).expect("valid name"));
    let counter =
        |name, help| register(&registry, IntCounter::new(name, help).expect("valid name"));

    gauge(names::SSE_CLIENTS, "Open SSE streams.").set(s.sse_clients.max(0));
    counter(names::MESSAGES_TOTAL, "Events written to SSE clients.").inc_by(s.messages_total);
    let requests = register(
        &registry,
        IntCounterVec::new(
            Opts::new(
                names::HTTP_REQUESTS_TOTAL,
                "HTTP requests by method and path.",
            ),
            &["method", "path"],
        )
        .expect("valid name"),
    );
    for (field, count) in &s.http_requests {
        if let Some((method, path)) = crate::http::split_request_counter_field(field) {
            requests.with_label_values(&[method, path]).inc_by(*count);
        }
    }
    gauge(names::SIDECAR_UP, "1 while the sidecar heartbeat is fresh.").set(s.sidecar_up as i64);

    let consumed = counter(
        names::EVENTS_CONSUMED_TOTAL,
        "Kafka records consumed by the sidecar.",
    );
    let written = counter(
        names::EVENTS_WRITTEN_TOTAL,
        "Events written to the Redis stream.",
    );
    let batches = counter(names::BATCHES_TOTAL, "Batches written to Redis.");
    let age = gauge(
        names::LAST_EVENT_AGE_SECONDS,
        "Age of the newest written event when it was written, in seconds.",
    );
    let errors = register(
        &registry,
        IntCounterVec::new(
            Opts::new(names::ERRORS_TOTAL, "Sidecar errors by kind."),
            &["kind"],
        )
        .expect("valid name"),
    );
    let lag = register(
        &registry,
        IntGaugeVec::new(
            Opts::new(
                names::CONSUMER_LAG,
                "Consumer lag by partition, in records.",
            ),
            &["partition"],
        )
        .expect("valid name"),
    );
    for (field, value) in &s.sidecar {
        let Ok(n) = value.trim().parse::<f64>() else {
            continue;
        };
        let n = n.max(0.0) as u64;
        match field.as_str() {
            sidecar_field::EVENTS_CONSUMED => consumed.inc_by(n),
            sidecar_field::EVENTS_WRITTEN => written.inc_by(n),
            sidecar_field::BATCHES => batches.inc_by(n),
            sidecar_field::LAST_EVENT_AGE => age.set(n as i64),
            other => {
                if let Some(p) = other.strip_prefix("lag:") {
                    lag.with_label_values(&[p]).set(n as i64);
                } else if let Some(kind) = other.strip_prefix("errors_total:") {
                    errors.with_label_values(&[kind]).inc_by(n);
                }
            }
        }
    }

    let mut out = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .expect("text encoding of valid metrics");
    String::from_utf8(out).expect("the text format is UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_name_with_values() {
        let text = render(&Snapshot {
            sse_clients: 3,
            messages_total: 42,
            http_requests: vec![("GET /healthz".into(), 7), ("GET /metrics".into(), 1)],
            sidecar_up: true,
            sidecar: vec![
                ("events_consumed_total".into(), "100".into()),
                ("lag:2".into(), "5".into()),
                ("errors_total:redis".into(), "1".into()),
                ("junk".into(), "x".into()),
            ],
        });
        assert!(text.contains("# TYPE crm_events_sse_clients gauge\ncrm_events_sse_clients 3\n"));
        assert!(text.contains("crm_events_messages_total 42\n"));
        assert!(text.contains(r#"crm_events_http_requests_total{method="GET",path="/healthz"} 7"#));
        assert!(text.contains("crm_events_sidecar_up 1\n"));
        assert!(text.contains("crm_events_sidecar_events_consumed_total 100\n"));
        assert!(text.contains(r#"crm_events_sidecar_consumer_lag{partition="2"} 5"#));
        assert!(text.contains(r#"crm_events_sidecar_errors_total{kind="redis"} 1"#));
    }
}
