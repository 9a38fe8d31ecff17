//! A throwaway PostgreSQL cluster on a free loopback port, for tests, benchmarks and
//! `make run`: Debian's `postgresql` server, `initdb` into a temporary directory and
//! `pg_ctl` to start and stop it.
//!
//! The binaries come from `PG_BIN`, else `initdb` on `PATH`, else the newest
//! `/usr/lib/postgresql/*/bin` (Debian keeps them off `PATH`). PostgreSQL refuses to
//! run as root, so under root the cluster runs as the `postgres` user the Debian
//! package creates. The database `crm` is owned by the role `crm_events`, as the
//! service's defaults expect. `fsync` is off (a killed server loses nothing it
//! committed; only an OS crash would), `synchronous_commit` stays on.

use anyhow::{bail, Context, Result};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The database the tests use.
pub const DATABASE: &str = "crm";
/// The role that owns it.
pub const USER: &str = "crm_events";

/// A cluster owned by this process (stopped and removed on drop).
pub struct Postgres {
    port: u16,
    dir: PathBuf,
    bin: PathBuf,
    /// `(uid, gid)` to run the server as, when this process is root.
    owner: Option<(u32, u32)>,
    running: bool,
}

/// The directory of the PostgreSQL server binaries.
pub fn bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|d| d.join("initdb").exists() && d.join("pg_ctl").exists());
    if let Some(dir) = on_path {
        // A symlink on PATH leads to the real bin directory, which has psql too.
        let real = std::fs::canonicalize(dir.join("initdb"))?;
        return Ok(real.parent().map_or(dir, Path::to_path_buf));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).context(
        "PostgreSQL server binaries not found (initdb, pg_ctl): install Debian's \
         postgresql package (make test does), or set PG_BIN",
    )
}

/// `(uid, gid)` of the `postgres` user when this process runs as root.
fn server_owner() -> Result<Option<(u32, u32)>> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1))
        .context("reading the effective uid")?;
    if euid != "0" {
        return Ok(None);
    }
    let id = |flag: &str| -> Result<u32> {
        let out = Command::new("id").args([flag, "postgres"]).output()?;
        if !out.status.success() {
            bail!("running as root needs the `postgres` user (Debian's postgresql package creates it)");
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
    };
    Ok(Some((id("-u")?, id("-g")?)))
}

impl Postgres {
    /// Initialises a cluster, starts it, and creates the role and database.
    pub fn start() -> Result<Self> {
        let port = crate::redis_server::free_port()?;
        let dir = std::env::temp_dir().join(format!("crm-events-pg-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let mut pg = Self {
            port,
            dir,
            bin: bin_dir()?,
            owner: server_owner()?,
            running: false,
        };
        if let Some((uid, gid)) = pg.owner {
            std::os::unix::fs::chown(&pg.dir, Some(uid), Some(gid))?;
        }
        let data = pg.data_dir();
        pg.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        pg.first_start()?;
        pg.psql("postgres", &format!("CREATE ROLE {USER} LOGIN"))?;
        pg.psql(
            "postgres",
            &format!("CREATE DATABASE {DATABASE} OWNER {USER}"),
        )?;
        Ok(pg)
    }

    fn data_dir(&self) -> String {
        self.dir.join("data").to_string_lossy().into_owned()
    }

    /// Runs a server binary as the cluster's owner.
    fn run(&self, tool: &str, args: &[&str]) -> Result<Output> {
        let mut cmd = Command::new(self.bin.join(tool));
        cmd.args(args).current_dir(&self.dir).stdin(Stdio::null());
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid);
        }
        let out = cmd.output().with_context(|| format!("running {tool}"))?;
        if !out.status.success() {
            bail!(
                "{tool} {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(out)
    }

    /// Runs one SQL command with `psql` as the superuser; returns its output.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String> {
        let port = self.port.to_string();
        let args = [
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-d",
            database,
        ];
        let out = self.run(
            "psql",
            &[&args[..], &["-v", "ON_ERROR_STOP=1", "-qAtc", sql]].concat(),
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Starts the server the first time, on another free port if the chosen one was
    /// taken in the meantime (the port is picked before the server binds it).
    fn first_start(&mut self) -> Result<()> {
        let mut last = None;
        for _ in 0..3 {
            match self.restart() {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
            self.port = crate::redis_server::free_port()?;
        }
        Err(last.expect("three attempts"))
    }

    /// The last lines of the server's log (what `pg_ctl` only points at).
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }

    /// Starts the server (again) on the same port and data; returns once it accepts
    /// connections (`pg_ctl -w`).
    pub fn restart(&mut self) -> Result<()> {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off \
             -c full_page_writes=off -c max_connections=300",
            self.port,
            self.dir.display()
        );
        let data = self.data_dir();
        let log = self.dir.join("server.log").to_string_lossy().into_owned();
        let started = self.run(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-w", "-t", "60", "-o", &options, "start",
            ],
        );
        if let Err(e) = started {
            bail!("{e:#}\nserver log:\n{}", self.log_tail());
        }
        self.running = true;
        Ok(())
    }

    /// Stops the server at once (`-m immediate`: as a crash would, without a
    /// checkpoint; it recovers from its WAL at the next start).
    pub fn stop(&mut self) {
        if self.running {
            let data = self.data_dir();
            let _ = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
            self.running = false;
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>` (Spin's `postgres_host`).
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The URL of the `crm` database as `crm_events`.
    pub fn url(&self) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// Where the cluster lives.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A client of the `crm` database (its connection driven in a task).
    pub async fn client(&self) -> Result<tokio_postgres::Client> {
        let (client, connection) =
            tokio_postgres::connect(&self.url(), tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
