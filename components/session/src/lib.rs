//! The `session` component: `/crm-events/session`, sign-in for browsers.
//!
//! `EventSource` cannot set an `Authorization` header, so a browser trades its token
//! for a cookie: `POST` with `Authorization: Bearer <token>` verifies the token and
//! answers with an `HttpOnly; Secure; SameSite=Strict` cookie holding it, whose
//! lifetime ends at the token's `exp`; the stream then reads the cookie. `GET` says
//! who the cookie's session is (the viewer shows it), `DELETE` ends it. The token is
//! never echoed in a body, and the request's body is never read. Failed sign-ins
//! count toward the address's failed-authentication limit (`429`).

use crm_events_contracts::auth::{
    find_token, session_clear_cookie, session_set_cookie, Identity, Mode, Verifier,
};
use crm_events_contracts::config::{trusted_proxies, CommonConfig};
use crm_events_contracts::guard::AuthFailureLimit;
use crm_events_contracts::http::{routes, Refusal};
use crm_events_contracts::spin_glue::{
    json_response, now_seconds, refusal_response, AuthGuard, Head, Redis, SpinVariables,
};
use spin_sdk::http::{IncomingRequest, Method, Response};
use spin_sdk::http_component;

#[http_component]
fn handle(req: IncomingRequest) -> Response {
    // The head only: the token comes in a header, so a body is never read.
    let req = Head::of(&req);
    let config = CommonConfig::load(&SpinVariables);
    // Best effort: a session needs no Redis (only the count and the failure limit do).
    let redis = Redis::open(&config.redis_address).ok();
    if let Some(r) = &redis {
        let _ = r.count_request(&config.keys, &req.method, routes::SESSION);
    }
    let loaded = Verifier::load(&SpinVariables)
        .and_then(|v| Ok((v, AuthFailureLimit::load(&SpinVariables)?)));
    let (verifier, limit) = match loaded {
        Ok(v) => v,
        Err(e) => return refusal_response(&Refusal::configuration(&e)),
    };
    let address = req.client_address(&trusted_proxies(&SpinVariables));
    let guard = AuthGuard {
        redis: redis.as_ref(),
        keys: &config.keys,
        address: &address,
        limit,
    };
    let header = |name: &str| req.header(name);
    match req.method {
        Method::Post => sign_in(&verifier, &guard, header("authorization")),
        Method::Get => whoami(&verifier, &guard, header("cookie")),
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
fn sign_in(verifier: &Verifier, guard: &AuthGuard, authorization: Option<String>) -> Response {
    if verifier.mode == Mode::None {
        return session_response(&Identity::anonymous(), verifier);
    }
    let now = now_seconds();
    let verified = guard.authenticate(|| {
        let (token, _) = find_token(authorization.as_deref(), None, "", false)?;
        Ok((verifier.verify(&token, now)?, token))
    });
    match verified {
        Ok((identity, token)) => {
            let max_age = identity.expires_at.unwrap_or(now).saturating_sub(now);
            let mut r = session_response(&identity, verifier);
            r.set_header("set-cookie", session_set_cookie(&token, max_age));
            r
        }
        Err(refusal) => refusal_response(&refusal),
    }
}

/// The session the cookie holds, or `401`.
fn whoami(verifier: &Verifier, guard: &AuthGuard, cookie: Option<String>) -> Response {
    if verifier.mode == Mode::None {
        return session_response(&Identity::anonymous(), verifier);
    }
    let verified = guard.authenticate(|| {
        let (token, _) = find_token(None, cookie.as_deref(), "", false)?;
        verifier.verify(&token, now_seconds())
    });
    match verified {
        Ok(identity) => session_response(&identity, verifier),
        Err(refusal) => refusal_response(&refusal),
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
