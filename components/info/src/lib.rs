//! The `info` component: `GET /` describes the service, and every path no other
//! component claims (`/...` in `spin.toml`) gets a JSON 404. Counting the request
//! is its probe of Redis: when Redis does not answer, `GET /` is `503
//! redis_unavailable` rather than a "ready" it cannot vouch for.

use crm_events_contracts::config::CommonConfig;
use crm_events_contracts::http::{routes, Refusal};
use crm_events_contracts::spin_glue::{
    count_request, json_response, refusal_response, reject_unless_get, Head, SpinVariables,
};
use spin_sdk::http::{IncomingRequest, Response};
use spin_sdk::http_component;

#[http_component]
fn handle(req: IncomingRequest) -> Response {
    // The head only: no route here takes a body, so none is read.
    let req = Head::of(&req);
    let config = CommonConfig::load(&SpinVariables);
    let path = req.path.clone();
    let redis = count_request(&config, &req.method, &path);
    if path != routes::INFO {
        let refusal = Refusal::new(404, "not_found", "no such route")
            .with("path", path)
            .with("routes", routes::ALL);
        return refusal_response(&refusal);
    }
    if let Some(r) = reject_unless_get(&req.method) {
        return r;
    }
    // "ready" is a claim about Redis too: the count is the probe.
    if let Err(e) = redis {
        return refusal_response(&Refusal::redis_unavailable(e));
    }
    let body = serde_json::json!({
        "ok": true,
        "service": "crm-events",
        "version": env!("CARGO_PKG_VERSION"),
        "status": "ready",
        "kafka_brokers": config.kafka_brokers,
        "topic": config.topic,
        "group": config.group,
        "routes": routes::ALL,
    });
    json_response(200, body.to_string())
}
