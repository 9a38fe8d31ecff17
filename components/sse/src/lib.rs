//! The `sse` component: `GET /crm-events`, the live, resumable, filtered stream.
//!
//! One request is one component instance (WASI 0.2), held for as long as the stream
//! is open. The handler validates the request, takes a client lease, resolves where
//! to start ([`position`]), sends the headers, and then [`relay`]s the Redis stream:
//! `XREAD BLOCK` on a connection of its own, so new events go out within one Redis
//! round trip and the block time doubles as the keepalive interval.

mod lease;
mod position;
mod relay;

use crm_events_contracts::config::SseConfig;
use crm_events_contracts::http::{error_body, routes, EVENT_STREAM, JSON};
use crm_events_contracts::request::SseRequest;
use crm_events_contracts::spin_glue::{send_whole, Redis, SpinVariables};
use spin_sdk::http::{IncomingRequest, Method, ResponseOutparam};
use spin_sdk::http_component;

#[http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .first()
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let origin = header("origin");
    let last_event_id = header("last-event-id");
    let method = req.method();
    let path_with_query = req.path_with_query().unwrap_or_default();
    let query = path_with_query.split_once('?').map_or("", |(_, q)| q);

    let config = match SseConfig::load(&SpinVariables) {
        Ok(c) => c,
        Err(e) => {
            let body = error_body("configuration", &e.to_string(), &[]);
            return send_whole(out, 500, &[("content-type", JSON)], body).await;
        }
    };
    let allow_origin = config.cors.allow_origin(origin.as_deref());
    let mut cors: Vec<(&str, &str)> = Vec::new();
    if let Some(o) = allow_origin.as_deref() {
        cors.push(("access-control-allow-origin", o));
        cors.push(("vary", "origin"));
    }

    match method {
        Method::Get => {}
        Method::Options => {
            let mut headers = cors.clone();
            headers.push(("allow", "GET, OPTIONS"));
            if allow_origin.is_some() {
                headers.push(("access-control-allow-methods", "GET, OPTIONS"));
                headers.push((
                    "access-control-allow-headers",
                    "last-event-id, cache-control",
                ));
                headers.push(("access-control-max-age", "600"));
            }
            return send_whole(out, 204, &headers, String::new()).await;
        }
        _ => {
            let mut headers = cors.clone();
            headers.extend([("allow", "GET, OPTIONS"), ("content-type", JSON)]);
            let body = error_body("method_not_allowed", "use GET", &[]);
            return send_whole(out, 405, &headers, body).await;
        }
    }

    let reject = |status: u16, code: &str, message: String, extra: &[(&str, serde_json::Value)]| {
        let mut headers = cors.clone();
        headers.push(("content-type", JSON));
        headers.push(("cache-control", "no-store"));
        if status == 503 {
            headers.push(("retry-after", "5"));
        }
        (status, headers, error_body(code, &message, extra))
    };

    let request = match SseRequest::parse(query, last_event_id.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            let (s, h, b) = reject(
                400,
                "bad_request",
                e.message.clone(),
                &[("parameter", e.parameter.into())],
            );
            return send_whole(out, s, &h, b).await;
        }
    };

    let keys = &config.common.keys;
    let control = match Redis::open(&config.common.redis_address) {
        Ok(r) => r,
        Err(e) => {
            let (s, h, b) = reject(503, "redis_unavailable", e.to_string(), &[]);
            return send_whole(out, s, &h, b).await;
        }
    };
    let _ = control.count_request(keys, "GET", routes::EVENTS);

    let lease = match lease::Lease::acquire(&control, &config) {
        Ok(Some(l)) => l,
        Ok(None) => {
            let (s, h, b) = reject(
                503,
                "too_many_clients",
                format!(
                    "this service allows {} concurrent streams",
                    config.max_clients
                ),
                &[("max_clients", config.max_clients.into())],
            );
            return send_whole(out, s, &h, b).await;
        }
        Err(e) => {
            let (s, h, b) = reject(503, "redis_unavailable", e.to_string(), &[]);
            return send_whole(out, s, &h, b).await;
        }
    };

    // The stream gets a connection of its own: `XREAD BLOCK` holds it while waiting.
    let start = Redis::open(&config.common.redis_address)
        .and_then(|reader| Ok((position::resolve(&reader, keys, request.resume)?, reader)));
    let (start, reader) = match start {
        Ok(s) => s,
        Err(e) => {
            lease.release(&control);
            let (s, h, b) = reject(503, "redis_unavailable", e.to_string(), &[]);
            return send_whole(out, s, &h, b).await;
        }
    };

    let mut headers = cors.clone();
    headers.extend([
        ("content-type", EVENT_STREAM),
        ("cache-control", "no-cache"),
        ("x-accel-buffering", "no"),
    ]);
    relay::Relay {
        config: &config,
        control: &control,
        reader: &reader,
        filters: &request.filters,
        lease,
    }
    .run(out, &headers, start)
    .await;
}
