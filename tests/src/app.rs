//! The app under test: `spin.toml`'s components served by the host on a loopback port.
//!
//! The first [`App`] of a test process runs every component's `[component.*.build]`
//! command from `spin.toml`, as `spin build` does, so plain `cargo test` never loads a
//! stale or missing `.wasm` (the build is a no-op when nothing changed). If that
//! build fails, the test fails with one line saying what to run.

use crate::redis_server::RedisServer;
use crm_events_host::manifest::Manifest;
use crm_events_host::{Host, HostConfig};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, OnceLock};

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The manifest every test serves.
pub fn manifest_path() -> PathBuf {
    root().join("spin.toml")
}

/// Where the host keeps compiled components between runs.
pub fn cache_dir() -> PathBuf {
    root().join("target/crm-events-host-cache")
}

/// Where cargo puts a native binary of this workspace: `target/<profile>/<name>`
/// (`CARGO_TARGET_DIR` honoured).
pub fn binary_path(profile: &str, name: &str) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
        .join(profile)
        .join(name)
}

/// A debug binary of this workspace, which `make test` builds; panics when missing.
pub fn binary(name: &str) -> PathBuf {
    let path = binary_path("debug", name);
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --bins` (make test does)",
        path.display()
    );
    path
}

/// Builds the components once per process, as `spin build` would; panics with the
/// command to run when that fails.
pub fn build_components() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let result = BUILT.get_or_init(|| {
        let manifest = Manifest::load(&manifest_path(), &Default::default())
            .map_err(|e| format!("spin.toml: {e:#}"))?;
        let mut commands: Vec<&str> = manifest
            .components
            .values()
            .filter_map(|c| c.build_command.as_deref())
            .collect();
        commands.dedup();
        commands.into_iter().try_for_each(run_build_command)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

fn run_build_command(command: &str) -> Result<(), String> {
    let status = Command::new("sh")
        .args(["-c", command])
        .current_dir(root())
        .status()
        .map_err(|e| format!("running `{command}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "building the components failed (`{command}`): run `make components` \
             (it installs the wasm32-wasip2 target) and see its errors"
        ))
    }
}

/// The app, served on a loopback port.
pub struct App {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The host, for its instance count.
    pub host: Arc<Host>,
}

impl App {
    /// Serves `spin.toml` with Redis at `redis` and extra variables.
    pub async fn start(redis: &RedisServer, vars: &[(&str, &str)]) -> App {
        Self::start_with(redis, vars, crm_events_host::runtime::DEFAULT_MAX_INSTANCES).await
    }

    /// As [`App::start`], with an instance cap.
    pub async fn start_with(
        redis: &RedisServer,
        vars: &[(&str, &str)],
        max_instances: usize,
    ) -> App {
        Self::start_tuned(redis, vars, |config| config.max_instances = max_instances).await
    }

    /// As [`App::start`], with the host's settings changed by `tune`.
    pub async fn start_tuned(
        redis: &RedisServer,
        vars: &[(&str, &str)],
        tune: impl FnOnce(&mut HostConfig),
    ) -> App {
        build_components();
        let mut config = HostConfig::new(manifest_path())
            .variable("redis_host", redis.host_port())
            // Tests that are not about access control run with it off; the auth
            // tests set auth_mode=jwt and their keys.
            .variable("auth_mode", "none")
            // Many tests present bad tokens on purpose, all from 127.0.0.1; the
            // failed-authentication limit has tests of its own (abuse.rs).
            .variable("max_auth_failures_per_minute", "0");
        for (k, v) in vars {
            config = config.variable(k, *v);
        }
        config.cache_dir = Some(cache_dir());
        // Served as the host binary serves them: on worker threads of their own.
        config.workers = 2;
        tune(&mut config);
        let host = Host::load(config)
            .await
            .expect("load spin.toml's components");
        let addr = crm_events_host::server::spawn(host.clone(), "127.0.0.1:0")
            .await
            .expect("bind");
        App {
            base: format!("http://{addr}"),
            host,
        }
    }

    /// Waits until exactly `n` instances are alive; panics after `timeout`.
    pub async fn wait_live_instances(&self, n: usize, timeout: std::time::Duration) {
        let what = format!("{n} live instances");
        crate::wait::until(&what, timeout, || async { self.host.live_instances() == n })
            .await
            .unwrap();
    }

    /// The URL of `path` on this app.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
}

/// `crm-events-host` serving `spin.toml` on `127.0.0.1:port` with Redis at `redis`,
/// as its own process (for tests that stop it, or limit it); add arguments and
/// spawn, then [`wait_listening`].
pub fn host_command(port: u16, redis: &RedisServer) -> Command {
    build_components();
    let mut cmd = Command::new(binary("crm-events-host"));
    cmd.arg("--manifest")
        .arg(manifest_path())
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--variable", &format!("redis_host={}", redis.host_port())])
        .arg("--cache-dir")
        .arg(cache_dir())
        .stdout(std::process::Stdio::null());
    cmd
}

/// Waits until something listens on `127.0.0.1:port`; panics after a minute.
pub fn wait_listening(port: u16) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing listens on port {port}: the host did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
