//! A throwaway `redis-server` on a free loopback port, for tests and `make run`.
//!
//! It is the real server from the Debian package (`REDIS_SERVER` overrides the
//! binary). It can be stopped and started again on the same port and data
//! directory, to test what happens while Redis is away; with persistence on
//! (`appendfsync always`), a restart keeps every acknowledged write.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How a server keeps its data across a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// Nothing: a restart comes back empty (an RDB file put in its directory loads).
    None,
    /// Append-only file, fsync on every write: a restart keeps every acknowledged write.
    AofAlways,
    /// Append-only file, fsync every second (the recommended production setting): a
    /// crash may lose the last second.
    AofEverysec,
}

/// A running (or stopped) redis-server owned by this process.
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    persistence: Persistence,
    child: Option<Child>,
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl RedisServer {
    /// Starts a server without persistence.
    pub fn start() -> Result<Self> {
        Self::launch(Persistence::None)
    }

    /// Starts a server that writes every command to its append-only file first.
    pub fn start_persistent() -> Result<Self> {
        Self::launch(Persistence::AofAlways)
    }

    /// Starts a server with the given persistence.
    pub fn launch(persistence: Persistence) -> Result<Self> {
        let port = free_port()?;
        let dir =
            std::env::temp_dir().join(format!("crm-events-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut server = Self {
            port,
            dir,
            persistence,
            child: None,
        };
        server.restart()?;
        Ok(server)
    }

    /// The `redis://` URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `host:port`.
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Kills the server at once (SIGKILL), as a crash or a network cut would.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server (again) on the same port and data directory; waits until
    /// it answers PING.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        let bin = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let mut cmd = Command::new(&bin);
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--dir", &self.dir.to_string_lossy()])
            .args(["--save", ""])
            .args(["--protected-mode", "no"])
            .args(["--enable-debug-command", "local"]);
        match self.persistence {
            Persistence::AofAlways => cmd.args(["--appendonly", "yes", "--appendfsync", "always"]),
            Persistence::AofEverysec => {
                cmd.args(["--appendonly", "yes", "--appendfsync", "everysec"])
            }
            Persistence::None => cmd.args(["--appendonly", "no"]),
        };
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| {
                format!("starting {bin} (install it: apt-get install redis-server)")
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(client) = redis::Client::open(self.url()) {
                if let Ok(mut c) = client.get_connection_with_timeout(Duration::from_millis(200)) {
                    if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                        return Ok(());
                    }
                }
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    bail!("redis-server exited at start: {status}");
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "redis-server on port {} did not answer within 20 s",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Saves the dataset (`SAVE`) and keeps a copy of it: what a replica that stops
    /// receiving writes now would hold.
    pub fn snapshot(&self) -> Result<PathBuf> {
        let () = redis::cmd("SAVE").query(&mut self.connection()?)?;
        let copy = self.dir.join("snapshot.rdb");
        std::fs::copy(self.dir.join("dump.rdb"), &copy)?;
        Ok(copy)
    }

    /// Kills the server and starts it again from `snapshot` (a failover to a replica
    /// that missed every write since). Only without an append-only file.
    pub fn restart_from(&mut self, snapshot: &std::path::Path) -> Result<()> {
        assert_eq!(
            self.persistence,
            Persistence::None,
            "an AOF would win over the RDB"
        );
        self.stop();
        std::fs::copy(snapshot, self.dir.join("dump.rdb"))?;
        self.restart()
    }

    /// Freezes the server (SIGSTOP): it keeps its connections but answers nothing.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, signal: &str) {
        assert!(
            crate::signal::to_process(self.pid(), signal),
            "kill -{signal}"
        );
    }

    /// A synchronous client connection (for test setup and assertions).
    pub fn connection(&self) -> Result<redis::Connection> {
        Ok(redis::Client::open(self.url())?.get_connection()?)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
