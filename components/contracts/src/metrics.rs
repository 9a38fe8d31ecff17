//! Every metric crm-events exports, defined once, and the Spin `/metrics` exposition.
//!
//! A [`Family`] holds a metric's name, type, help text, labels and (for histograms)
//! buckets. The sidecar registers its collectors from these definitions and the Spin
//! `/metrics` route renders from the same ones, so a family can never be described two
//! ways; the dashboard and alert rules are checked against [`ALL`].
//!
//! The Spin components keep no state between requests, so their counters live in
//! Redis ([`crate::keys::Keys`]) and `/metrics` renders a [`Snapshot`] read from there.
//! The sidecar mirrors its headline numbers into a Redis hash (fields named by
//! [`sidecar_field`]) so one scrape of the app shows the whole pipeline; its own port
//! serves the full set, histograms included.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry,
};

/// What kind of series a family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down (integer or float values alike).
    Gauge,
    /// Buckets, sum and count.
    Histogram,
}

/// One metric family: everything Prometheus is told about it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Family {
    /// The metric name.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// The `# HELP` text.
    pub help: &'static str,
    /// Label names (empty for a single series).
    pub labels: &'static [&'static str],
    /// Histogram bucket bounds (empty otherwise).
    pub buckets: &'static [f64],
}

impl Family {
    const fn new(name: &'static str, kind: Kind, help: &'static str) -> Self {
        Self {
            name,
            kind,
            help,
            labels: &[],
            buckets: &[],
        }
    }

    const fn labelled(mut self, labels: &'static [&'static str]) -> Self {
        self.labels = labels;
        self
    }

    const fn bucketed(mut self, buckets: &'static [f64]) -> Self {
        self.buckets = buckets;
        self
    }

    /// Makes and registers the collector, checking it is of this family's kind
    /// and has labels exactly when the family does.
    fn make<C>(
        &self,
        registry: &Registry,
        kind: Kind,
        labelled: bool,
        new: impl FnOnce(Opts) -> prometheus::Result<C>,
    ) -> C
    where
        C: prometheus::core::Collector + Clone + 'static,
    {
        assert!(
            self.kind == kind && self.labels.is_empty() != labelled,
            "{} is a {:?} with labels {:?}",
            self.name,
            self.kind,
            self.labels
        );
        register(registry, new(Opts::new(self.name, self.help)))
    }

    /// Registers this family as an integer counter.
    pub fn int_counter(&self, registry: &Registry) -> IntCounter {
        self.make(registry, Kind::Counter, false, IntCounter::with_opts)
    }

    /// Registers this family as an integer counter with its labels.
    pub fn int_counter_vec(&self, registry: &Registry) -> IntCounterVec {
        self.make(registry, Kind::Counter, true, |o| {
            IntCounterVec::new(o, self.labels)
        })
    }

    /// Registers this family as an integer gauge.
    pub fn int_gauge(&self, registry: &Registry) -> IntGauge {
        self.make(registry, Kind::Gauge, false, IntGauge::with_opts)
    }

    /// Registers this family as an integer gauge with its labels.
    pub fn int_gauge_vec(&self, registry: &Registry) -> IntGaugeVec {
        self.make(registry, Kind::Gauge, true, |o| {
            IntGaugeVec::new(o, self.labels)
        })
    }

    /// Registers this family as a float gauge.
    pub fn gauge(&self, registry: &Registry) -> Gauge {
        self.make(registry, Kind::Gauge, false, Gauge::with_opts)
    }

    /// Registers this family as a histogram with its buckets.
    pub fn histogram(&self, registry: &Registry) -> Histogram {
        self.make(registry, Kind::Histogram, false, |o| {
            Histogram::with_opts(HistogramOpts::from(o).buckets(self.buckets.to_vec()))
        })
    }
}

/// Registers a freshly made collector and hands it back. The definitions above are
/// constants with unique names, so a failure here is a programming error.
fn register<C>(registry: &Registry, made: prometheus::Result<C>) -> C
where
    C: prometheus::core::Collector + Clone + 'static,
{
    let c = made.expect("a valid metric definition");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric names");
    c
}

/// Gauge: open SSE streams (live client leases).
pub const SSE_CLIENTS: Family = Family::new(
    "crm_events_sse_clients",
    Kind::Gauge,
    "Open SSE streams (live client leases).",
);
/// Gauge: the configured `max_clients` (0 = unlimited); alerts compare against it.
pub const SSE_MAX_CLIENTS: Family = Family::new(
    "crm_events_sse_max_clients",
    Kind::Gauge,
    "The configured limit on concurrent SSE streams (max_clients; 0 = unlimited).",
);
/// Counter: envelopes written to SSE clients.
pub const MESSAGES_TOTAL: Family = Family::new(
    "crm_events_messages_total",
    Kind::Counter,
    "Events written to SSE clients.",
);
/// Counter: streams ended because their client stopped taking events.
pub const SSE_SLOW_CLIENTS_TOTAL: Family = Family::new(
    "crm_events_sse_slow_clients_total",
    Kind::Counter,
    "SSE streams ended because the client took no data for send_timeout_seconds (it resumes with Last-Event-ID).",
);
/// Counter: HTTP requests by `method` and `path`.
///
/// The rule, the same in every component: a request is counted once, when a
/// component receives it and before it answers, whatever the answer (2xx, 4xx or
/// 5xx), under its method and its route (`other` for paths no route names). The one
/// exception is `/healthz`, which must not touch Redis (a Redis outage must not fail
/// liveness). Counting is best effort: a Redis failure never fails the request.
pub const HTTP_REQUESTS_TOTAL: Family = Family::new(
    "crm_events_http_requests_total",
    Kind::Counter,
    "HTTP requests received, by method and route (every route but /healthz).",
)
.labelled(&["method", "path"]);
/// Gauge: 1 while the sidecar's heartbeat is fresh.
pub const SIDECAR_UP: Family = Family::new(
    "crm_events_sidecar_up",
    Kind::Gauge,
    "1 while the sidecar's heartbeat in Redis is fresh.",
);
/// Counter: Kafka records consumed by the sidecar.
pub const EVENTS_CONSUMED_TOTAL: Family = Family::new(
    "crm_events_sidecar_events_consumed_total",
    Kind::Counter,
    "Kafka records consumed by the sidecar.",
);
/// Counter: events written to the Redis stream.
pub const EVENTS_WRITTEN_TOTAL: Family = Family::new(
    "crm_events_sidecar_events_written_total",
    Kind::Counter,
    "Events written to the Redis stream (re-deliveries already there are not counted).",
);
/// Counter: batches written.
pub const BATCHES_TOTAL: Family = Family::new(
    "crm_events_sidecar_batches_total",
    Kind::Counter,
    "Batches written to Redis.",
);
/// Counter: sidecar errors by `kind` (`redis`, `kafka`, `commit`).
pub const ERRORS_TOTAL: Family = Family::new(
    "crm_events_sidecar_errors_total",
    Kind::Counter,
    "Sidecar errors by kind (redis, kafka, commit).",
)
.labelled(&["kind"]);
/// Gauge: consumer lag (high watermark - next offset) by `partition`.
pub const CONSUMER_LAG: Family = Family::new(
    "crm_events_sidecar_consumer_lag",
    Kind::Gauge,
    "Consumer lag by partition, in records.",
)
.labelled(&["partition"]);
/// Gauge: age of the newest written event when it was written, seconds (a float:
/// sub-second ages are the normal case).
pub const LAST_EVENT_AGE_SECONDS: Family = Family::new(
    "crm_events_sidecar_last_event_age_seconds",
    Kind::Gauge,
    "Age of the newest written event when it was written, in seconds.",
);
/// Histogram (sidecar port): Redis batch write latency, seconds.
pub const REDIS_WRITE_SECONDS: Family = Family::new(
    "crm_events_sidecar_redis_write_seconds",
    Kind::Histogram,
    "Latency of one batch write to Redis, in seconds.",
)
.bucketed(&[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
]);
/// Histogram (sidecar port): event age Kafka timestamp -> written to Redis, seconds.
/// The SLO rules select its `le="1"` bucket.
pub const EVENT_AGE_SECONDS: Family = Family::new(
    "crm_events_sidecar_event_age_seconds",
    Kind::Histogram,
    "Event age from its Kafka timestamp to its write to Redis, in seconds.",
)
.bucketed(&[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
]);
/// Gauge (sidecar port): partitions assigned to the sidecar.
pub const ASSIGNED_PARTITIONS: Family = Family::new(
    "crm_events_sidecar_assigned_partitions",
    Kind::Gauge,
    "Partitions assigned to this sidecar.",
);

/// Counter: re-sent outbox records the sidecar dropped (already in the stream).
pub const DUPLICATES_DROPPED_TOTAL: Family = Family::new(
    "crm_events_sidecar_duplicates_dropped_total",
    Kind::Counter,
    "Records dropped because their outbox id is already in the stream (a publisher re-sent them).",
);
/// Counter: times the sidecar found that Redis lost data and started a new epoch.
pub const REDIS_DATA_LOST_TOTAL: Family = Family::new(
    "crm_events_sidecar_redis_data_lost_total",
    Kind::Counter,
    "Times the sidecar found Redis had lost data (flushed, restarted empty, behind) and rebuilt the stream from Kafka under a new epoch.",
);
/// Gauge (publisher): rows waiting to be published.
pub const OUTBOX_PENDING_ROWS: Family = Family::new(
    "crm_events_outbox_pending_rows",
    Kind::Gauge,
    "Outbox rows not yet published and not failed.",
);
/// Gauge (publisher): age of the oldest pending row (`occurred_at`), seconds.
pub const OUTBOX_OLDEST_PENDING_AGE_SECONDS: Family = Family::new(
    "crm_events_outbox_oldest_pending_age_seconds",
    Kind::Gauge,
    "Age of the oldest pending outbox row (now - occurred_at), in seconds; 0 when none is pending.",
);
/// Gauge (publisher): rows marked failed and not re-queued.
pub const OUTBOX_FAILED_ROWS: Family = Family::new(
    "crm_events_outbox_failed_rows",
    Kind::Gauge,
    "Outbox rows marked failed (after max_retries), waiting for an operator.",
);
/// Counter (publisher): rows published (Kafka acknowledged, published_at set).
pub const OUTBOX_PUBLISHED_TOTAL: Family = Family::new(
    "crm_events_outbox_published_total",
    Kind::Counter,
    "Outbox rows published: acknowledged by Kafka and marked published.",
);
/// Counter (publisher): rows marked failed.
pub const OUTBOX_FAILED_TOTAL: Family = Family::new(
    "crm_events_outbox_failed_total",
    Kind::Counter,
    "Outbox rows marked failed after max_retries attempts.",
);
/// Counter (publisher): errors by `kind` (`row`: one attempt of a row was refused;
/// `kafka`, `postgres`: the connection or client failed).
pub const OUTBOX_ERRORS_TOTAL: Family = Family::new(
    "crm_events_outbox_errors_total",
    Kind::Counter,
    "Publisher errors by kind (row, kafka, postgres).",
)
.labelled(&["kind"]);
/// Histogram (publisher): `occurred_at` -> Kafka acknowledged, seconds.
pub const OUTBOX_PUBLISH_LATENCY_SECONDS: Family = Family::new(
    "crm_events_outbox_publish_latency_seconds",
    Kind::Histogram,
    "Time from a row's occurred_at to Kafka's acknowledgement, in seconds.",
)
.bucketed(&[
    0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
]);
/// Gauge (publisher): 1 while this publisher holds the leader lease.
pub const OUTBOX_LEADER: Family = Family::new(
    "crm_events_outbox_leader",
    Kind::Gauge,
    "1 while this publisher holds the outbox lease (the one that publishes), else 0.",
);
/// Counter (publisher): rows deleted by retention, by `table`.
pub const OUTBOX_RETENTION_DELETED_TOTAL: Family = Family::new(
    "crm_events_outbox_retention_deleted_total",
    Kind::Counter,
    "Rows deleted by retention, by table (outbox_events, idempotency_keys).",
)
.labelled(&["table"]);

/// Every family crm-events exports.
pub const ALL: &[Family] = &[
    SSE_CLIENTS,
    SSE_MAX_CLIENTS,
    MESSAGES_TOTAL,
    SSE_SLOW_CLIENTS_TOTAL,
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
    DUPLICATES_DROPPED_TOTAL,
    REDIS_DATA_LOST_TOTAL,
    OUTBOX_PENDING_ROWS,
    OUTBOX_OLDEST_PENDING_AGE_SECONDS,
    OUTBOX_FAILED_ROWS,
    OUTBOX_PUBLISHED_TOTAL,
    OUTBOX_FAILED_TOTAL,
    OUTBOX_ERRORS_TOTAL,
    OUTBOX_PUBLISH_LATENCY_SECONDS,
    OUTBOX_LEADER,
    OUTBOX_RETENTION_DELETED_TOTAL,
];

/// The sidecar-hash fields the Spin `/metrics` re-exports.
pub mod sidecar_field {
    /// Records consumed.
    pub const EVENTS_CONSUMED: &str = "events_consumed_total";
    /// Events written.
    pub const EVENTS_WRITTEN: &str = "events_written_total";
    /// Batches written.
    pub const BATCHES: &str = "batches_total";
    /// Re-sent outbox records dropped.
    pub const DUPLICATES_DROPPED: &str = "duplicates_dropped_total";
    /// Redis data losses found.
    pub const REDIS_DATA_LOST: &str = "redis_data_lost_total";
    /// Age of the newest written event, seconds.
    pub const LAST_EVENT_AGE: &str = "last_event_age_seconds";
    /// Prefix of the per-partition lag fields.
    pub const LAG_PREFIX: &str = "lag:";
    /// Prefix of the per-kind error fields.
    pub const ERRORS_PREFIX: &str = "errors_total:";

    /// The field of the lag of one partition.
    pub fn lag(partition: &str) -> String {
        format!("{LAG_PREFIX}{partition}")
    }

    /// The field of the error counter of one kind.
    pub fn errors(kind: &str) -> String {
        format!("{ERRORS_PREFIX}{kind}")
    }
}

/// What `/metrics` renders, read from Redis.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Live SSE leases.
    pub sse_clients: i64,
    /// The configured `max_clients`.
    pub max_clients: u64,
    /// Envelopes relayed to SSE clients.
    pub messages_total: u64,
    /// Streams ended because the client stopped reading.
    pub slow_clients_total: u64,
    /// `("METHOD path", count)` pairs.
    pub http_requests: Vec<(String, u64)>,
    /// Whether the sidecar heartbeat is fresh.
    pub sidecar_up: bool,
    /// `(field, value)` pairs of the sidecar hash.
    pub sidecar: Vec<(String, String)>,
}

/// The sidecar's mirrored families, registered for one rendering.
struct Mirror {
    consumed: IntCounter,
    written: IntCounter,
    batches: IntCounter,
    duplicates: IntCounter,
    lost: IntCounter,
    age: Gauge,
    errors: IntCounterVec,
    lag: IntGaugeVec,
}

impl Mirror {
    fn register(registry: &Registry) -> Self {
        Self {
            consumed: EVENTS_CONSUMED_TOTAL.int_counter(registry),
            written: EVENTS_WRITTEN_TOTAL.int_counter(registry),
            batches: BATCHES_TOTAL.int_counter(registry),
            duplicates: DUPLICATES_DROPPED_TOTAL.int_counter(registry),
            lost: REDIS_DATA_LOST_TOTAL.int_counter(registry),
            age: LAST_EVENT_AGE_SECONDS.gauge(registry),
            errors: ERRORS_TOTAL.int_counter_vec(registry),
            lag: CONSUMER_LAG.int_gauge_vec(registry),
        }
    }

    /// Sets the family one hash field stands for; unknown fields are ignored.
    fn set(&self, field: &str, value: &str) {
        let Ok(n) = value.trim().parse::<f64>() else {
            return;
        };
        let count = n.max(0.0) as u64;
        match field {
            sidecar_field::EVENTS_CONSUMED => self.consumed.inc_by(count),
            sidecar_field::EVENTS_WRITTEN => self.written.inc_by(count),
            sidecar_field::BATCHES => self.batches.inc_by(count),
            sidecar_field::DUPLICATES_DROPPED => self.duplicates.inc_by(count),
            sidecar_field::REDIS_DATA_LOST => self.lost.inc_by(count),
            sidecar_field::LAST_EVENT_AGE => self.age.set(n.max(0.0)),
            other => {
                if let Some(p) = other.strip_prefix(sidecar_field::LAG_PREFIX) {
                    self.lag.with_label_values(&[p]).set(n as i64);
                } else if let Some(kind) = other.strip_prefix(sidecar_field::ERRORS_PREFIX) {
                    self.errors.with_label_values(&[kind]).inc_by(count);
                }
            }
        }
    }
}

/// Renders the snapshot in the Prometheus text format 0.0.4.
pub fn render(s: &Snapshot) -> String {
    let registry = Registry::new();
    SSE_CLIENTS.int_gauge(&registry).set(s.sse_clients.max(0));
    SSE_MAX_CLIENTS
        .int_gauge(&registry)
        .set(s.max_clients as i64);
    MESSAGES_TOTAL
        .int_counter(&registry)
        .inc_by(s.messages_total);
    SSE_SLOW_CLIENTS_TOTAL
        .int_counter(&registry)
        .inc_by(s.slow_clients_total);
    let requests = HTTP_REQUESTS_TOTAL.int_counter_vec(&registry);
    for (field, count) in &s.http_requests {
        if let Some((method, path)) = crate::http::split_request_counter_field(field) {
            requests.with_label_values(&[method, path]).inc_by(*count);
        }
    }
    SIDECAR_UP.int_gauge(&registry).set(s.sidecar_up as i64);
    let mirror = Mirror::register(&registry);
    for (field, value) in &s.sidecar {
        mirror.set(field, value);
    }
    encode(&registry)
}

/// The text exposition (format 0.0.4) of everything in `registry`.
pub fn encode(registry: &Registry) -> String {
    let mut out = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .expect("text encoding of valid metrics");
    String::from_utf8(out).expect("the text format is UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        Snapshot {
            sse_clients: 3,
            max_clients: 900,
            messages_total: 42,
            slow_clients_total: 3,
            http_requests: vec![("GET /healthz".into(), 7), ("GET /metrics".into(), 1)],
            sidecar_up: true,
            sidecar: vec![
                ("events_consumed_total".into(), "100".into()),
                ("last_event_age_seconds".into(), "0.042".into()),
                ("lag:2".into(), "5".into()),
                ("errors_total:redis".into(), "1".into()),
                ("junk".into(), "x".into()),
            ],
        }
    }

    #[test]
    fn renders_every_app_family_with_values() {
        let text = render(&snapshot());
        let lines: Vec<&str> = text.lines().collect();
        for want in [
            "crm_events_sse_clients 3",
            "crm_events_sse_max_clients 900",
            "crm_events_messages_total 42",
            "crm_events_sse_slow_clients_total 3",
            r#"crm_events_http_requests_total{method="GET",path="/healthz"} 7"#,
            "crm_events_sidecar_up 1",
            "crm_events_sidecar_events_consumed_total 100",
            r#"crm_events_sidecar_consumer_lag{partition="2"} 5"#,
            r#"crm_events_sidecar_errors_total{kind="redis"} 1"#,
        ] {
            assert!(lines.contains(&want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn sub_second_event_age_survives_the_mirror() {
        let text = render(&snapshot());
        assert!(
            text.lines()
                .any(|l| l == "crm_events_sidecar_last_event_age_seconds 0.042"),
            "{text}"
        );
    }

    #[test]
    fn help_and_type_come_from_the_one_definition() {
        let text = render(&snapshot());
        for f in [SSE_CLIENTS, HTTP_REQUESTS_TOTAL, LAST_EVENT_AGE_SECONDS] {
            assert!(text.contains(&format!("# HELP {} {}\n", f.name, f.help)));
            let kind = format!("{:?}", f.kind).to_lowercase();
            assert!(text.contains(&format!("# TYPE {} {kind}\n", f.name)));
        }
    }

    #[test]
    fn names_are_unique_and_prefixed() {
        let names: std::collections::BTreeSet<_> = ALL.iter().map(|f| f.name).collect();
        assert_eq!(names.len(), ALL.len());
        assert!(names.iter().all(|n| n.starts_with("crm_events_")));
        for f in ALL {
            assert_eq!(
                f.kind == Kind::Histogram,
                !f.buckets.is_empty(),
                "{}",
                f.name
            );
        }
    }
}
