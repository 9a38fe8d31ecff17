//! HTTP pieces every component shares: the route table, the label a request is
//! counted under, and JSON error bodies.

/// The routes the app serves. `spin.toml` maps them to components (the host reads
/// them from there); a test checks that `spin.toml`, this list and the README's
/// route table agree.
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

    /// Every route above.
    pub const ALL: &[&str] = &[INFO, HEALTHZ, READYZ, METRICS, EVENTS, VIEWER];
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
    routes::ALL
        .iter()
        .copied()
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

/// A request the service will not serve, and how to say so: the status, a JSON
/// body with a stable `error` code, and the headers that go with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// The HTTP status.
    pub status: u16,
    /// The `error` code in the body.
    pub code: &'static str,
    /// The human-readable `message` (never echoes credentials).
    pub message: String,
    /// Extra body fields.
    pub extra: Vec<(&'static str, serde_json::Value)>,
    /// `Retry-After` seconds, for 429 and 503.
    pub retry_after: Option<u64>,
}

impl Refusal {
    /// A refusal with no extras.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            extra: Vec::new(),
            retry_after: None,
        }
    }

    /// Adds a body field.
    pub fn with(mut self, name: &'static str, value: impl Into<serde_json::Value>) -> Self {
        self.extra.push((name, value.into()));
        self
    }

    /// Sets `Retry-After`.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// `503 redis_unavailable`: Redis cannot be reached; retry shortly.
    pub fn redis_unavailable(message: impl std::fmt::Display) -> Self {
        Self::new(503, "redis_unavailable", message.to_string()).retry_after(5)
    }

    /// The JSON body.
    pub fn body(&self) -> String {
        error_body(self.code, &self.message, &self.extra)
    }

    /// The headers beside `content-type: application/json`.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            ("content-type", JSON.to_string()),
            ("cache-control", "no-store".to_string()),
        ];
        if let Some(s) = self.retry_after {
            headers.push(("retry-after", s.to_string()));
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(request_counter_field("get", "/healthz"), "GET /healthz");
        assert_eq!(request_counter_field("BREW", "/wp-admin"), "other other");
        assert_eq!(path_label("/crm-events?tenant=a"), "/crm-events");
        assert_eq!(path_label("/ops/crm-events"), "/ops/crm-events");
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

    #[test]
    fn refusals_carry_status_code_and_retry_after() {
        let r = Refusal::redis_unavailable("down").with("hint", "later");
        assert_eq!(r.status, 503);
        assert!(r.headers().contains(&("retry-after", "5".to_string())));
        let b: serde_json::Value = serde_json::from_str(&r.body()).unwrap();
        assert_eq!(
            (b["error"].as_str(), b["hint"].as_str()),
            (Some("redis_unavailable"), Some("later"))
        );
    }
}
