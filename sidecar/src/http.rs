//! The sidecar's own HTTP port: `/healthz` (the process runs), `/readyz` (Redis
//! reachable and partitions assigned) and `/metrics` (Prometheus text, histograms
//! included). Kubernetes probes and Prometheus point here.

use crate::telemetry::Telemetry;
use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpListener;

fn respond(status: u16, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts")
}

/// Answers one request.
pub fn route(telemetry: &Telemetry, method: &hyper::Method, path: &str) -> Response<Full<Bytes>> {
    const JSON: &str = "application/json";
    if method != hyper::Method::GET && method != hyper::Method::HEAD {
        let mut r = respond(
            405,
            JSON,
            r#"{"ok":false,"error":"method_not_allowed"}"#.into(),
        );
        r.headers_mut().insert(
            "allow",
            hyper::header::HeaderValue::from_static("GET, HEAD"),
        );
        return r;
    }
    match path {
        "/healthz" => respond(200, JSON, r#"{"ok":true}"#.into()),
        "/readyz" => {
            let (ready, checks) = telemetry.readiness();
            let body = serde_json::json!({ "ok": ready, "checks": checks }).to_string();
            respond(if ready { 200 } else { 503 }, JSON, body)
        }
        "/metrics" => respond(
            200,
            crm_events_contracts::http::PROMETHEUS_TEXT,
            telemetry.render(),
        ),
        _ => respond(404, JSON, r#"{"ok":false,"error":"not_found"}"#.into()),
    }
}

/// Serves on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, telemetry: Arc<Telemetry>) {
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        let telemetry = telemetry.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let r = route(&telemetry, req.method(), req.uri().path());
                async move { Ok::<_, Infallible>(r) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(socket), service)
                .await;
        });
    }
}
