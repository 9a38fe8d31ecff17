//! The `viewer` component: `GET /ops/crm-events`, a live event viewer for operators.
//!
//! The page (`page.html`, with its CSS and JavaScript inline) is compiled into the
//! component: no CDN, no build step. It reads `/crm-events` with `EventSource`, so it
//! resumes exactly after any disconnect; this component only serves it (and counts
//! the request, like every route).

use crm_events_contracts::config::CommonConfig;
use crm_events_contracts::http::routes;
use crm_events_contracts::spin_glue::{count_request, reject_unless_get, SpinVariables};
use spin_sdk::http::{Request, Response};
use spin_sdk::http_component;

/// The page.
const PAGE: &str = include_str!("page.html");

#[http_component]
fn handle(req: Request) -> Response {
    // Best effort: the page (and a session) need no Redis.
    let _ = count_request(
        &CommonConfig::load(&SpinVariables),
        req.method(),
        routes::VIEWER,
    );
    if let Some(r) = reject_unless_get(&req) {
        return r;
    }
    Response::builder()
        .status(200)
        .header("content-type", "text/html; charset=utf-8")
        .header("cache-control", "no-cache")
        .header(
            "content-security-policy",
            "default-src 'self'; img-src 'self' data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'",
        )
        .header("x-content-type-options", "nosniff")
        .body(PAGE)
        .build()
}
