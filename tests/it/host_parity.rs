//! The host behaves as `spin up` (Spin 4) does wherever a component or a client can
//! tell: the instance cap and its answer, a trapping component, Spin's own paths and
//! empty 404, `allowed_outbound_hosts` denials, and the `spin-*` headers (unit-tested
//! in the host beside the variables rules and `TCP_NODELAY`).

mod common;

use common::client;
use crm_events_harness::app::{manifest_path, root, App};
use crm_events_harness::redis_server::RedisServer;
use crm_events_host::{Host, HostConfig};
use std::time::Duration;

/// A component that exports `wasi:http/incoming-handler` and traps (`unreachable`)
/// on every request.
const TRAPPING_COMPONENT: &str = r#"
(component
  (import "wasi:http/types@0.2.0" (instance $types
    (export "incoming-request" (type (sub resource)))
    (export "response-outparam" (type (sub resource)))))
  (alias export $types "incoming-request" (type $request))
  (alias export $types "response-outparam" (type $outparam))
  (core module $m
    (func (export "handle") (param i32 i32) unreachable))
  (core instance $i (instantiate $m))
  (func $handle (param "request" (own $request)) (param "response-out" (own $outparam))
    (canon lift (core func $i "handle")))
  (instance $handler (export "handle" (func $handle)))
  (export "wasi:http/incoming-handler@0.2.0" (instance $handler)))
"#;

/// Writes a one-component app whose component traps; returns its manifest.
fn trapping_app(dir: &std::path::Path) -> std::path::PathBuf {
    let wasm = wat::parse_str(TRAPPING_COMPONENT).expect("the test component assembles");
    std::fs::write(dir.join("trap.wasm"), wasm).unwrap();
    let manifest = dir.join("spin.toml");
    std::fs::write(
        &manifest,
        r#"spin_manifest_version = 2
[application]
name = "parity"
version = "1.2.3"
[[trigger.http]]
route = "/trap"
component = "trap"
[component.trap]
source = "trap.wasm"
"#,
    )
    .unwrap();
    manifest
}

async fn status_and_body(url: &str) -> (u16, String) {
    let resp = client().get(url).send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// Spin answers a trapped component with `500` and no body; a path no route
/// matches with an empty `404`; and its own `/.well-known/spin/` paths.
#[tokio::test]
async fn a_trap_is_an_empty_500_and_spins_own_paths_answer() {
    let dir = tempdir("trap");
    let host = Host::load(HostConfig::new(trapping_app(&dir)))
        .await
        .unwrap();
    let addr = crm_events_host::server::spawn(host.clone(), "127.0.0.1:0")
        .await
        .unwrap();
    let url = |p: &str| format!("http://{addr}{p}");
    assert_eq!(status_and_body(&url("/trap")).await, (500, String::new()));
    assert_eq!(host.live_instances(), 0, "the trapped instance is gone");
    assert_eq!(
        status_and_body(&url("/nowhere")).await,
        (404, String::new())
    );
    assert_eq!(
        status_and_body(&url("/.well-known/spin/health")).await,
        (200, "OK".to_string())
    );
    let (status, info) = status_and_body(&url("/.well-known/spin/info")).await;
    assert_eq!(status, 200);
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["name"], "parity");
    assert_eq!(info["version"], "1.2.3");
    let _ = std::fs::remove_dir_all(dir);
}

/// Beyond the instance cap a request gets Spin's empty `500` (its instance pool
/// is exhausted); once the open stream ends its slot serves again.
#[tokio::test]
async fn a_request_beyond_the_instance_cap_gets_spins_empty_500() {
    let redis = RedisServer::start().unwrap();
    let app = App::start_with(&redis, &[], 1).await;
    let stream = client().get(app.url("/crm-events")).send().await.unwrap();
    assert_eq!(stream.status().as_u16(), 200);
    assert_eq!(
        app.host.live_instances(),
        1,
        "the open stream holds its instance"
    );
    assert_eq!(
        status_and_body(&app.url("/healthz")).await,
        (500, String::new())
    );
    drop(stream);
    app.wait_live_instances(0, Duration::from_secs(30)).await;
    let (status, _) = status_and_body(&app.url("/healthz")).await;
    assert_eq!(status, 200);
}

/// A component whose Redis address is not in its `allowed_outbound_hosts` is
/// refused by the host before any connection: `/readyz` answers 503 and Redis
/// never sees a client.
#[tokio::test]
async fn outbound_hosts_not_listed_are_denied() {
    let redis = RedisServer::start().unwrap();
    let manifest = std::fs::read_to_string(manifest_path()).unwrap();
    let narrowed = manifest.replace(
        r#"allowed_outbound_hosts = ["redis://{{ redis_host }}"]"#,
        r#"allowed_outbound_hosts = ["redis://127.0.0.1:1"]"#,
    );
    assert_ne!(
        narrowed, manifest,
        "spin.toml lists redis://{{{{ redis_host }}}}"
    );
    // Beside spin.toml, so its relative component paths hold.
    let path = root().join(format!(".host-parity-{}.toml", std::process::id()));
    std::fs::write(&path, narrowed).unwrap();
    let host = Host::load(HostConfig::new(&path).variable("redis_host", redis.host_port()))
        .await
        .unwrap();
    let _ = std::fs::remove_file(&path);
    let addr = crm_events_host::server::spawn(host, "127.0.0.1:0")
        .await
        .unwrap();
    let clients_before = connected_clients(&redis);
    let resp = client()
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["ok"], false, "{body}");
    assert_eq!(
        connected_clients(&redis),
        clients_before,
        "Redis was reached"
    );
}

/// Clients connected to `redis` (this query's own connection included).
fn connected_clients(redis: &RedisServer) -> usize {
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut conn).unwrap();
    list.lines().count()
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("crm-events-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
