//! `crm-events-host`: serve a Spin app's `spin.toml` on wasmtime.
//!
//! Used by `make run` when the Spin CLI is not installed, and handy for trying the
//! components with `curl`. For production, prefer `spin up` or a Spin platform; the
//! README lists what this host does not do.

use anyhow::{Context, Result};
use clap::Parser;
use crm_events_host::limits::{self, ServerLimits};
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
    /// Open connections in all; more get 503 (0: unlimited). Default: 10,000, or
    /// fewer when the descriptor limit leaves room for fewer (a value given here is
    /// kept, with a warning when it does not fit).
    #[arg(long, env = "CRM_EVENTS_HOST_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Open connections from one address (an IPv6 /64 is one); more get 429 (0:
    /// unlimited).
    #[arg(long, default_value_t = limits::DEFAULT_MAX_CONNECTIONS_PER_ADDRESS, env = "CRM_EVENTS_HOST_MAX_CONNECTIONS_PER_ADDRESS")]
    max_connections_per_address: usize,
    /// Time a client has to send a request head, ms (slowloris).
    #[arg(long, default_value_t = limits::DEFAULT_HEADER_TIMEOUT.as_millis() as u64, env = "CRM_EVENTS_HOST_HEADER_TIMEOUT_MS")]
    header_timeout_ms: u64,
    /// Time a client has to send a request body, ms.
    #[arg(long, default_value_t = crm_events_contracts::guard::BODY_READ_TIMEOUT_MS, env = "CRM_EVENTS_HOST_BODY_TIMEOUT_MS")]
    body_timeout_ms: u64,
    /// Bytes the request bodies being received may hold together; past it a request
    /// gets 503 (0: unlimited).
    #[arg(long, default_value_t = limits::DEFAULT_MAX_BUFFERED_BODY_BYTES, env = "CRM_EVENTS_HOST_MAX_BUFFERED_BODY_BYTES")]
    max_buffered_body_bytes: u64,
    /// Stream request bodies into the components unbounded, as Spin does (the
    /// components' own limits are then all there is; for tests).
    #[arg(long, env = "CRM_EVENTS_HOST_SPIN_LIKE_BODIES", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false)]
    spin_like_bodies: bool,
    /// Directory for compiled components (reused across runs).
    #[arg(long, default_value = "target/crm-events-host-cache")]
    cache_dir: PathBuf,
}

/// Descriptors kept for what is not a client connection: compiled components, logs,
/// the listener.
const DESCRIPTOR_RESERVE: u64 = 64;

/// Raises the descriptor limit to the hard limit, and picks the connection cap: the
/// one asked for, else the default capped so that the connections, each instance's
/// outbound connections (Redis and Postgres) and the reserve fit in the limit — past
/// the cap a client gets a clear 503, not a failed accept.
fn within_descriptors(asked: Option<usize>, instances: usize) -> usize {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %e, "the descriptor limit could not be read or raised");
            return asked.unwrap_or(limits::DEFAULT_MAX_CONNECTIONS);
        }
    };
    let room = limit.saturating_sub(DESCRIPTOR_RESERVE + 2 * instances as u64) as usize;
    match asked {
        None => limits::DEFAULT_MAX_CONNECTIONS.min(room.max(1)),
        Some(n) => {
            if n == 0 || n > room {
                tracing::warn!(
                    max_connections = n,
                    descriptors = limit,
                    "the connection cap does not fit in the descriptor limit: past {room} connections accepts will fail (and be retried) instead of answering 503"
                );
            }
            n
        }
    }
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
    config.limits = ServerLimits {
        max_connections: within_descriptors(args.max_connections, args.max_instances),
        max_connections_per_address: args.max_connections_per_address,
        header_timeout: std::time::Duration::from_millis(args.header_timeout_ms),
        body_timeout: std::time::Duration::from_millis(args.body_timeout_ms),
        max_buffered_body_bytes: args.max_buffered_body_bytes,
        spin_like: args.spin_like_bodies,
    };
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
