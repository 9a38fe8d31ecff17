//! Defences against hostile clients that every part applies the same way: how much
//! body a request may carry and for how long it may take to send it, and the limit on
//! failed authentications per client address.
//!
//! The host enforces the body limits and deadlines before it takes a component
//! instance ([`body_limit`], [`BODY_READ_TIMEOUT_MS`]); under Spin, where those host
//! limits do not exist, the components enforce the same numbers themselves: no
//! component reads a body it does not need, and the one that does reads it bounded
//! and against a deadline, after the permission check.
//!
//! Failed authentications are counted per address in Redis ([`COUNT_AUTH_FAILURE`]);
//! past [`AuthFailureLimit::per_minute`] in a minute the address gets `429` with
//! `Retry-After` *before* its token is verified, so a flood of bad tokens costs one
//! Redis round trip each ([`READ_AUTH_FAILURES`]) and no signature check.

use crate::config::{number, ConfigError, Variables};
use crate::http::{routes, Refusal};

/// `max_auth_failures_per_minute`: failed authentications one address may make in a
/// minute before it gets `429` (0 = unlimited).
pub const MAX_AUTH_FAILURES_PER_MINUTE: &str = "max_auth_failures_per_minute";
/// Default of [`MAX_AUTH_FAILURES_PER_MINUTE`].
pub const DEFAULT_MAX_AUTH_FAILURES_PER_MINUTE: u64 = 30;
/// The window failed authentications are counted in, ms.
pub const AUTH_FAILURE_WINDOW_MS: u64 = 60_000;

/// The largest body of `POST /crm-events/session` (the token travels in a header;
/// a body is allowed only so that forms and clients that always send one work).
pub const SESSION_MAX_BODY_BYTES: u64 = 1024;

/// How long a client has to send a request body it announced, ms. A body that is
/// not complete by then is refused (`408`) and its connection closed.
pub const BODY_READ_TIMEOUT_MS: u64 = 10_000;

/// The largest body a request may carry: the publish limit for `POST /crm-events`,
/// [`SESSION_MAX_BODY_BYTES`] for `POST /crm-events/session`, nothing anywhere else
/// (every other route and method takes no body).
pub fn body_limit(method: &str, path: &str, publish_max_body_bytes: u64) -> u64 {
    if !method.eq_ignore_ascii_case("POST") {
        return 0;
    }
    match path {
        routes::EVENTS => publish_max_body_bytes,
        routes::SESSION => SESSION_MAX_BODY_BYTES,
        _ => 0,
    }
}

/// `413`: the body is larger than the route takes.
pub fn body_too_large(max: u64) -> Refusal {
    let message = if max == 0 {
        "this route takes no request body".to_string()
    } else {
        format!("the body is larger than the {max} bytes this route takes")
    };
    Refusal::new(413, "payload_too_large", message).with("max_bytes", max)
}

/// `408`: the body did not arrive in time.
pub fn body_too_slow() -> Refusal {
    Refusal::new(
        408,
        "request_timeout",
        format!(
            "the request body did not arrive within {} s",
            BODY_READ_TIMEOUT_MS / 1000
        ),
    )
    .header("connection", "close")
}

/// `400`: the body could not be read (the connection broke, or the framing was bad).
pub fn body_unreadable() -> Refusal {
    Refusal::new(400, "bad_request", "the request body could not be read")
}

/// The failed-authentication limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthFailureLimit {
    /// Failures one address may make per minute (0 = unlimited).
    pub per_minute: u64,
}

impl AuthFailureLimit {
    /// Loads [`MAX_AUTH_FAILURES_PER_MINUTE`].
    pub fn load(vars: &impl Variables) -> Result<Self, ConfigError> {
        Ok(Self {
            per_minute: number(
                vars,
                MAX_AUTH_FAILURES_PER_MINUTE,
                DEFAULT_MAX_AUTH_FAILURES_PER_MINUTE,
                0,
                1_000_000,
            )?,
        })
    }

    /// `Some(refusal)` when `failures` (the address's count this window) has used up
    /// the limit; `retry_ms` is the window's time left.
    pub fn refuse(&self, failures: u64, retry_ms: u64) -> Option<Refusal> {
        if self.per_minute == 0 || failures < self.per_minute {
            return None;
        }
        let seconds = retry_ms
            .div_ceil(1000)
            .clamp(1, AUTH_FAILURE_WINDOW_MS / 1000);
        Some(
            Refusal::new(
                429,
                "too_many_auth_failures",
                "too many failed authentications from this address; retry later",
            )
            .retry_after(seconds),
        )
    }
}

/// Reads an address's failure count and the window's time left, in one round trip:
/// `{count, pttl}` (`{0, 0}` when there is none). KEYS: the address's counter.
pub const READ_AUTH_FAILURES: &str = r#"
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
return {n, redis.call('PTTL', KEYS[1])}
"#;

/// Counts one failed authentication of an address: the counter's first failure
/// opens the window. KEYS: the address's counter. ARGV: the window, ms.
pub const COUNT_AUTH_FAILURE: &str = r#"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_routes_that_take_a_body_get_one() {
        assert_eq!(body_limit("POST", routes::EVENTS, 4096), 4096);
        assert_eq!(
            body_limit("post", routes::SESSION, 4096),
            SESSION_MAX_BODY_BYTES
        );
        for (method, path) in [
            ("GET", routes::EVENTS),
            ("PUT", routes::EVENTS),
            ("POST", routes::HEALTHZ),
            ("POST", routes::VIEWER),
            ("POST", "/anything"),
            ("DELETE", routes::SESSION),
        ] {
            assert_eq!(body_limit(method, path, 4096), 0, "{method} {path}");
        }
    }

    #[test]
    fn the_failure_limit_refuses_from_the_limit_on_with_retry_after() {
        let limit = AuthFailureLimit { per_minute: 3 };
        assert!(limit.refuse(2, 50_000).is_none());
        let r = limit.refuse(3, 12_345).unwrap();
        assert_eq!((r.status, r.code), (429, "too_many_auth_failures"));
        assert_eq!(r.retry_after, Some(13));
        // A counter without expiry (PTTL -1) still says when to come back.
        assert_eq!(limit.refuse(9, 0).unwrap().retry_after, Some(1));
        assert!(AuthFailureLimit { per_minute: 0 }
            .refuse(1_000, 1)
            .is_none());
    }

    #[test]
    fn the_limit_is_a_setting() {
        let vars = |v: &'static str| {
            move |n: &str| (n == MAX_AUTH_FAILURES_PER_MINUTE).then(|| v.to_string())
        };
        assert_eq!(AuthFailureLimit::load(&vars("5")).unwrap().per_minute, 5);
        assert_eq!(
            AuthFailureLimit::load(&|_: &str| None).unwrap().per_minute,
            DEFAULT_MAX_AUTH_FAILURES_PER_MINUTE
        );
        assert!(AuthFailureLimit::load(&vars("lots")).is_err());
    }
}
