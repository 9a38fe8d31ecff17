//! What bounds a client before the host does work for it: connections (in all and
//! per address), the time to send a request head and a body, and the body's size.
//!
//! Spin answers none of these itself (its instances read bodies as they come), so
//! the components bound what they read too; the host's limits come first, so a
//! hostile client never holds a component instance here:
//!
//! * a connection over [`ServerLimits::max_connections`] gets `503`, one over
//!   [`ServerLimits::max_connections_per_address`] `429`, both as JSON, and is closed;
//! * a connection that sends no request head within
//!   [`ServerLimits::header_timeout`] is closed (slowloris);
//! * a request body is read *before* an instance is taken, up to the route's limit
//!   ([`crm_events_contracts::guard::body_limit`]: none for routes that take no body)
//!   and within [`ServerLimits::body_timeout`]: `413` past the limit, `408` when late;
//! * the bodies being received at once may hold at most
//!   [`ServerLimits::max_buffered_body_bytes`] (each reserves its declared length, or
//!   its route's limit): past that a request gets `503` at once instead of memory.
//!
//! With [`ServerLimits::spin_like`] the body limits are off and bodies stream into the
//! component as under `spin up`, to show that the components hold on their own.

use bytes::Bytes;
use crm_events_contracts::guard;
use crm_events_contracts::http::Refusal;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Default of [`ServerLimits::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default of [`ServerLimits::max_connections_per_address`].
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 1_000;
/// Default of [`ServerLimits::max_buffered_body_bytes`]: 64 MiB, 256 publish bodies of
/// the largest size at once.
pub const DEFAULT_MAX_BUFFERED_BODY_BYTES: u64 = 64 * 1024 * 1024;
/// Default of [`ServerLimits::header_timeout`].
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The host's bounds on clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    /// Open connections in all (0: unlimited). Keep it under the descriptor limit,
    /// less the instances' Redis and Postgres connections.
    pub max_connections: usize,
    /// Open connections from one address (an IPv6 /64 counts as one; 0: unlimited).
    pub max_connections_per_address: usize,
    /// Time to send a request head, from the connection's start or the previous
    /// response.
    pub header_timeout: Duration,
    /// Time to send a request body.
    pub body_timeout: Duration,
    /// Bytes the bodies being received may reserve together (0: unlimited).
    pub max_buffered_body_bytes: u64,
    /// Bodies stream into the component unbounded, as under Spin (the components'
    /// own limits then are all there is).
    pub spin_like: bool,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: Duration::from_millis(guard::BODY_READ_TIMEOUT_MS),
            max_buffered_body_bytes: DEFAULT_MAX_BUFFERED_BODY_BYTES,
            spin_like: false,
        }
    }
}

/// The body type components receive.
pub type RequestBody = UnsyncBoxBody<Bytes, wasmtime_wasi_http::Error>;

/// Reads a request's body before an instance is taken: at most `limit` bytes, within
/// `timeout`. The request comes back with the body in memory, or the refusal.
pub async fn read_body<B>(
    req: hyper::Request<B>,
    limit: u64,
    timeout: Duration,
    budget: &BodyBudget,
) -> Result<hyper::Request<RequestBody>, Refusal>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(guard::body_too_large(limit));
    }
    // Held until the body is in: then it goes to the component at once.
    let _reserved = budget.reserve(declared.unwrap_or(limit))?;
    let (parts, body) = req.into_parts();
    let limited = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    let bytes = match tokio::time::timeout(timeout, limited.collect()).await {
        Err(_) => return Err(guard::body_too_slow()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(guard::body_too_large(limit))
        }
        Ok(Err(_)) => return Err(guard::body_unreadable().header("connection", "close")),
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    let body = Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync();
    Ok(hyper::Request::from_parts(parts, body))
}

/// The memory the bodies being received may reserve, in KiB.
#[derive(Debug)]
pub struct BodyBudget {
    kib: Option<Arc<tokio::sync::Semaphore>>,
}

impl BodyBudget {
    /// A budget of `bytes` (0: unlimited).
    pub fn new(bytes: u64) -> Self {
        let kib = usize::try_from(bytes.div_ceil(1024)).unwrap_or(usize::MAX);
        let kib = kib.min(tokio::sync::Semaphore::MAX_PERMITS);
        Self {
            kib: (bytes > 0).then(|| Arc::new(tokio::sync::Semaphore::new(kib))),
        }
    }

    /// Reserves room for a body of up to `bytes` while it is received, or the `503`
    /// when the budget is spent (`None` holds nothing: no budget, or no body).
    pub fn reserve(
        &self,
        bytes: u64,
    ) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, Refusal> {
        let Some(kib) = self.kib.as_ref().filter(|_| bytes > 0) else {
            return Ok(None);
        };
        let wanted = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX);
        kib.clone()
            .try_acquire_many_owned(wanted)
            .map(Some)
            .map_err(|_| {
                Refusal::new(
                    503,
                    "server_busy",
                    "the server is receiving as many request bodies as it may; retry shortly",
                )
                .retry_after(1)
            })
    }

    /// KiB of the budget not reserved now (`None`: no budget).
    pub fn kib_left(&self) -> Option<usize> {
        self.kib.as_ref().map(|kib| kib.available_permits())
    }
}

/// The body passed through as it streams (Spin's way).
pub fn streamed<B>(req: hyper::Request<B>) -> hyper::Request<RequestBody>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    req.map(|body| body.map_err(Into::into).boxed_unsync())
}

/// The open connections, in all and per address.
#[derive(Debug, Default)]
pub struct Connections {
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverLimit {
    /// The host is at [`ServerLimits::max_connections`].
    Host,
    /// The address is at [`ServerLimits::max_connections_per_address`].
    Address,
}

/// An admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct Admitted {
    connections: Arc<Connections>,
    address: IpAddr,
}

impl Connections {
    /// Admits a connection from `peer`, or says which limit it is over.
    pub fn admit(
        self: &Arc<Self>,
        peer: IpAddr,
        limits: &ServerLimits,
    ) -> Result<Admitted, OverLimit> {
        let address = address_key(peer);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per_address) = &mut *open;
        if limits.max_connections > 0 && *total >= limits.max_connections {
            return Err(OverLimit::Host);
        }
        let mine = per_address.entry(address).or_insert(0);
        if limits.max_connections_per_address > 0 && *mine >= limits.max_connections_per_address {
            return Err(OverLimit::Address);
        }
        *mine += 1;
        *total += 1;
        Ok(Admitted {
            connections: self.clone(),
            address,
        })
    }

    /// Open connections in all.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).0
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self
            .connections
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let (total, per_address) = &mut *open;
        *total -= 1;
        if let Some(n) = per_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                per_address.remove(&self.address);
            }
        }
    }
}

/// The address a connection counts under: IPv4 as it is, IPv6 by its /64 (one host
/// usually has a whole /64), an IPv4-mapped IPv6 address as its IPv4.
pub fn address_key(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

/// The refusal a connection over a limit gets.
pub fn refusal(full: OverLimit) -> Refusal {
    match full {
        OverLimit::Host => Refusal::new(
            503,
            "too_many_connections",
            "the server has as many connections open as it allows; retry shortly",
        )
        .retry_after(1),
        OverLimit::Address => Refusal::new(
            429,
            "too_many_connections",
            "this address has as many connections open as it may; close some first",
        )
        .retry_after(1),
    }
}

/// A refusal as a whole HTTP/1.1 response, for a connection the host will not
/// serve (written straight to the socket, then the socket is closed).
pub fn raw_response(refusal: &Refusal) -> Vec<u8> {
    let body = refusal.body();
    let mut head = format!("HTTP/1.1 {} {}\r\n", refusal.status, reason(refusal.status));
    for (name, value) in refusal.headers() {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body.as_bytes());
    bytes
}

fn reason(status: u16) -> &'static str {
    hyper::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_capped_in_all_and_per_address() {
        let limits = ServerLimits {
            max_connections: 3,
            max_connections_per_address: 2,
            ..ServerLimits::default()
        };
        let c = Arc::new(Connections::default());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = c.admit(a, &limits).unwrap();
        let _second = c.admit(a, &limits).unwrap();
        assert_eq!(c.admit(a, &limits).unwrap_err(), OverLimit::Address);
        let _third = c.admit(b, &limits).unwrap();
        assert_eq!(c.admit(b, &limits).unwrap_err(), OverLimit::Host);
        drop(first);
        assert_eq!(c.open(), 2);
        assert!(c.admit(a, &limits).is_ok());
    }

    #[test]
    fn an_ipv6_host_counts_by_its_64() {
        let one: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let two: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(one), address_key(two));
        assert_ne!(address_key(one), address_key(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(address_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn a_refused_connection_gets_a_whole_json_response() {
        let raw = String::from_utf8(raw_response(&refusal(OverLimit::Address))).unwrap();
        assert!(
            raw.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
            "{raw}"
        );
        assert!(raw.contains("retry-after: 1\r\n"));
        assert!(raw.contains("connection: close\r\n"));
        let body = raw.split("\r\n\r\n").nth(1).unwrap();
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"], "too_many_connections");
    }

    #[tokio::test]
    async fn bodies_are_bounded_before_an_instance_is_taken() {
        let req = |body: &'static str, length: Option<&str>| {
            let mut b = hyper::Request::post("/crm-events");
            if let Some(l) = length {
                b = b.header("content-length", l);
            }
            b.body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap()
        };
        let t = Duration::from_secs(1);
        let b = BodyBudget::new(0);
        let ok = read_body(req("{}", None), 2, t, &b).await.unwrap();
        assert_eq!(ok.into_body().collect().await.unwrap().to_bytes(), "{}");
        // Past the limit as sent, as declared (refused without reading), and any
        // body where none is taken.
        for (body, length, limit) in [("{}", None, 1), ("", Some("99"), 2), ("x", None, 0)] {
            let refused = read_body(req(body, length), limit, t, &b)
                .await
                .unwrap_err();
            assert_eq!(refused.status, 413, "{body:?} {length:?} {limit}");
        }
    }

    #[test]
    fn the_body_budget_refuses_what_it_cannot_hold_and_frees_it() {
        let budget = BodyBudget::new(8 * 1024);
        let first = budget.reserve(4096).unwrap();
        let _second = budget.reserve(4000).unwrap();
        let refused = budget.reserve(1).unwrap_err();
        assert_eq!((refused.status, refused.code), (503, "server_busy"));
        assert!(
            budget.reserve(0).unwrap().is_none(),
            "no body, no reservation"
        );
        drop(first);
        assert!(budget.reserve(4096).is_ok());
        assert!(BodyBudget::new(0).reserve(u64::MAX).unwrap().is_none());
    }
}
