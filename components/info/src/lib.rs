//! The `info` component: `GET /` describes the service, and every path no other
//! component claims (`/...` in `spin.toml`) gets a JSON 404.

use crm_events_contracts::config::CommonConfig;
use crm_events_contracts::http::{error_body, routes};
use crm_events_contracts::spin_glue::{
    count_request_best_effort, json_response, reject_unless_get, SpinVariables,
};
use spin_sdk::http::{Request, Response};
use spin_sdk::http_component;

#[http_component]
fn handle(req: Request) -> Response {
    let config = CommonConfig::load(&SpinVariables);
    let method = req.method().to_string();
    let path = req.path().to_string();
    count_request_best_effort(&config.redis_address, &config.keys, &method, &path);

    if path != routes::INFO {
        return json_response(
            404,
            error_body(
                "not_found",
                "no such route",
                &[("path", path.into()), ("routes", known_routes())],
            ),
        );
    }
    if let Some(r) = reject_unless_get(&req) {
        return r;
    }
    let body = serde_json::json!({
        "ok": true,
        "service": "crm-events",
        "version": env!("CARGO_PKG_VERSION"),
        "status": "ready",
        "kafka_brokers": config.kafka_brokers,
        "topic": config.topic,
        "group": config.group,
        "routes": known_routes(),
    });
    json_response(200, body.to_string())
}

fn known_routes() -> serde_json::Value {
    serde_json::json!([
        routes::INFO,
        routes::HEALTHZ,
        routes::READYZ,
        routes::METRICS,
        routes::EVENTS,
        routes::VIEWER
    ])
}
