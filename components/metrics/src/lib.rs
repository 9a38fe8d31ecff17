//! The `metrics` component: `GET /metrics` in the Prometheus text format.
//!
//! Spin instances keep nothing between requests, so the numbers live in Redis: the
//! SSE client leases, the relayed-message and request counters the components
//! increment, and the headline numbers the sidecar mirrors. This component reads
//! them and renders them with `crm_events_contracts::metrics`.

use crm_events_contracts::auth::{bearer_matches, AuthError};
use crm_events_contracts::config::{SseConfig, Variables, METRICS_TOKEN};
use crm_events_contracts::guard::AuthFailureLimit;
use crm_events_contracts::http::{routes, Refusal, PROMETHEUS_TEXT};
use crm_events_contracts::metrics::{render, Snapshot};
use crm_events_contracts::reply::Reply;
use crm_events_contracts::spin_glue::{
    refusal_response, reject_unless_get, AuthGuard, Head, Redis, RedisError, SpinVariables,
};
use spin_sdk::http::{IncomingRequest, Response};
use spin_sdk::http_component;

#[http_component]
fn handle(req: IncomingRequest) -> Response {
    // The head only: a scrape has no body, so none is read.
    let req = Head::of(&req);
    let config = match SseConfig::load(&SpinVariables) {
        Ok(c) => c,
        Err(e) => return refusal_response(&Refusal::new(500, "configuration", e.to_string())),
    };
    let redis = Redis::open(&config.common.redis_address);
    if let Ok(r) = &redis {
        let _ = r.count_request(&config.common.keys, &req.method, routes::METRICS);
    }
    if let Some(r) = reject_unless_get(&req.method) {
        return r;
    }
    if let Err(refusal) = check_scrape_token(&req, redis.as_ref().ok(), &config) {
        return refusal_response(&refusal);
    }
    match redis.and_then(|r| snapshot(&r, &config)) {
        Ok(s) => Response::builder()
            .status(200)
            .header("content-type", PROMETHEUS_TEXT)
            .header("cache-control", "no-store")
            .body(render(&s))
            .build(),
        Err(e) => refusal_response(&Refusal::redis_unavailable(e)),
    }
}

/// `401` unless the scrape token is unset or presented; wrong tokens count toward the
/// address's failed-authentication limit (`429` past it).
fn check_scrape_token(
    req: &Head,
    redis: Option<&Redis>,
    config: &SseConfig,
) -> Result<(), Refusal> {
    let token = SpinVariables.get(METRICS_TOKEN).unwrap_or_default();
    if token.is_empty() {
        return Ok(());
    }
    let limit = AuthFailureLimit::load(&SpinVariables).map_err(|e| Refusal::configuration(&e))?;
    let address = req.client_address(&config.trusted_proxies);
    let guard = AuthGuard {
        redis,
        keys: &config.common.keys,
        address: &address,
        limit,
    };
    let authorization = req.header("authorization");
    let outcome = guard.authenticate(|| match authorization.as_deref() {
        None => Err(AuthError::Missing),
        Some(a) if bearer_matches(Some(a), &token) => Ok(()),
        Some(_) => Err(AuthError::BadSignature),
    });
    outcome.map_err(|refusal| match refusal.status {
        401 => Refusal::new(401, "unauthorized", "this /metrics needs its scrape token")
            .header("www-authenticate", r#"Bearer realm="crm-events-metrics""#),
        _ => refusal,
    })
}

fn snapshot(redis: &Redis, config: &SseConfig) -> Result<Snapshot, RedisError> {
    let keys = &config.common.keys;
    let now_ms = redis_time_ms(redis)?;
    Ok(Snapshot {
        sse_clients: redis.run_int("ZCOUNT", &[&keys.sse_leases(), &now_ms.to_string(), "+inf"])?,
        max_clients: config.max_clients,
        messages_total: counter(redis, &keys.messages_total())?,
        slow_clients_total: counter(redis, &keys.slow_clients_total())?,
        http_requests: pairs(redis.run("HGETALL", &[&keys.http_requests()])?)
            .into_iter()
            .map(|(k, v)| (k, v.parse().unwrap_or(0)))
            .collect(),
        sidecar_up: redis.run_int("EXISTS", &[&keys.heartbeat()])? > 0,
        sidecar: pairs(redis.run("HGETALL", &[&keys.sidecar_metrics()])?),
    })
}

/// A counter kept in a Redis string (0 while it does not exist).
fn counter(redis: &Redis, key: &str) -> Result<u64, RedisError> {
    Ok(redis
        .run("GET", &[key])?
        .first()
        .and_then(Reply::as_int)
        .unwrap_or(0)
        .max(0) as u64)
}

/// Redis's clock in ms (leases are stamped with it, so the count uses it too).
fn redis_time_ms(redis: &Redis) -> Result<i64, RedisError> {
    let t = redis.run("TIME", &[])?;
    match (
        t.first().and_then(Reply::as_int),
        t.get(1).and_then(Reply::as_int),
    ) {
        (Some(s), Some(us)) => Ok(s * 1000 + us / 1000),
        _ => Err(RedisError::protocol("TIME", format!("{t:?}"))),
    }
}

/// A flattened `HGETALL` reply as `(field, value)` text pairs.
fn pairs(items: Vec<Reply>) -> Vec<(String, String)> {
    items
        .chunks_exact(2)
        .filter_map(|p| Some((p[0].as_str()?.to_string(), p[1].as_str()?.to_string())))
        .collect()
}
