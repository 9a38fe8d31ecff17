//! `crm-events-host`: a small Spin-compatible HTTP runtime on wasmtime.
//!
//! It serves the same `spin.toml` that `spin up` serves, for machines without the Spin
//! CLI (`make run` uses it then) and for the tests, which load the real `.wasm`
//! components through it. It reads everything from the manifest — components, routes,
//! variables, `allowed_outbound_hosts` — and spells none of them itself.
//!
//! Beside WASI 0.2 (`wasmtime-wasi`) and `wasi:http` (`wasmtime-wasi-http`) it
//! implements the Spin interfaces the components import: outbound Redis against a
//! real Redis (replies flattened exactly as Spin flattens them; the instances share
//! one connection per address and one read per stream, or each `open` makes its
//! own connection as in Spin), outbound PostgreSQL against a real
//! Postgres (`spin:postgres/postgres@4.0.0`), and variables resolved as Spin resolves
//! them (explicit overrides, then `SPIN_VARIABLE_*`, then the manifest defaults).
//!
//! * [`manifest`]: reading `spin.toml` (components, routes, variables, hosts).
//! * [`spin_apis`]: the Spin Redis, PostgreSQL and variables host implementations.
//! * [`runtime`]: the engine, compiled components, instances and the instance cap.
//! * [`limits`]: the bounds on clients (connections, head and body time, body size).
//! * [`server`]: the HTTP/1.1 and h2c listener: admits connections within the limits
//!   and keeps accepting through descriptor exhaustion.
//! * [`workers`]: per-core threads that serve the admitted connections.

pub mod cli;
pub mod limits;
pub mod manifest;
pub mod runtime;
pub mod server;
pub mod spin_apis;
pub mod workers;

pub use runtime::{Host, HostConfig};
