//! The host's command line: `crm-events-host --help` lists it, and the configuration
//! reference (docs/src/configuration.md) is written from it.

use crate::limits;
use clap::Parser;
use std::path::PathBuf;

/// Serve a Spin manifest's HTTP components on wasmtime.
#[derive(Parser, Debug)]
#[command(name = "crm-events-host", version, about)]
pub struct HostArgs {
    /// The Spin manifest.
    #[arg(long, default_value = "spin.toml")]
    pub manifest: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000", env = "CRM_EVENTS_LISTEN")]
    pub listen: String,
    /// Application variable, NAME=VALUE (repeatable); beats SPIN_VARIABLE_NAME.
    #[arg(long = "variable", value_parser = parse_pair)]
    pub variables: Vec<(String, String)>,
    /// Cap on live component instances (Spin's default is 1000).
    #[arg(long, default_value_t = crate::runtime::DEFAULT_MAX_INSTANCES, env = "SPIN_MAX_INSTANCE_COUNT")]
    pub max_instances: usize,
    /// Deadline of a Redis command beyond the time it asks to block, in ms (0: none,
    /// as in Spin, where a hung Redis hangs every request).
    #[arg(long, default_value_t = crate::runtime::DEFAULT_REDIS_TIMEOUT.as_millis() as u64, env = "CRM_EVENTS_HOST_REDIS_TIMEOUT_MS")]
    pub redis_timeout_ms: u64,
    /// Set TCP_NODELAY on accepted sockets (Spin 4 does not; see docs/src/deploying.md).
    #[arg(long, env = "CRM_EVENTS_HOST_TCP_NODELAY", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false)]
    pub tcp_nodelay: bool,
    /// Share Redis between instances: one connection per address, one read per stream
    /// for their blocking XREADs (false: a connection per open and a read per stream,
    /// as under Spin).
    #[arg(long, env = "CRM_EVENTS_HOST_SHARED_REDIS", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = true, action = clap::ArgAction::Set)]
    pub shared_redis: bool,
    /// Write /tmp/perf-<pid>.map so `perf report` names the components' functions.
    #[arg(long, env = "CRM_EVENTS_HOST_PERF_MAP", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false)]
    pub perf_map: bool,
    /// Open connections in all; more get 503 (0: unlimited). Default: 10,000, or
    /// fewer when the descriptor limit leaves room for fewer (a value given here is
    /// kept, with a warning when it does not fit).
    #[arg(long, env = "CRM_EVENTS_HOST_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Open connections from one address (an IPv6 /64 is one); more get 429 (0:
    /// unlimited).
    #[arg(long, default_value_t = limits::DEFAULT_MAX_CONNECTIONS_PER_ADDRESS, env = "CRM_EVENTS_HOST_MAX_CONNECTIONS_PER_ADDRESS")]
    pub max_connections_per_address: usize,
    /// Time a client has to send a request head, ms (slowloris).
    #[arg(long, default_value_t = limits::DEFAULT_HEADER_TIMEOUT.as_millis() as u64, env = "CRM_EVENTS_HOST_HEADER_TIMEOUT_MS")]
    pub header_timeout_ms: u64,
    /// Time a client has to send a request body, ms.
    #[arg(long, default_value_t = crm_events_contracts::guard::BODY_READ_TIMEOUT_MS, env = "CRM_EVENTS_HOST_BODY_TIMEOUT_MS")]
    pub body_timeout_ms: u64,
    /// Bytes the request bodies being received may hold together; past it a request
    /// gets 503 (0: unlimited).
    #[arg(long, default_value_t = limits::DEFAULT_MAX_BUFFERED_BODY_BYTES, env = "CRM_EVENTS_HOST_MAX_BUFFERED_BODY_BYTES")]
    pub max_buffered_body_bytes: u64,
    /// Stream request bodies into the components unbounded, as Spin does (the
    /// components' own limits are then all there is; for tests).
    #[arg(long, env = "CRM_EVENTS_HOST_SPIN_LIKE_BODIES", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false)]
    pub spin_like_bodies: bool,
    /// Threads that serve connections, each with its own single-threaded runtime
    /// (default: one per core; 0 serves them on the listener's multi-threaded
    /// runtime).
    #[arg(long, env = "CRM_EVENTS_HOST_WORKERS")]
    pub workers: Option<usize>,
    /// Directory for compiled components (reused across runs).
    #[arg(long, default_value = "target/crm-events-host-cache")]
    pub cache_dir: PathBuf,
}

/// A `--variable NAME=VALUE`.
pub fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))
}
