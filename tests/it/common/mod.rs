//! What the integration tests share: a real redis-server and the real components
//! served by the test host on a loopback port; the sidecar process and stream
//! helpers in the submodules. Kafka and the SSE client live in the host crate.

#![allow(dead_code)]

pub mod sidecar;
pub mod stream;

use crm_events_host::redis_server::RedisServer;
use crm_events_host::{Host, HostConfig};
use std::path::PathBuf;
use std::sync::Arc;

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The app, served on a loopback port.
pub struct App {
    pub base: String,
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
        let mut config =
            HostConfig::new(root().join("spin.toml")).variable("redis_host", redis.host_port());
        for (k, v) in vars {
            config = config.variable(k, *v);
        }
        config.max_instances = max_instances;
        config.cache_dir = Some(root().join("target/crm-events-host-cache"));
        let host = Host::load(config)
            .await
            .expect("load spin.toml components (build them first: make components)");
        let addr = crm_events_host::server::spawn(host.clone(), "127.0.0.1:0")
            .await
            .expect("bind");
        App {
            base: format!("http://{addr}"),
            host,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
}

/// An HTTP client.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap()
}
