//! `crm-events-sidecar`: relay the CRM's Kafka topic into Redis for crm-events.
//!
//! `crm-events-sidecar` (or `crm-events-sidecar run`) relays until SIGTERM/SIGINT.
//! Every flag has an environment variable; `--help` lists them.

use anyhow::Result;
use clap::{Parser, Subcommand};
use crm_events_sidecar::config::RelayConfig;
use crm_events_sidecar::telemetry::Telemetry;
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Relay the CRM's Kafka domain events into Redis for crm-events."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Relay Kafka to Redis (the default).
    Run(RunArgs),
}

#[derive(clap::Args, Debug, Clone)]
struct RunArgs {
    #[command(flatten)]
    relay: RelayConfig,
    /// Address of the sidecar's /healthz, /readyz and /metrics.
    #[arg(long, env = "HTTP_LISTEN", default_value = "0.0.0.0:9090")]
    http_listen: String,
}

#[tokio::main]
async fn main() -> Result<()> {
    crm_events_sidecar::logging::init();
    let cli = Cli::parse();
    match cli.command {
        None => run(cli.run).await,
        Some(Command::Run(args)) => run(args).await,
    }
}

async fn run(args: RunArgs) -> Result<()> {
    let telemetry = Arc::new(Telemetry::new());
    let listener = tokio::net::TcpListener::bind(&args.http_listen).await?;
    tracing::info!(listen = %listener.local_addr()?, "sidecar HTTP (healthz, readyz, metrics)");
    tokio::spawn(crm_events_sidecar::http::serve(listener, telemetry.clone()));
    let result = crm_events_sidecar::relay::run(args.relay, telemetry, shutdown_signal()).await;
    if let Err(e) = &result {
        tracing::error!(error = format!("{e:#}"), "sidecar stopped with an error");
    }
    result
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
    }
}
