//! The crm-events outbox publisher: moves the rows the CRM commits into its Postgres
//! outbox (`outbox_events`) to Kafka, in order, and marks them published only after
//! Kafka acknowledged them.
//!
//! ```text
//! CRM transaction ──INSERT──► outbox_events ──NOTIFY──► publisher (the lease holder)
//!                                  ▲  claim oldest pending rows (id order)   │
//!                                  │                                         ▼
//!                                  └── mark published ◄── ack ◄── idempotent producer ──► Kafka
//! ```
//!
//! With the sidecar's outbox-id dedup this makes the chain database commit → Kafka →
//! Redis → SSE client exactly-once: a row re-sent after a crash is dropped there.
//!
//! * [`config`]: settings (flags and environment), the old publisher's defaults.
//! * [`migrate`]: the versioned SQL migrations, applied by the publisher itself.
//! * [`db`]: Postgres sessions, their notifications and their liveness.
//! * [`store`]: every statement against the outbox tables.
//! * [`producer`]: the idempotent, ordered Kafka producer and its error kinds.
//! * [`pipeline`]: claim → produce → acknowledge → mark, while leading.
//! * [`service`]: the lease (one leader, standbys), backlog stats, Kafka probe, retention.
//! * [`telemetry`]: metrics and readiness.
//! * [`demo`]: a CRM stand-in writing demo events (`make run`).

pub mod config;
pub mod db;
pub mod demo;
pub mod migrate;
pub mod pipeline;
pub mod producer;
pub mod service;
pub mod store;
pub mod telemetry;
