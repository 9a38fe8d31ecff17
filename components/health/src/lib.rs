//! The `health` component: `/healthz` (liveness) and `/readyz` (readiness).
//!
//! Liveness answers from the instance alone and never touches Redis, so a Redis
//! outage cannot get the app restarted. Readiness checks that Redis answers and that
//! the sidecar's heartbeat key is present (it carries a TTL, so present means fresh);
//! on failure it answers 503 naming each failed check.

use crm_events_contracts::config::CommonConfig;
use crm_events_contracts::http::routes;
use crm_events_contracts::spin_glue::{json_response, reject_unless_get, Redis, SpinVariables};
use spin_sdk::http::{Request, Response};
use spin_sdk::http_component;

#[http_component]
fn handle(req: Request) -> Response {
    if let Some(r) = reject_unless_get(&req) {
        return r;
    }
    match req.path() {
        routes::HEALTHZ => json_response(200, r#"{"ok":true}"#.to_string()),
        _ => readiness(&req.method().to_string()),
    }
}

fn readiness(method: &str) -> Response {
    let config = CommonConfig::load(&SpinVariables);
    let mut checks = serde_json::Map::new();
    let mut failed = Vec::new();
    match Redis::open(&config.redis_address).and_then(|redis| {
        let _ = redis.count_request(&config.keys, method, routes::READYZ);
        redis.run_int("EXISTS", &[&config.keys.heartbeat()])
    }) {
        Ok(n) => {
            checks.insert("redis".into(), "ok".into());
            if n > 0 {
                checks.insert("sidecar".into(), "ok".into());
            } else {
                checks.insert(
                    "sidecar".into(),
                    "no fresh heartbeat: the sidecar is not running or cannot reach Redis".into(),
                );
                failed.push("sidecar");
            }
        }
        Err(e) => {
            checks.insert("redis".into(), e.to_string().into());
            checks.insert("sidecar".into(), "unknown: Redis is unavailable".into());
            failed.push("redis");
        }
    }
    let ok = failed.is_empty();
    let body = serde_json::json!({ "ok": ok, "checks": checks, "failed": failed });
    json_response(if ok { 200 } else { 503 }, body.to_string())
}
