//! What the integration tests share beyond the harness library: the sidecar and the
//! publisher as child processes, reading the Redis stream back, and an HTTP client.

#![allow(dead_code)]

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
