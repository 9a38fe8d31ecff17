//! HTTP pieces every component shares: the route table, the label a request is
//! counted under, and JSON error bodies.

/// The routes the app serves, as `spin.toml` maps them.
pub mod routes {
    /// Service info.
    pub const INFO: &str = "/";
    /// Liveness.
    pub const HEALTHZ: &str = "/healthz";
    /// Readiness.
    pub const READYZ: &str = "/readyz";
    /// Prometheus metrics.
    pub const METRICS: &str = "/metrics";
    /// The SSE stream.
    pub const EVENTS: &str = "/crm-events";
    /// The live viewer page.
    pub const VIEWER: &str = "/ops/crm-events";
}

/// `Content-Type` of JSON bodies.
pub const JSON: &str = "application/json";
/// `Content-Type` of the SSE stream.
pub const EVENT_STREAM: &str = "text/event-stream";
/// `Content-Type` of the Prometheus text exposition format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `path` label a request is counted under: a known route, or `other`, so that
/// scanners probing random paths cannot grow the metric without bound.
pub fn path_label(path: &str) -> &'static str {
    let path = path.split('?').next().unwrap_or(path);
    [
        routes::INFO,
        routes::HEALTHZ,
        routes::READYZ,
        routes::METRICS,
        routes::EVENTS,
    ]
    .into_iter()
    .find(|r| *r == path)
    .unwrap_or("other")
}

/// The `method` label: a standard method, or `other`.
pub fn method_label(method: &str) -> &'static str {
    ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
        .into_iter()
        .find(|m| m.eq_ignore_ascii_case(method))
        .unwrap_or("other")
}

/// The field of the request-counter hash for one request.
pub fn request_counter_field(method: &str, path: &str) -> String {
    format!("{} {}", method_label(method), path_label(path))
}

/// Splits a request-counter field back into `(method, path)`.
pub fn split_request_counter_field(field: &str) -> Option<(&str, &str)> {
    field.split_once(' ')
}

/// A JSON error body: `{"ok":false,"error":<code>,"message":<message>}` plus extras.
pub fn error_body(code: &str, message: &str, extra: &[(&str, serde_json::Value)]) -> String {
    let mut body = serde_json::json!({ "ok": false, "error": code, "message": message });
    for (k, v) in extra {
        body[*k] = v.clone();
    }
    body.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(request_counter_field("get", "/healthz"), "GET /healthz");
        assert_eq!(request_counter_field("BREW", "/wp-admin"), "other other");
        assert_eq!(path_label("/crm-events?tenant=a"), "/crm-events");
        assert_eq!(split_request_counter_field("GET /"), Some(("GET", "/")));
    }

    #[test]
    fn error_body_is_json() {
        let b: serde_json::Value = serde_json::from_str(&error_body(
            "not_found",
            "no route",
            &[("path", "/x".into())],
        ))
        .unwrap();
        assert_eq!(b["ok"], false);
        assert_eq!(b["error"], "not_found");
        assert_eq!(b["path"], "/x");
    }
}
