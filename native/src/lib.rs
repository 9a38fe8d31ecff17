//! What the native crm-events processes share.
//!
//! The sidecar (Kafka → Redis) and the outbox publisher (Postgres → Kafka) are
//! separate binaries with the same operational surface, defined once here:
//!
//! * [`ops`]: the `/healthz`, `/readyz` and `/metrics` port Kubernetes probes and
//!   Prometheus scrape.
//! * [`kafka`]: where Kafka is (`KAFKA_BROKERS`, `KAFKA_TOPIC`) and librdkafka
//!   properties passed through (`KAFKA_PROP_*`, `--kafka-config`).
//! * [`backoff`]: the capped exponential retry delay.
//! * [`pace`]: pacing the demo producers at a rate.
//! * [`logging`]: `tracing` setup (`LOG_FORMAT=json` for JSON lines).
//! * [`signals`]: waiting for SIGTERM or SIGINT.

pub mod backoff;
pub mod kafka;
pub mod logging;
pub mod ops;
pub mod pace;
pub mod signals;
