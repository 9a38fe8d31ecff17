//! The `session` component: `/crm-events/session`, sign-in for browsers.
//!
//! `EventSource` cannot set an `Authorization` header, so a browser trades its token
//! for a cookie: `POST` with `Authorization: Bearer <token>` verifies the token and
//! answers with an `HttpOnly; Secure; SameSite=Strict` cookie holding it, whose
//! lifetime ends at the token's `exp`; the stream then reads the cookie. `GET` says
//! who the cookie's session is (the viewer shows it), `DELETE` ends it. The token is
//! never echoed in a body.

use crm_events_contracts::auth::{
    find_token, session_clear_cookie, session_set_cookie, Identity, Mode, Verifier,
};
use crm_events_contracts::config::CommonConfig;
use crm_events_contracts::http::{routes, Refusal};
use crm_events_contracts::spin_glue::{
    count_request, json_response, now_seconds, refusal_response, SpinVariables,
};
use spin_sdk::http::{Method, Request, Response};
use spin_sdk::http_component;

#[http_component]
fn handle(req: Request) -> Response {
    // Best effort: the page (and a session) need no Redis.
    let _ = count_request(
        &CommonConfig::load(&SpinVariables),
        req.method(),
        routes::SESSION,
    );
    let verifier = match Verifier::load(&SpinVariables) {
        Ok(v) => v,
        Err(e) => return refusal_response(&Refusal::configuration(&e)),
    };
    let header = |name: &str| {
        req.header(name)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    match req.method() {
        Method::Post => sign_in(&verifier, header("authorization")),
        Method::Get => whoami(&verifier, header("cookie")),
        Method::Delete => {
            let mut r = json_response(200, serde_json::json!({"ok": true}).to_string());
            r.set_header("set-cookie", session_clear_cookie());
            r
        }
        _ => {
            let mut r = refusal_response(&Refusal::new(
                405,
                "method_not_allowed",
                "use POST, GET or DELETE",
            ));
            r.set_header("allow", "POST, GET, DELETE");
            r
        }
    }
}

/// Verifies the bearer token and sets the cookie, until the token's `exp`.
fn sign_in(verifier: &Verifier, authorization: Option<String>) -> Response {
    if verifier.mode == Mode::None {
        return session_response(&Identity::anonymous(), verifier);
    }
    let now = now_seconds();
    let verified = find_token(authorization.as_deref(), None, "", false)
        .and_then(|(token, _)| Ok((verifier.verify(&token, now)?, token)));
    match verified {
        Ok((identity, token)) => {
            let max_age = identity.expires_at.unwrap_or(now).saturating_sub(now);
            let mut r = session_response(&identity, verifier);
            r.set_header("set-cookie", session_set_cookie(&token, max_age));
            r
        }
        Err(e) => refusal_response(&Refusal::unauthorized(&e)),
    }
}

/// The session the cookie holds, or `401`.
fn whoami(verifier: &Verifier, cookie: Option<String>) -> Response {
    if verifier.mode == Mode::None {
        return session_response(&Identity::anonymous(), verifier);
    }
    let verified = find_token(None, cookie.as_deref(), "", false)
        .and_then(|(token, _)| verifier.verify(&token, now_seconds()));
    match verified {
        Ok(identity) => session_response(&identity, verifier),
        Err(e) => refusal_response(&Refusal::unauthorized(&e)),
    }
}

fn session_response(identity: &Identity, verifier: &Verifier) -> Response {
    let mode = match verifier.mode {
        Mode::Jwt => "jwt",
        Mode::None => "none",
    };
    let mut body = identity.to_json();
    body["ok"] = true.into();
    body["auth_mode"] = mode.into();
    json_response(200, body.to_string())
}
