//! The release binaries the benchmarks start, and reading a process's memory.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// Starts a release binary with arguments and environment.
pub fn spawn(name: &str, args: &[&str], env: &[(&str, String)]) -> Result<Proc> {
    let mut cmd = Command::new(binary(name)?);
    cmd.args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Ok(Proc(
        cmd.spawn().with_context(|| format!("starting {name}"))?,
    ))
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

/// Polls `check` every 5 ms until true, or fails after `timeout`.
pub async fn until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}
