//! `crm-events-host`: serve a Spin app's `spin.toml` on wasmtime.
//!
//! Used by `make run` when the Spin CLI is not installed, and handy for trying the
//! components with `curl`. For production, prefer `spin up` or a Spin platform; the
//! README lists what this host does not do.

use anyhow::{Context, Result};
use clap::Parser;
use crm_events_host::{Host, HostConfig};
use std::path::PathBuf;

/// Serve a Spin manifest's HTTP components on wasmtime.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The Spin manifest.
    #[arg(long, default_value = "spin.toml")]
    manifest: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000", env = "CRM_EVENTS_LISTEN")]
    listen: String,
    /// Application variable, NAME=VALUE (repeatable); beats SPIN_VARIABLE_NAME.
    #[arg(long = "variable", value_parser = parse_pair)]
    variables: Vec<(String, String)>,
    /// Cap on live component instances (Spin's default is 1000).
    #[arg(long, default_value_t = crm_events_host::runtime::DEFAULT_MAX_INSTANCES, env = "SPIN_MAX_INSTANCE_COUNT")]
    max_instances: usize,
    /// Deadline of a Redis command beyond the time it asks to block, in ms (0: none,
    /// as in Spin, where a hung Redis hangs every request).
    #[arg(long, default_value_t = crm_events_host::runtime::DEFAULT_REDIS_TIMEOUT.as_millis() as u64, env = "CRM_EVENTS_HOST_REDIS_TIMEOUT_MS")]
    redis_timeout_ms: u64,
    /// Set TCP_NODELAY on accepted sockets (Spin 4 does not; see the README).
    #[arg(long, env = "CRM_EVENTS_HOST_TCP_NODELAY", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false)]
    tcp_nodelay: bool,
    /// Share Redis between instances: one connection per address, one read per stream
    /// for their blocking XREADs (false: a connection per open and a read per stream,
    /// as under Spin).
    #[arg(long, env = "CRM_EVENTS_HOST_SHARED_REDIS", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = true, action = clap::ArgAction::Set)]
    shared_redis: bool,
    /// Write /tmp/perf-<pid>.map so `perf report` names the components' functions.
    #[arg(long, env = "CRM_EVENTS_HOST_PERF_MAP", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false)]
    perf_map: bool,
    /// Directory for compiled components (reused across runs).
    #[arg(long, default_value = "target/crm-events-host-cache")]
    cache_dir: PathBuf,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut config = HostConfig::new(&args.manifest);
    config.max_instances = args.max_instances;
    config.cache_dir = Some(args.cache_dir);
    config.redis_timeout = (args.redis_timeout_ms > 0)
        .then(|| std::time::Duration::from_millis(args.redis_timeout_ms));
    config.tcp_nodelay = args.tcp_nodelay;
    config.perf_map = args.perf_map;
    config.shared_redis = args.shared_redis;
    config.variables = args.variables.into_iter().collect();
    let host = Host::load(config)
        .await
        .with_context(|| format!("loading {}", args.manifest.display()))?;
    let addr = crm_events_host::server::spawn(host, &args.listen).await?;
    eprintln!(
        "crm-events-host serving {} on http://{addr}",
        args.manifest.display()
    );
    tokio::signal::ctrl_c().await?;
    eprintln!("stopping");
    Ok(())
}
