//! The native processes as children: the real sidecar and publisher binaries,
//! configured by environment, each with its operations port on a free loopback port.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The sidecar binary (built by `make test` before the tests run).
pub fn binary() -> PathBuf {
    crm_events_harness::app::binary("crm-events-sidecar")
}

/// A running native process; killed when dropped.
pub struct Native {
    pub child: Child,
    /// `http://127.0.0.1:<port>` of its `/healthz`, `/readyz`, `/metrics`.
    pub http: String,
}

/// The sidecar is one.
pub type Sidecar = Native;

impl Native {
    /// Starts `binary` with a clean environment plus `env` and its ops port.
    pub fn spawn(binary: PathBuf, env: &[(&str, &str)]) -> Native {
        let port = crm_events_harness::redis_server::free_port().unwrap();
        let mut cmd = Command::new(binary);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .env("HTTP_LISTEN", format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Native {
            child: cmd.spawn().expect("spawn"),
            http: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Starts the sidecar against `redis_url` and `brokers` with extra settings.
    pub fn start(redis_url: &str, brokers: &str, topic: &str, extra: &[(&str, &str)]) -> Native {
        let base = [
            ("REDIS_URL", redis_url),
            ("KAFKA_BROKERS", brokers),
            ("KAFKA_TOPIC", topic),
            ("KAFKA_PROP_SESSION_TIMEOUT_MS", "3000"),
            ("KAFKA_PROP_HEARTBEAT_INTERVAL_MS", "300"),
            ("KAFKA_STATS_INTERVAL_MS", "500"),
        ];
        Self::spawn(binary(), &[&base[..], extra].concat())
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM: the graceful stop.
    pub fn terminate(&mut self) {
        assert!(crm_events_harness::signal::to_process(
            self.child.id(),
            "TERM"
        ));
    }

    /// Waits for the process to exit after [`Native::terminate`]; panics past `within`.
    pub async fn exit_status(&mut self, within: Duration) -> std::process::ExitStatus {
        let started = std::time::Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(started.elapsed() < within, "did not stop within {within:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `/readyz`: `(status, body)`, or `None` while the port does not answer.
    pub async fn readiness(&self) -> Option<(u16, serde_json::Value)> {
        let r = super::client()
            .get(format!("{}/readyz", self.http))
            .send()
            .await
            .ok()?;
        let status = r.status().as_u16();
        Some((status, r.json().await.ok()?))
    }

    /// Waits until the series `series` in `/metrics` reads `value` (panics after `timeout`).
    pub async fn wait_metric(&self, series: &str, value: f64, timeout: Duration) {
        let what = format!("{series} to read {value}");
        crm_events_harness::wait::until(&what, timeout, || async {
            self.metric(series).await == Some(value)
        })
        .await
        .unwrap();
    }

    /// Waits until `check` holds for `/readyz`; returns its body (panics after `timeout`).
    pub async fn wait_ready(
        &self,
        timeout: Duration,
        check: impl Fn(u16, &serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let matched = std::cell::RefCell::new(serde_json::Value::Null);
        crm_events_harness::wait::until("the expected /readyz", timeout, || async {
            match self.readiness().await {
                Some((status, body)) if check(status, &body) => {
                    *matched.borrow_mut() = body;
                    true
                }
                _ => false,
            }
        })
        .await
        .unwrap();
        matched.into_inner()
    }

    /// The value of the series `series` (`name` or `name{labels}`) in `/metrics`.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = super::get_text(&format!("{}/metrics", self.http)).await;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }
}

impl Drop for Native {
    fn drop(&mut self) {
        self.kill();
    }
}
