//! `POST /crm-events`: publishing one event through the outbox, idempotently.
//!
//! Spin routes by path, not method, so the stream's component answers the POST too;
//! the decisions live in `crm_events_contracts::publish`. The steps:
//!
//! 1. **authorise**: a bearer token in the `Authorization` header only (a cookie
//!    could be sent by a forged cross-site form): with `auth_mode = "jwt"` a token
//!    with the `publish` permission, else the configured `publish_token` (`401`/`403`;
//!    failed attempts count toward the address's limit, `429`);
//! 2. **key**: the `Idempotency-Key` header (`400` when missing or malformed);
//! 3. **body**: only now is it read — JSON, at most `publish_max_body_bytes` (`415`,
//!    `413`, `400`), complete within the body deadline (`408`) — and its tenant and
//!    type inside the token's scope (`403`);
//! 4. **insert**: the one atomic statement, and what it found (`202`, a replay,
//!    `409`, `422`; `503` when Postgres is away).

use crate::deadline::within;
use crate::Call;
use crm_events_contracts::auth::{bearer_matches, find_token, AuthError, Identity, Mode, Verifier};
use crm_events_contracts::config::PublishConfig;
use crm_events_contracts::guard::{
    body_too_large, body_too_slow, body_unreadable, BODY_READ_TIMEOUT_MS,
};
use crm_events_contracts::http::{routes, Refusal, JSON};
use crm_events_contracts::publish::{
    self, Answer, Outcome, Publish, IDEMPOTENCY_KEY_HEADER, REPLAYED_HEADER, STATEMENT,
};
use crm_events_contracts::spin_glue::{now_seconds, send_refusal, send_whole, AuthGuard, Postgres};
use futures::StreamExt;
use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use std::time::Duration;

/// Statements run again when a concurrent request committed the key meanwhile.
const RACE_ATTEMPTS: usize = 3;

/// Answers a `POST /crm-events`.
pub async fn handle(
    req: IncomingRequest,
    out: ResponseOutparam,
    call: &Call,
    verifier: &Verifier,
    config: &PublishConfig,
    guard: &AuthGuard<'_>,
) {
    match accept(req, call, verifier, config, guard).await {
        Ok((status, body, replayed)) => {
            let mut headers = call.cors.clone();
            headers.push(("content-type", JSON.to_string()));
            headers.push(("cache-control", "no-store".to_string()));
            if replayed {
                headers.push((REPLAYED_HEADER, "true".to_string()));
            }
            send_whole(out, status, &headers, body).await
        }
        Err(refusal) => send_refusal(out, &call.cors, &refusal).await,
    }
}

/// Authorise → key → body → insert; `(status, body, replayed)`.
async fn accept(
    req: IncomingRequest,
    call: &Call,
    verifier: &Verifier,
    config: &PublishConfig,
    guard: &AuthGuard<'_>,
) -> Result<(u16, String, bool), Refusal> {
    if let Some(refusal) = publishing_disabled(verifier, config) {
        return Err(refusal);
    }
    let identity = guard.authenticate(|| authorise(call, verifier, config))?;
    if let Some(identity) = &identity {
        // Before the body: a token that may not publish gets no work done for it.
        publish::may_publish(identity)?;
    }
    let header = |name: &str| {
        req.headers()
            .get(name)
            .first()
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let key = publish::idempotency_key(header(IDEMPOTENCY_KEY_HEADER).as_deref())?;
    check_content_type(header("content-type").as_deref())?;
    let body = read_body(req, config.max_body_bytes).await?;
    let request = Publish::parse(&body)?;
    if let Some(identity) = &identity {
        publish::authorise(identity, &request)?;
    }
    insert(config, &request, &key)
}

/// The publisher's identity (`None` with auth off and the publish token matched).
fn authorise(
    call: &Call,
    verifier: &Verifier,
    config: &PublishConfig,
) -> Result<Option<Identity>, AuthError> {
    let authorization = call.authorization.as_deref();
    if verifier.mode == Mode::None {
        if !config.token.is_empty() && bearer_matches(authorization, &config.token) {
            return Ok(None);
        }
        return Err(match authorization {
            None => AuthError::Missing,
            Some(_) => AuthError::BadSignature,
        });
    }
    let (token, _) = find_token(authorization, None, "", false)?;
    verifier.verify(&token, now_seconds()).map(Some)
}

/// With `auth_mode = "none"` and no `publish_token`, publishing is off (`403`).
fn publishing_disabled(verifier: &Verifier, config: &PublishConfig) -> Option<Refusal> {
    (verifier.mode == Mode::None && config.token.is_empty()).then(|| {
        Refusal::forbidden("publishing is disabled: with auth_mode=none set publish_token")
    })
}

fn check_content_type(value: Option<&str>) -> Result<(), Refusal> {
    let media = value.unwrap_or("").split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case(JSON) {
        return Ok(());
    }
    Err(Refusal::new(
        415,
        "unsupported_media_type",
        "the body must be application/json",
    ))
}

/// The body, refusing it once it grows past `max` bytes (`413`, before reading
/// anything when `Content-Length` says so) or when it is not complete within the body
/// deadline (`408`): a client that announces a body and never sends it holds this
/// instance for that long at most.
async fn read_body(req: IncomingRequest, max: u64) -> Result<Vec<u8>, Refusal> {
    let declared = req
        .headers()
        .get("content-length")
        .first()
        .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(body_too_large(max));
    }
    let deadline = Duration::from_millis(BODY_READ_TIMEOUT_MS);
    within(read_at_most(req, max), deadline)
        .await
        .unwrap_or_else(|| Err(body_too_slow()))
}

/// Reads the whole body, or `413` past `max` bytes.
async fn read_at_most(req: IncomingRequest, max: u64) -> Result<Vec<u8>, Refusal> {
    let mut body = Vec::new();
    let mut stream = req.into_body_stream();
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk.map_err(|_| body_unreadable())?);
        if body.len() as u64 > max {
            return Err(body_too_large(max));
        }
    }
    Ok(body)
}

/// Runs the statement (again, when it raced a concurrent request) and answers.
fn insert(
    config: &PublishConfig,
    request: &Publish,
    key: &str,
) -> Result<(u16, String, bool), Refusal> {
    if config.postgres_address.is_empty() {
        return Err(Refusal::new(
            500,
            "configuration",
            "publishing needs Postgres: set postgres_host (and postgres_password)",
        ));
    }
    let db = Postgres::open(&config.postgres_address).map_err(|e| e.refusal())?;
    let params = request.parameters(key, routes::EVENTS);
    for _ in 0..RACE_ATTEMPTS {
        let rows = db.query(STATEMENT, &params).map_err(|e| e.refusal())?;
        let answer = rows
            .first()
            .and_then(|row| Answer::from_row(row))
            .ok_or_else(|| Refusal::new(503, "postgres_unavailable", "unexpected answer"))?;
        match answer.outcome(request, routes::EVENTS) {
            Outcome::Created(body) => return Ok((202, body, false)),
            Outcome::Replay(status, body) => return Ok((status, body, true)),
            Outcome::Refused(refusal) => return Err(refusal),
            Outcome::Raced => continue,
        }
    }
    Err(publish::in_flight())
}
