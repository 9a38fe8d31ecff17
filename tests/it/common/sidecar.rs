//! The sidecar as a child process: the real binary, configured by environment.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// The sidecar binary (built by `make test` before the tests run).
pub fn binary() -> PathBuf {
    crm_events_harness::app::binary("crm-events-sidecar")
}

/// A running sidecar; killed when dropped.
pub struct Sidecar {
    pub child: Child,
    pub http: String,
}

impl Sidecar {
    /// Starts the sidecar against `redis_url` and `brokers` with extra settings.
    pub fn start(redis_url: &str, brokers: &str, topic: &str, extra: &[(&str, &str)]) -> Sidecar {
        let port = crm_events_harness::redis_server::free_port().unwrap();
        let mut cmd = Command::new(binary());
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .env("REDIS_URL", redis_url)
            .env("KAFKA_BROKERS", brokers)
            .env("KAFKA_TOPIC", topic)
            .env("HTTP_LISTEN", format!("127.0.0.1:{port}"))
            .env("KAFKA_PROP_SESSION_TIMEOUT_MS", "3000")
            .env("KAFKA_PROP_HEARTBEAT_INTERVAL_MS", "300")
            .env("KAFKA_STATS_INTERVAL_MS", "500")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn sidecar");
        Sidecar {
            child,
            http: format!("http://127.0.0.1:{port}"),
        }
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM: the graceful stop.
    pub fn terminate(&mut self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.kill();
    }
}
