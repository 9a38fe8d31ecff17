//! The crm-events test harness: the real parts the integration tests and the
//! benchmarks run against, started on loopback ports and stopped when dropped.
//!
//! * [`app`]: the real `.wasm` components, built as `spin build` would build them,
//!   served by `crm-events-host` (in process) on a loopback port.
//! * [`redis_server`]: a throwaway `redis-server` (the Debian package).
//! * [`mock_kafka`]: librdkafka's mock cluster (a Kafka-protocol broker) and a producer.
//! * [`postgres`]: a throwaway PostgreSQL cluster (Debian's `initdb`/`pg_ctl`).
//! * [`signal`]: signals to the processes the tests start (stop, pause, interrupt).
//! * [`sse_client`]: an SSE client on a WHATWG parser.
//! * [`tokens`]: test keys of each algorithm and the tokens they sign.
//! * [`tools`]: external tools a test needs (promtool, docker compose), found or
//!   reported missing by name.
//! * [`wait`]: polling for a condition with a deadline.

pub mod app;
pub mod mock_kafka;
pub mod postgres;
pub mod redis_server;
pub mod signal;
pub mod sse_client;
pub mod tokens;
pub mod tools;
pub mod wait;
