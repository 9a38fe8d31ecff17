//! The `health` component: `/healthz` (liveness) and `/readyz` (readiness).
//!
//! Liveness answers from the instance alone and never touches Redis, so a Redis
//! outage cannot get the app restarted (and so it is the one route not counted in
//! `crm_events_http_requests_total`). Readiness checks that Redis answers and that the
//! sidecar's heartbeat key is present (it carries a TTL, so present means fresh), and
//! that access control is configured (the mode and the number of keys, never the
//! keys); on failure it answers 503 naming each failed check.

use crm_events_contracts::auth::{Mode, Verifier};
use crm_events_contracts::config::CommonConfig;
use crm_events_contracts::http::routes;
use crm_events_contracts::spin_glue::{
    json_response, reject_unless_get, Head, Redis, RedisError, SpinVariables,
};
use serde_json::{json, Map, Value};
use spin_sdk::http::{IncomingRequest, Response};
use spin_sdk::http_component;

#[http_component]
fn handle(req: IncomingRequest) -> Response {
    // The head only: neither route takes a body, so none is read.
    let req = Head::of(&req);
    if req.path == routes::HEALTHZ {
        return reject_unless_get(&req.method)
            .unwrap_or_else(|| json_response(200, json!({"ok": true}).to_string()));
    }
    let config = CommonConfig::load(&SpinVariables);
    let redis = Redis::open(&config.redis_address);
    if let Ok(r) = &redis {
        let _ = r.count_request(&config.keys, &req.method, routes::READYZ);
    }
    reject_unless_get(&req.method).unwrap_or_else(|| readiness(&config, redis))
}

fn readiness(config: &CommonConfig, redis: Result<Redis, RedisError>) -> Response {
    let mut checks = Map::new();
    let heartbeat = redis.and_then(|r| r.run_int("EXISTS", &[&config.keys.heartbeat()]));
    let mut failed = match heartbeat {
        Ok(n) if n > 0 => {
            checks.insert("redis".into(), "ok".into());
            checks.insert("sidecar".into(), "ok".into());
            vec![]
        }
        Ok(_) => {
            checks.insert("redis".into(), "ok".into());
            let why = "no fresh heartbeat: the sidecar is not running or cannot reach Redis";
            checks.insert("sidecar".into(), why.into());
            vec!["sidecar"]
        }
        Err(e) => {
            checks.insert("redis".into(), Value::from(e.to_string()));
            checks.insert("sidecar".into(), "unknown: Redis is unavailable".into());
            vec!["redis"]
        }
    };
    match auth_check() {
        Ok(state) => {
            checks.insert("auth".into(), state.into());
        }
        Err(e) => {
            checks.insert("auth".into(), e.into());
            failed.push("auth");
        }
    }
    let ok = failed.is_empty();
    let body = json!({ "ok": ok, "checks": checks, "failed": failed });
    json_response(if ok { 200 } else { 503 }, body.to_string())
}

/// Whether access control is configured: the mode and how many keys (never the
/// keys), or what is wrong with the settings.
fn auth_check() -> Result<String, String> {
    let verifier = Verifier::load(&SpinVariables).map_err(|e| e.to_string())?;
    Ok(match verifier.mode {
        Mode::Jwt => format!("jwt ({} keys)", verifier.key_count()),
        Mode::None => "none: every stream is open to anyone who reaches the service".to_string(),
    })
}
