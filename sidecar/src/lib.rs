//! The crm-events sidecar: consumes the CRM's Kafka topic and relays every record
//! to Redis, exactly once, for the Spin components to stream.
//!
//! ```text
//! Kafka ──► consumer (batches of BATCH_MAX or BATCH_LINGER_MS) ──► writer ──► Redis
//!                                                        one MULTI/EXEC per batch:
//!                                                        XADD each envelope, HSET the
//!                                                        partition watermarks, PUBLISH
//!           ◄── commit offsets only after Redis has the batch ──┘
//! ```
//!
//! * [`config`]: settings from flags and environment (clap), librdkafka pass-through.
//! * [`consumer`]: the rdkafka consumer and its rebalance handling (seek to the
//!   Redis watermark on assignment).
//! * [`batch`]: turning records into envelopes and batches.
//! * [`writer`]: the atomic, idempotent batch write (WATCH + MULTI/EXEC) with retry.
//! * [`continuity`]: the stream's epoch, and finding out that Redis lost data.
//! * [`relay`]: the pipeline that ties them together, and graceful shutdown.
//! * [`telemetry`]: Prometheus metrics, the heartbeat and the metrics mirror in Redis.
//! * [`demo`]: the embedded broker and demo producer of `make run`, and `produce`.
//! * [`token`]: `keygen` and `token`, key pairs and JWTs for operators and tests.
//!
//! The operations port (`/healthz`, `/readyz`, `/metrics`), logging and the Kafka
//! settings are `crm-events-native`'s, shared with the outbox publisher.

pub mod batch;
pub mod config;
pub mod consumer;
pub mod continuity;
pub mod demo;
pub mod relay;
pub mod telemetry;
pub mod token;
pub mod writer;
