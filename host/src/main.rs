//! `crm-events-host`: serve a Spin app's `spin.toml` on wasmtime.
//!
//! Used by `make run` when the Spin CLI is not installed, and handy for trying the
//! components with `curl`. For production, prefer `spin up` or a Spin platform; the
//! docs/src/deploying.md lists what this host does not do.

use anyhow::{Context, Result};
use clap::Parser;
use crm_events_host::cli::HostArgs;
use crm_events_host::limits::{self, ServerLimits};
use crm_events_host::{Host, HostConfig};

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

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = HostArgs::parse();
    let workers = args.workers.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    // With workers the main runtime only loads the app and accepts: one thread is
    // enough (compiling runs on its blocking pool).
    let runtime = match workers {
        0 => tokio::runtime::Builder::new_multi_thread(),
        _ => tokio::runtime::Builder::new_current_thread(),
    }
    .enable_all()
    .build()?;
    runtime.block_on(serve(args, workers))
}

/// Loads the manifest and serves it until Ctrl-C.
async fn serve(args: HostArgs, workers: usize) -> Result<()> {
    let mut config = HostConfig::new(&args.manifest);
    config.max_instances = args.max_instances;
    config.cache_dir = Some(args.cache_dir);
    config.redis_timeout = (args.redis_timeout_ms > 0)
        .then(|| std::time::Duration::from_millis(args.redis_timeout_ms));
    config.tcp_nodelay = args.tcp_nodelay;
    config.perf_map = args.perf_map;
    config.shared_redis = args.shared_redis;
    config.workers = workers;
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
