//! The operations port of a native process: `/healthz` (the process runs),
//! `/readyz` (its dependencies answer) and `/metrics` (Prometheus text, histograms
//! included). Kubernetes probes and Prometheus point here.

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpListener;

/// What a process tells its operations port.
pub trait Probe: Send + Sync + 'static {
    /// `(ready, checks)`: the `/readyz` verdict and the JSON object of its checks.
    fn readiness(&self) -> (bool, serde_json::Value);
    /// The Prometheus text exposition.
    fn render(&self) -> String;
}

fn respond(status: u16, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts")
}

/// Answers one request.
pub fn route(probe: &dyn Probe, method: &hyper::Method, path: &str) -> Response<Full<Bytes>> {
    const JSON: &str = crm_events_contracts::http::JSON;
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
            let (ready, checks) = probe.readiness();
            let body = serde_json::json!({ "ok": ready, "checks": checks }).to_string();
            respond(if ready { 200 } else { 503 }, JSON, body)
        }
        "/metrics" => respond(
            200,
            crm_events_contracts::http::PROMETHEUS_TEXT,
            probe.render(),
        ),
        _ => respond(404, JSON, r#"{"ok":false,"error":"not_found"}"#.into()),
    }
}

/// Binds `addr` (naming it in the error, so a taken port says which setting moves it).
pub async fn bind(addr: &str, setting: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot listen on {setting}={addr}: {e}"))
    })
}

/// Serves on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, probe: Arc<dyn Probe>) {
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        let probe = probe.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let r = route(probe.as_ref(), req.method(), req.uri().path());
                async move { Ok::<_, Infallible>(r) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(socket), service)
                .await;
        });
    }
}
