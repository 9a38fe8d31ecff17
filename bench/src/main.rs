//! `crm-events-bench`: the numbers the docs quote, measured on this machine.
//!
//! * `relay`: sustained Kafka → Redis events/s of the sidecar, beside raw pipelined
//!   `XADD` of the same envelopes into the same Redis (the ceiling), as a ratio.
//! * `sse`: end-to-end latency Kafka produce → SSE client receive (p50/p99) at a
//!   fixed rate with many clients, and fan-out: the most clients that each still get
//!   every event, with the app's memory per client.
//! * `auth`: what access control costs, auth on vs off in the same run: connection
//!   setup latency and events delivered per second.
//! * `outbox`: outbox → Kafka rows/s of the release publisher against raw idempotent
//!   produce of the same records (the ceiling), and commit → SSE client latency.
//! * `reference`: the same workloads (clients × rate, payload) against crm-events
//!   and Nchan (nginx + Nchan, memory store) in the same run: p99, delivered/s, CPU
//!   per delivered event, memory per stream, and the ratios.
//! * `soak`: an hour at 200 events/s with 500 clients that drop and resume at
//!   random: memory of every part over time (a PNG), every client's sequence
//!   complete, no error logs. Not part of `make bench` (it takes the hour): `make soak`.
//!
//! Everything is real: a redis-server, librdkafka's mock cluster (a Kafka-protocol
//! broker on loopback), a throwaway PostgreSQL, the release sidecar, publisher and host binaries, the `.wasm`
//! components. Run it with `make bench`.

mod auth;
mod outbox;
mod procs;
mod reference;
mod relay;
mod soak;
mod sse;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "crm-events benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Relay throughput against raw pipelined XADD.
    Relay(relay::Args),
    /// SSE latency and fan-out.
    Sse(sse::Args),
    /// Access control's cost: connection setup and delivery, auth on vs off.
    Auth(auth::Args),
    /// Outbox → Kafka throughput against raw produce; commit → SSE latency.
    Outbox(outbox::Args),
    /// The same workloads against crm-events and Nchan, with ratios.
    Reference(reference::Args),
    /// An hour of steady load with reconnecting clients: memory, completeness, errors.
    Soak(soak::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Relay(a) => relay::run(a).await,
        Command::Sse(a) => sse::run(a).await,
        Command::Auth(a) => auth::run(a).await,
        Command::Outbox(a) => outbox::run(a).await,
        Command::Soak(a) => soak::run(a).await,
        Command::Reference(a) => reference::run(a).await,
    }
}
