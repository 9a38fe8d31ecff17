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

/// A child process that is killed when dropped (also when a test panics).
pub struct Killed(pub std::process::Child);

impl Killed {
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
