//! The `sse` component: `GET /crm-events`, the live, resumable, filtered stream.
//!
//! One request is one component instance (WASI 0.2), held for as long as the stream
//! is open. The handler reads the sequence a stream goes through:
//!
//! 1. **parse** the request ([`SseRequest`]: resume position, filters); a malformed
//!    one is answered `400` before anything else happens;
//! 2. **authorise**: verify the token (`401`; an address past its failed
//!    authentications gets `429` before its token is even verified) and narrow the
//!    filters to its scope (`403` when the query asks for more than the token grants);
//! 3. **lease** a client slot ([`lease`]): `max_clients` across every instance, and
//!    the per-subject and per-address limits (`429`);
//! 4. **choose the stream** ([`source`]): the subscriber's one tenant's stream, on
//!    the shard that tenant hashes to, or the all-tenants stream for an operator;
//! 5. **resume**: decide where the stream starts ([`position`]), reporting lost
//!    history as a `gap` (a position from the all-tenants stream moves over to the
//!    tenant stream exactly, or with a `reset`: [`migrate`]);
//! 6. **tail** the Redis stream ([`relay`]): `XREAD BLOCK` on the stream's connection,
//!    so new events go out within one Redis round trip and the block time doubles as
//!    the keepalive interval; the stream ends at the token's `exp` with an
//!    `auth_expired` event.
//!
//! `POST` on the same route publishes an event through the outbox ([`publish`]):
//! Spin routes by path, so the stream's component answers it.

mod body;
mod deadline;
mod lease;
mod migrate;
mod position;
mod publish;
mod relay;
mod source;

use crm_events_contracts::auth::{find_token, Identity, Mode, Verifier};
use crm_events_contracts::config::{PublishConfig, SseConfig};
use crm_events_contracts::guard::AuthFailureLimit;
use crm_events_contracts::http::{routes, Refusal};
use crm_events_contracts::request::{Filters, SseRequest};
use crm_events_contracts::resume::Start;
use crm_events_contracts::spin_glue::{
    now_seconds, send_refusal, send_whole, AuthGuard, Head, Redis, SpinVariables,
};
use spin_sdk::http::{IncomingRequest, Method, ResponseOutparam};
use spin_sdk::http_component;

/// What the handler takes from the request before deciding anything.
pub(crate) struct Call {
    method: Method,
    query: String,
    last_event_id: Option<String>,
    pub(crate) authorization: Option<String>,
    cookie: Option<String>,
    /// The client address for per-address limits.
    address: String,
    /// CORS headers every answer carries (empty unless the origin is allowed).
    pub(crate) cors: Vec<(&'static str, String)>,
    /// The failed-authentication limit of [`Call::address`].
    auth_limit: AuthFailureLimit,
}

impl Call {
    fn read(req: &IncomingRequest, config: &SseConfig, auth_limit: AuthFailureLimit) -> Self {
        let head = Head::of(req);
        let mut cors = Vec::new();
        if let Some(origin) = config.cors.allow_origin(head.header("origin").as_deref()) {
            cors.push(("access-control-allow-origin", origin));
            cors.push(("vary", "origin".to_string()));
        }
        Self {
            address: head.client_address(&config.trusted_proxies),
            last_event_id: head.header("last-event-id"),
            authorization: head.header("authorization"),
            cookie: head.header("cookie"),
            method: head.method,
            query: head.query,
            cors,
            auth_limit,
        }
    }

    /// The failed-authentication limit of this caller, counted in `redis`.
    fn guard<'a>(&'a self, redis: Option<&'a Redis>, config: &'a SseConfig) -> AuthGuard<'a> {
        AuthGuard {
            redis,
            keys: &config.common.keys,
            address: &self.address,
            limit: self.auth_limit,
        }
    }
}

/// The methods `/crm-events` answers.
const ALLOW: &str = "GET, POST, OPTIONS";

/// An admitted stream: everything the relay needs.
struct Opened {
    /// The Redis of the leases and counters. The relay is sequential (read, send,
    /// renew the lease, read), so one connection per Redis is enough.
    redis: Redis,
    /// The Redis of the stream when it is another one (a tenant's shard).
    shard: Option<Redis>,
    /// Which stream it reads.
    source: source::Source,
    lease: lease::Lease,
    start: Start,
    /// The stream's epoch (every event id carries it).
    epoch: Option<String>,
    filters: Filters,
    /// When the token expires (seconds since the epoch); the stream ends then.
    expires_at: Option<u64>,
}

#[http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    let loaded = SseConfig::load(&SpinVariables).and_then(|c| {
        let limit = AuthFailureLimit::load(&SpinVariables)?;
        Ok((c, Verifier::load(&SpinVariables)?, limit))
    });
    let (config, verifier, auth_limit) = match loaded {
        Ok(c) => c,
        Err(e) => return send_refusal(out, &[], &Refusal::configuration(&e)).await,
    };
    let call = Call::read(&req, &config, auth_limit);
    let control = Redis::open(&config.common.redis_address);
    if let Ok(c) = &control {
        let _ = c.count_request(&config.common.keys, &call.method, routes::EVENTS);
    }
    match call.method {
        Method::Get => match open(&call, &config, &verifier, control) {
            Ok(opened) => {
                relay::Relay::new(&config, opened)
                    .run(out, &call.cors)
                    .await
            }
            Err(refusal) => send_refusal(out, &call.cors, &refusal).await,
        },
        Method::Post => match PublishConfig::load(&SpinVariables) {
            Ok(publishing) => {
                let guard = call.guard(control.as_ref().ok(), &config);
                publish::handle(req, out, &call, &verifier, &publishing, &guard).await
            }
            Err(e) => send_refusal(out, &call.cors, &Refusal::configuration(&e)).await,
        },
        Method::Options => preflight(out, &call).await,
        _ => {
            let refusal = Refusal::new(405, "method_not_allowed", "use GET, or POST to publish");
            let mut cors = call.cors.clone();
            cors.push(("allow", ALLOW.to_string()));
            send_refusal(out, &cors, &refusal).await
        }
    }
}

/// Parse → authorise → lease → resume: everything that can refuse a stream,
/// before its headers.
fn open(
    call: &Call,
    config: &SseConfig,
    verifier: &Verifier,
    control: Result<Redis, impl std::fmt::Display>,
) -> Result<Opened, Refusal> {
    let request = SseRequest::parse(&call.query, call.last_event_id.as_deref())
        .map_err(|e| Refusal::new(400, "bad_request", e.message).with("parameter", e.parameter))?;
    let identity = authorise(call, verifier, &call.guard(control.as_ref().ok(), config))?;
    let filters = identity
        .scope
        .narrow(&request.filters)
        .map_err(|e| Refusal::forbidden(e.0))?;
    let (source, filters) = source::choose(&identity.scope, filters, config)?;
    let control = control.map_err(Refusal::redis_unavailable)?;
    let owner = lease::Owner {
        subject: (verifier.mode == Mode::Jwt).then_some(identity.subject.as_str()),
        address: &call.address,
    };
    let lease = lease::Lease::acquire(&control, config, &owner)?;
    let resolved = source
        .connect(&config.common.redis_address)
        .and_then(|shard| {
            let reader = shard.as_ref().unwrap_or(&control);
            let (resume, asked) = (request.resume, request.epoch.as_deref());
            let resolved = position::resolve(reader, &source.keys, resume, asked)?;
            let moved = migrate::Move {
                control: &control,
                shard: reader,
                keys: &config.common.keys,
                tenant: source.tenant.as_deref(),
            };
            let resolved = moved.resolve(resume, asked, resolved)?;
            Ok((shard, resolved))
        });
    match resolved {
        Ok((shard, position::Resolved { start, epoch, .. })) => Ok(Opened {
            redis: control,
            shard,
            source,
            lease,
            start,
            epoch,
            filters,
            expires_at: identity.expires_at,
        }),
        Err(e) => {
            lease.release(&control);
            Err(Refusal::redis_unavailable(e))
        }
    }
}

/// Who the subscriber is: anonymous with auth off, else its verified token.
fn authorise(call: &Call, verifier: &Verifier, guard: &AuthGuard) -> Result<Identity, Refusal> {
    if verifier.mode == Mode::None {
        return Ok(Identity::anonymous());
    }
    guard.authenticate(|| {
        let (token, _) = find_token(
            call.authorization.as_deref(),
            call.cookie.as_deref(),
            &call.query,
            verifier.query_token,
        )?;
        verifier.verify(&token, now_seconds())
    })
}

/// Answers a CORS preflight.
async fn preflight(out: ResponseOutparam, call: &Call) {
    let mut headers = call.cors.clone();
    headers.push(("allow", ALLOW.to_string()));
    if !call.cors.is_empty() {
        headers.push(("access-control-allow-methods", ALLOW.to_string()));
        headers.push((
            "access-control-allow-headers",
            "last-event-id, cache-control, authorization, content-type, idempotency-key"
                .to_string(),
        ));
        headers.push(("access-control-max-age", "600".to_string()));
    }
    send_whole(out, 204, &headers, String::new()).await
}
