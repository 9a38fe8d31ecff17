//! The `viewer` component: `GET /ops/crm-events`, a live event viewer for operators.
//!
//! The page (`page.html`), its style (`viewer.css`), its script (`viewer.js`) and the
//! TypeScript client's build (`client.js`, from `clients/typescript/dist`) are
//! compiled into the component: no CDN, no build step here. They are files of their
//! own, so the page's `Content-Security-Policy` allows no inline script or style, and
//! `frame-ancestors 'none'` keeps other sites from framing it. The script reads
//! `/crm-events` with the client, so it resumes exactly after any disconnect and signs
//! in again when the session expires; this component only serves the files (and
//! counts the request, like every route). Pages of your own may load `client.js` too.

use crm_events_contracts::config::CommonConfig;
use crm_events_contracts::http::{routes, Refusal};
use crm_events_contracts::spin_glue::{
    count_request, refusal_response, reject_unless_get, Head, SpinVariables,
};
use spin_sdk::http::{IncomingRequest, Response};
use spin_sdk::http_component;

/// The page.
const PAGE: &str = include_str!("page.html");
/// Its style.
const STYLE: &str = include_str!("viewer.css");
/// Its script.
const SCRIPT: &str = include_str!("viewer.js");
/// The TypeScript client, as `npm run build` compiles it (an ES module).
const CLIENT: &str = include_str!("../../../clients/typescript/dist/index.js");

/// The page's policy: its own files only, no inline code, never in a frame.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

#[http_component]
fn handle(req: IncomingRequest) -> Response {
    // The head only: the page takes no body, so none is read.
    let req = Head::of(&req);
    // Best effort: the page (and a session) need no Redis.
    let _ = count_request(
        &CommonConfig::load(&SpinVariables),
        &req.method,
        routes::VIEWER,
    );
    if let Some(r) = reject_unless_get(&req.method) {
        return r;
    }
    let (content_type, body) = match req.path.as_str() {
        routes::VIEWER => ("text/html; charset=utf-8", PAGE),
        routes::VIEWER_STYLE => ("text/css; charset=utf-8", STYLE),
        routes::VIEWER_SCRIPT => ("text/javascript; charset=utf-8", SCRIPT),
        routes::VIEWER_CLIENT => ("text/javascript; charset=utf-8", CLIENT),
        _ => return refusal_response(&Refusal::new(404, "not_found", "no such route")),
    };
    Response::builder()
        .status(200)
        .header("content-type", content_type)
        .header("cache-control", "no-cache")
        .header("content-security-policy", CONTENT_SECURITY_POLICY)
        .header("x-frame-options", "DENY")
        .header("x-content-type-options", "nosniff")
        .header("referrer-policy", "no-referrer")
        .body(body)
        .build()
}
