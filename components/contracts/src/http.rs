//! HTTP pieces every component shares: the route table, the label a request is
//! counted under, and JSON error bodies.

/// The routes the app serves. `spin.toml` maps them to components (the host reads
/// them from there); tests check that `spin.toml`, this list, the route table in
/// `docs/src/api.md` and `docs/src/api/openapi.json` agree.
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
    /// Trades a bearer token for the session cookie (and shows or ends the session).
    pub const SESSION: &str = "/crm-events/session";
    /// The live viewer page.
    pub const VIEWER: &str = "/ops/crm-events";
    /// The viewer's script (a file of its own: the page allows no inline script).
    pub const VIEWER_SCRIPT: &str = "/ops/crm-events/viewer.js";
    /// The viewer's style.
    pub const VIEWER_STYLE: &str = "/ops/crm-events/viewer.css";
    /// The TypeScript client, compiled (`clients/typescript/dist/index.js`), which the
    /// viewer's script imports.
    pub const VIEWER_CLIENT: &str = "/ops/crm-events/client.js";

    /// Every route above.
    pub const ALL: &[&str] = &[
        INFO,
        HEALTHZ,
        READYZ,
        METRICS,
        EVENTS,
        SESSION,
        VIEWER,
        VIEWER_SCRIPT,
        VIEWER_STYLE,
        VIEWER_CLIENT,
    ];
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
    /// Further headers (`WWW-Authenticate` on a 401).
    pub extra_headers: Vec<(&'static str, String)>,
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
            extra_headers: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.extra_headers.push((name, value.into()));
        self
    }

    /// `401`: no acceptable token (RFC 6750 `WWW-Authenticate`; never the token).
    pub fn unauthorized(e: &crate::auth::AuthError) -> Self {
        Self::new(401, e.code(), e.to_string()).header("www-authenticate", e.www_authenticate())
    }

    /// `403`: the token is valid but does not grant what was asked.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "forbidden", message)
    }

    /// `500 configuration`: a variable has an unusable value.
    pub fn configuration(e: &crate::config::ConfigError) -> Self {
        Self::new(500, "configuration", e.to_string())
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
        headers.extend(self.extra_headers.iter().cloned());
        headers
    }
}

/// The client's IP address for per-address limits: the peer Spin reports in
/// `spin-client-addr`, or — only when that peer is a trusted proxy — the nearest
/// untrusted address in `X-Forwarded-For` (read right to left, so a client cannot
/// pick its own address by sending the header itself).
pub fn client_address(
    peer: Option<&str>,
    forwarded_for: Option<&str>,
    trusted: &[String],
) -> String {
    let Some(peer) = peer.map(ip_of).filter(|p| !p.is_empty()) else {
        return "unknown".to_string();
    };
    if !trusted.iter().any(|t| t == peer) {
        return peer.to_string();
    }
    let hops: Vec<&str> = forwarded_for
        .unwrap_or("")
        .split(',')
        .map(|h| ip_of(h.trim()))
        .filter(|h| !h.is_empty())
        .collect();
    hops.iter()
        .rev()
        .find(|h| !trusted.iter().any(|t| t == *h))
        .or(hops.first())
        .unwrap_or(&peer)
        .to_string()
}

/// The IP of `ip`, `ip:port` or `[v6]:port`.
fn ip_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    match addr.rsplit_once(':') {
        Some((ip, port)) if !ip.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => ip,
        _ => addr,
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
    fn client_address_trusts_forwarded_for_only_from_proxies() {
        let proxies = vec!["10.0.0.5".to_string()];
        assert_eq!(
            client_address(Some("192.0.2.7:5000"), Some("1.2.3.4"), &proxies),
            "192.0.2.7"
        );
        assert_eq!(
            client_address(Some("10.0.0.5:5000"), Some("1.2.3.4"), &proxies),
            "1.2.3.4"
        );
        // The client's own (leftmost) claim is not believed past an untrusted hop.
        assert_eq!(
            client_address(
                Some("10.0.0.5:1"),
                Some("6.6.6.6, 198.51.100.9, 10.0.0.5"),
                &proxies
            ),
            "198.51.100.9"
        );
        assert_eq!(client_address(Some("[::1]:8080"), None, &[]), "::1");
        assert_eq!(client_address(None, Some("1.2.3.4"), &proxies), "unknown");
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
