//! The release binaries the benchmarks start, and reading a process's memory.

use anyhow::{bail, Context, Result};
use crm_events_harness::mock_kafka::Kafka;
use crm_events_harness::postgres::Postgres;
use crm_events_harness::redis_server::RedisServer;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// `target/release/<name>`, which `make bench` builds.
pub fn binary(name: &str) -> Result<PathBuf> {
    let path = crm_events_harness::app::binary_path("release", name);
    if !path.exists() {
        bail!(
            "{} is missing: run `make bench` (it builds the release binaries)",
            path.display()
        );
    }
    Ok(path)
}

/// A child process killed on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Where a child's log (stderr) goes: this process's stderr, or a file (to be
/// read back, as the soak does to count error lines).
#[derive(Clone, Default)]
pub enum Log {
    #[default]
    Inherit,
    File(PathBuf),
}

impl Log {
    /// `dir/<name>.log` when `dir` is set, else inherited.
    pub fn in_dir(dir: Option<&std::path::Path>, name: &str) -> Log {
        dir.map_or(Log::Inherit, |d| Log::File(d.join(format!("{name}.log"))))
    }

    fn stdio(&self) -> Result<Stdio> {
        Ok(match self {
            Log::Inherit => Stdio::inherit(),
            Log::File(path) => std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?
                .into(),
        })
    }
}

/// Starts a release binary with arguments and environment.
pub fn spawn(name: &str, args: &[&str], env: &[(&str, String)]) -> Result<Proc> {
    spawn_logged(name, args, env, &Log::Inherit)
}

/// As [`spawn`], its log going to `log`.
pub fn spawn_logged(name: &str, args: &[&str], env: &[(&str, String)], log: &Log) -> Result<Proc> {
    let mut cmd = Command::new(binary(name)?);
    cmd.args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.stdio()?);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Ok(Proc(
        cmd.spawn().with_context(|| format!("starting {name}"))?,
    ))
}

/// The release sidecar relaying `kafka`'s topic into `redis`, its ops port on
/// `port`, with `extra` settings.
pub fn sidecar(
    redis: &RedisServer,
    kafka: &Kafka,
    port: u16,
    extra: &[(&str, String)],
) -> Result<Proc> {
    sidecar_logged(redis, kafka, port, extra, &Log::Inherit)
}

/// As [`sidecar`], its log going to `log`.
pub fn sidecar_logged(
    redis: &RedisServer,
    kafka: &Kafka,
    port: u16,
    extra: &[(&str, String)],
    log: &Log,
) -> Result<Proc> {
    let base = [
        ("REDIS_URL", redis.url()),
        ("KAFKA_BROKERS", kafka.brokers()),
        ("KAFKA_TOPIC", kafka.topic.clone()),
        ("HTTP_LISTEN", format!("127.0.0.1:{port}")),
    ];
    let env = [&base[..], extra].concat();
    spawn_logged("crm-events-sidecar", &[], &env, log)
}

/// The release publisher of `pg`'s outbox into `kafka`'s topic, its ops port on
/// `port`, with `extra` settings.
pub fn publisher(
    pg: &Postgres,
    kafka: &Kafka,
    port: u16,
    extra: &[(&str, String)],
) -> Result<Proc> {
    let base = [
        ("DATABASE_URL", pg.url()),
        ("KAFKA_BROKERS", kafka.brokers()),
        ("KAFKA_TOPIC", kafka.topic.clone()),
        ("HTTP_LISTEN", format!("127.0.0.1:{port}")),
    ];
    spawn("crm-events-outbox", &["run"], &[&base[..], extra].concat())
}

/// Kafka answers a waiting fetch as soon as data arrives; librdkafka's mock broker
/// holds it to `fetch.wait.max.ms`. 1 ms stands in for Kafka's behaviour.
pub fn prompt_fetch() -> (&'static str, String) {
    ("KAFKA_PROP_FETCH_WAIT_MAX_MS", "1".to_string())
}

/// CPU seconds (user + system) a process has used (`/proc/<pid>/stat`, 100 ticks/s).
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command (which may hold spaces) start past the last ')'.
    let rest = stat.rsplit(')').next().context("stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks =
        |i: usize| -> Result<f64> { Ok(fields.get(i).context("stat field")?.parse::<f64>()?) };
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

/// The pids of every process whose command is `comm` (`/proc/<pid>/comm`).
pub fn pids_of(comm: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
        })
        .collect()
}

/// CPU seconds used by every process whose command is `comm` (e.g. the backends
/// of a PostgreSQL cluster: `postgres`).
pub fn cpu_seconds_of(comm: &str) -> f64 {
    pids_of(comm)
        .into_iter()
        .filter_map(|pid| cpu_seconds(pid).ok())
        .sum()
}

/// Resident memory of a process, bytes.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS")?;
    Ok(kb * 1024)
}

/// Memory only this process holds (`Private_Clean` + `Private_Dirty` of
/// `/proc/<pid>/smaps_rollup`), bytes: unlike RSS it does not count pages shared with
/// other mappings (a component's copy-on-write memory image) once per instance.
pub fn private_bytes(pid: u32) -> Result<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    let kb: u64 = rollup
        .lines()
        .filter(|l| l.starts_with("Private_Clean:") || l.starts_with("Private_Dirty:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum();
    Ok(kb * 1024)
}

pub use crm_events_harness::wait::until;
