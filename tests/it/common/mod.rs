//! What the integration tests share beyond the harness library: the sidecar and the
//! publisher as child processes, reading the Redis stream back, and an HTTP client.

#![allow(dead_code)]

pub mod node;
pub mod outbox;
pub mod publisher;
pub mod sidecar;
pub mod stream;

#[allow(unused_imports)]
pub use crm_events_harness::app::{root, App};

/// The body of `GET url` as text.
pub async fn get_text(url: &str) -> String {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// An HTTP client with a bound on every request.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("reqwest client")
}

/// The routes `spin.toml` triggers, each with the component that serves it.
pub fn manifest_routes() -> Vec<(String, String)> {
    let manifest =
        crm_events_host::manifest::Manifest::load(&root().join("spin.toml"), &Default::default())
            .unwrap();
    manifest
        .routes
        .iter()
        .map(|(route, component)| (route.pattern(), component.clone()))
        .collect()
}

/// The app on the host as a process of its own (so killing it really drops its
/// clients' streams), with these variables; it listens on `port` when this returns.
pub fn spawn_app(
    port: u16,
    redis: &crm_events_harness::redis_server::RedisServer,
    vars: &[(&str, String)],
) -> Killed {
    let mut cmd = crm_events_harness::app::host_command(port, redis);
    for (k, v) in vars {
        cmd.args(["--variable", &format!("{k}={v}")]);
    }
    let child = cmd.env("RUST_LOG", "error").spawn().unwrap();
    crm_events_harness::app::wait_listening(port);
    Killed(child)
}

/// A child process that is killed when dropped (also when a test panics).
pub struct Killed(pub std::process::Child);

impl Killed {
    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }

    /// Kills it now and waits for it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        self.kill();
    }
}
