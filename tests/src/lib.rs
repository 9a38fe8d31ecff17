//! The crm-events test host: a small Spin-compatible HTTP runtime on wasmtime.
//!
//! It loads the real `.wasm` components that `spin.toml` names, routes requests by
//! the manifest's HTTP triggers, and serves them over TCP with streamed bodies, the
//! way `spin up` does. Beside WASI 0.2 (`wasmtime-wasi`) and `wasi:http`
//! (`wasmtime-wasi-http`) it implements the Spin interfaces the components import:
//! outbound Redis against a real Redis (one multiplexed connection per `open`, no
//! response timeout, replies flattened exactly as Spin flattens them) and variables
//! resolved from `spin.toml` defaults, `SPIN_VARIABLE_*` and explicit overrides.
//!
//! * [`manifest`]: reading `spin.toml` (components, routes, variables, hosts).
//! * [`spin_apis`]: the `fermyon:spin` Redis and variables host implementations.
//! * [`runtime`]: the engine, compiled components, instances and the instance cap.
//! * [`server`]: the HTTP/1.1 listener.
//! * [`redis_server`]: starting a throwaway `redis-server` (tests and `make run`).
//! * [`mock_kafka`]: librdkafka's mock cluster and a producer (tests and benchmarks).
//! * [`sse_client`]: an SSE client on a WHATWG parser (tests and benchmarks).

pub mod manifest;
pub mod mock_kafka;
pub mod redis_server;
pub mod runtime;
pub mod server;
pub mod spin_apis;
pub mod sse_client;

pub use runtime::{Host, HostConfig};
