//! Configuration of the Spin components: variable names, defaults and validation.
//!
//! The components read Spin variables (`spin.toml` `[variables]`, overridable with
//! `SPIN_VARIABLE_<NAME>` or a variables provider). Each component gets the ones it
//! uses through `[component.<name>.variables]`. The names and defaults live here so
//! that the components, `spin.toml` and the docs agree; a unit test checks `spin.toml`.

use crate::keys::{Keys, DEFAULT_PREFIX};

/// `redis_address`: the Redis URL the components connect to.
pub const REDIS_ADDRESS: &str = "redis_address";
/// `redis_shards`: the Redis servers of the tenant streams, comma-separated
/// `host:port`s in the order of the sidecar's `REDIS_SHARDS` (empty: the one Redis
/// of `redis_address`). A tenant's stream is read from the shard
/// [`crate::tenant::shard_of`] picks.
pub const REDIS_SHARDS: &str = "redis_shards";
/// `all_tenants_stream`: whether the sidecar keeps the all-tenants stream (its
/// `ALL_TENANTS_STREAM`); without it, every stream names one tenant.
pub const ALL_TENANTS_STREAM: &str = "all_tenants_stream";
/// `kafka_brokers`: shown by `GET /` (the components never talk to Kafka).
pub const KAFKA_BROKERS: &str = "kafka_brokers";
/// `kafka_topic`: the topic the sidecar relays.
pub const KAFKA_TOPIC: &str = "kafka_topic";
/// `kafka_group`: the sidecar's consumer group.
pub const KAFKA_GROUP: &str = "kafka_group";
/// `key_prefix`: prefix of every Redis key.
pub const KEY_PREFIX: &str = "key_prefix";
/// `keepalive_seconds`: idle time after which the stream sends a comment.
pub const KEEPALIVE_SECONDS: &str = "keepalive_seconds";
/// `max_stream_seconds`: a stream ends cleanly after this long (0 = never).
pub const MAX_STREAM_SECONDS: &str = "max_stream_seconds";
/// `max_clients`: concurrent SSE streams across all instances (0 = unlimited).
pub const MAX_CLIENTS: &str = "max_clients";
/// `retry_ms`: the reconnection delay sent to clients in `retry:`.
pub const RETRY_MS: &str = "retry_ms";
/// `read_count`: entries read from Redis per `XREAD`.
pub const READ_COUNT: &str = "read_count";
/// `send_timeout_seconds`: how long one write to a client may wait for the client to
/// take it; a stream whose client does not read for this long ends (it resumes with
/// `Last-Event-ID`) and is counted in `crm_events_sse_slow_clients_total`.
pub const SEND_TIMEOUT_SECONDS: &str = "send_timeout_seconds";
/// `linger_ms`: the least time between two reads of one stream. Events that arrive
/// within it go out together (one wake-up, one write); the first event after a
/// quiet spell goes at once.
pub const LINGER_MS: &str = "linger_ms";
/// `max_streams_per_subject`: concurrent streams of one token subject (0 = unlimited).
pub const MAX_STREAMS_PER_SUBJECT: &str = "max_streams_per_subject";
/// `max_streams_per_address`: concurrent streams from one client address (0 = unlimited).
pub const MAX_STREAMS_PER_ADDRESS: &str = "max_streams_per_address";
/// `max_connects_per_minute`: stream openings per client address per minute (0 = unlimited).
pub const MAX_CONNECTS_PER_MINUTE: &str = "max_connects_per_minute";
/// `trusted_proxies`: comma-separated proxy IPs whose `X-Forwarded-For` is believed.
pub const TRUSTED_PROXIES: &str = "trusted_proxies";
/// `metrics_token` (secret): when set, `/metrics` needs `Authorization: Bearer <it>`.
pub const METRICS_TOKEN: &str = "metrics_token";
/// `cors_allowed_origins`: comma-separated origins, `*` for any, empty for none.
pub const CORS_ALLOWED_ORIGINS: &str = "cors_allowed_origins";

/// `postgres_address` (secret): the Postgres URL the publish endpoint writes the
/// outbox through (spin.toml builds it from `postgres_host`, `postgres_user`, …).
pub const POSTGRES_ADDRESS: &str = "postgres_address";
/// `publish_token` (secret): with `auth_mode = "none"`, `POST /crm-events` needs
/// `Authorization: Bearer <it>` (unset: publishing is refused).
pub const PUBLISH_TOKEN: &str = "publish_token";
/// `publish_max_body_bytes`: the largest publish request body.
pub const PUBLISH_MAX_BODY_BYTES: &str = "publish_max_body_bytes";
/// Default of [`PUBLISH_MAX_BODY_BYTES`] (256 KiB).
pub const DEFAULT_PUBLISH_MAX_BODY_BYTES: u64 = 262_144;

/// Default of [`KAFKA_BROKERS`].
pub const DEFAULT_KAFKA_BROKERS: &str = "kafka:9092";
/// Default of [`KAFKA_TOPIC`].
pub const DEFAULT_KAFKA_TOPIC: &str = "aetherlink.events";
/// Default of [`KAFKA_GROUP`].
pub const DEFAULT_KAFKA_GROUP: &str = "crm-events-sse";
/// Default of [`MAX_CLIENTS`]: below Spin's default cap of 1,000 live instances, so
/// health checks and scrapes still get an instance when every stream is open.
pub const DEFAULT_MAX_CLIENTS: u64 = 900;
/// Default of [`LINGER_MS`] (docs/benchmarks.md, "Linger").
pub const DEFAULT_LINGER_MS: u64 = 5;
/// Default of [`REDIS_ADDRESS`].
pub const DEFAULT_REDIS_ADDRESS: &str = "redis://127.0.0.1:6379";

/// A variable whose value is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration variable {name} = {value:?}: {reason}")]
pub struct ConfigError {
    /// Variable name.
    pub name: &'static str,
    /// The value found.
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl ConfigError {
    /// The variable `name` as `vars` holds it is unusable.
    pub fn new(name: &'static str, vars: &impl Variables, reason: &'static str) -> Self {
        Self {
            name,
            value: vars.get(name).unwrap_or_default(),
            reason,
        }
    }

    /// A secret variable is unusable; its value is never repeated.
    pub fn secret(name: &'static str, reason: &'static str) -> Self {
        Self {
            name,
            value: "(secret, not shown)".to_string(),
            reason,
        }
    }
}

/// Reads a variable; `None` when it is not defined (the default applies).
pub trait Variables {
    /// The value of `name`, if defined.
    fn get(&self, name: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> Variables for F {
    fn get(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// A text variable, trimmed; `default` when undefined or blank.
pub(crate) fn text(vars: &impl Variables, name: &str, default: &str) -> String {
    vars.get(name)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// A whole-number variable within `min..=max`; `default` when undefined or blank.
pub(crate) fn number(
    vars: &impl Variables,
    name: &'static str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let Some(raw) = vars.get(name).filter(|v| !v.trim().is_empty()) else {
        return Ok(default);
    };
    let err = |reason| ConfigError {
        name,
        value: raw.clone(),
        reason,
    };
    let n: u64 = raw.trim().parse().map_err(|_| err("not a whole number"))?;
    if n < min || n > max {
        return Err(err("out of range"));
    }
    Ok(n)
}

/// A `true`/`false` variable (default false).
pub(crate) fn flag(vars: &impl Variables, name: &'static str) -> Result<bool, ConfigError> {
    flag_or(vars, name, false)
}

/// A `true`/`false` variable with a default.
pub(crate) fn flag_or(
    vars: &impl Variables,
    name: &'static str,
    default: bool,
) -> Result<bool, ConfigError> {
    match text(vars, name, if default { "true" } else { "false" })
        .to_ascii_lowercase()
        .as_str()
    {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(ConfigError::new(name, vars, "must be true or false")),
    }
}

/// What every component needs: where Redis is and which keys to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommonConfig {
    /// Redis URL.
    pub redis_address: String,
    /// The key names.
    pub keys: Keys,
    /// Kafka brokers (informational).
    pub kafka_brokers: String,
    /// Kafka topic.
    pub topic: String,
    /// Consumer group.
    pub group: String,
}

impl CommonConfig {
    /// Loads from variables, with defaults for what is undefined.
    pub fn load(vars: &impl Variables) -> Self {
        Self {
            redis_address: text(vars, REDIS_ADDRESS, DEFAULT_REDIS_ADDRESS),
            keys: Keys::new(&text(vars, KEY_PREFIX, DEFAULT_PREFIX)),
            kafka_brokers: text(vars, KAFKA_BROKERS, DEFAULT_KAFKA_BROKERS),
            topic: text(vars, KAFKA_TOPIC, DEFAULT_KAFKA_TOPIC),
            group: text(vars, KAFKA_GROUP, DEFAULT_KAFKA_GROUP),
        }
    }
}

/// The SSE stream's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseConfig {
    /// Redis, keys, topic and group.
    pub common: CommonConfig,
    /// Seconds of silence before a keepalive comment (1..=300, default 15).
    pub keepalive_seconds: u64,
    /// Seconds after which a stream ends cleanly (0 = never, default 0).
    pub max_stream_seconds: u64,
    /// Concurrent streams allowed (0 = unlimited, default [`DEFAULT_MAX_CLIENTS`]).
    pub max_clients: u64,
    /// `retry:` sent to clients, ms (default 3000).
    pub retry_ms: u64,
    /// Entries per `XREAD` (1..=10000, default 500).
    pub read_count: u64,
    /// Seconds one write may wait for a client that does not read (1..=3600,
    /// default 10); then the stream ends.
    pub send_timeout_seconds: u64,
    /// Least ms between two reads of one stream (0..=1000, default
    /// [`DEFAULT_LINGER_MS`]).
    pub linger_ms: u64,
    /// CORS policy.
    pub cors: Cors,
    /// Per-subject and per-address limits.
    pub limits: Limits,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<String>,
    /// The Redis URLs of the tenant-stream shards (at least one).
    pub shards: Vec<String>,
    /// Whether the all-tenants stream exists.
    pub all_tenants_stream: bool,
}

/// Limits per subscriber and per client address (0 = unlimited).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Concurrent streams of one token subject (default 20).
    pub per_subject: u64,
    /// Concurrent streams from one address (default 100).
    pub per_address: u64,
    /// Stream openings per address per minute (default 600).
    pub connects_per_minute: u64,
}

impl SseConfig {
    /// Loads and validates.
    pub fn load(vars: &impl Variables) -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::load(vars),
            keepalive_seconds: number(vars, KEEPALIVE_SECONDS, 15, 1, 300)?,
            max_stream_seconds: number(vars, MAX_STREAM_SECONDS, 0, 0, 86_400 * 7)?,
            max_clients: number(vars, MAX_CLIENTS, DEFAULT_MAX_CLIENTS, 0, 10_000_000)?,
            retry_ms: number(vars, RETRY_MS, 3000, 0, 3_600_000)?,
            read_count: number(vars, READ_COUNT, 500, 1, 10_000)?,
            send_timeout_seconds: number(vars, SEND_TIMEOUT_SECONDS, 10, 1, 3600)?,
            linger_ms: number(vars, LINGER_MS, DEFAULT_LINGER_MS, 0, 1000)?,
            cors: Cors::parse(&text(vars, CORS_ALLOWED_ORIGINS, "")),
            limits: Limits {
                per_subject: number(vars, MAX_STREAMS_PER_SUBJECT, 20, 0, 1_000_000)?,
                per_address: number(vars, MAX_STREAMS_PER_ADDRESS, 100, 0, 1_000_000)?,
                connects_per_minute: number(vars, MAX_CONNECTS_PER_MINUTE, 600, 0, 1_000_000)?,
            },
            trusted_proxies: trusted_proxies(vars),
            shards: shard_addresses(vars),
            all_tenants_stream: flag_or(vars, ALL_TENANTS_STREAM, true)?,
        })
    }
}

/// [`REDIS_SHARDS`] as `redis://` URLs; `redis_address` when none is listed.
fn shard_addresses(vars: &impl Variables) -> Vec<String> {
    let fallback = text(vars, REDIS_ADDRESS, DEFAULT_REDIS_ADDRESS);
    crate::tenant::parse_shards(&text(vars, REDIS_SHARDS, ""), &fallback)
        .into_iter()
        .map(|s| match s.contains("://") {
            true => s,
            false => format!("redis://{s}"),
        })
        .collect()
}

/// [`TRUSTED_PROXIES`]: the proxies whose `X-Forwarded-For` is believed.
pub fn trusted_proxies(vars: &impl Variables) -> Vec<String> {
    text(vars, TRUSTED_PROXIES, "")
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// The publish endpoint's settings.
#[derive(Clone, PartialEq, Eq)]
pub struct PublishConfig {
    /// The Postgres URL (with credentials: never shown).
    pub postgres_address: String,
    /// The bearer token of `auth_mode = "none"` (empty: publishing refused).
    pub token: String,
    /// The largest body accepted (1 KiB..=16 MiB, default 256 KiB).
    pub max_body_bytes: u64,
}

impl std::fmt::Debug for PublishConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishConfig")
            .field("postgres_address", &"(secret)")
            .field("token", &"(secret)")
            .field("max_body_bytes", &self.max_body_bytes)
            .finish()
    }
}

impl PublishConfig {
    /// Loads and validates.
    pub fn load(vars: &impl Variables) -> Result<Self, ConfigError> {
        Ok(Self {
            postgres_address: text(vars, POSTGRES_ADDRESS, ""),
            token: vars.get(PUBLISH_TOKEN).unwrap_or_default(),
            max_body_bytes: number(
                vars,
                PUBLISH_MAX_BODY_BYTES,
                DEFAULT_PUBLISH_MAX_BODY_BYTES,
                1024,
                16 * 1024 * 1024,
            )?,
        })
    }
}

/// Which origins may read the stream from a browser on another origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cors {
    /// No cross-origin access (the default).
    None,
    /// Any origin (`*`, only when set explicitly).
    Any,
    /// These exact origins.
    Origins(Vec<String>),
}

impl Cors {
    /// Parses `""`, `"*"` or a comma-separated list of origins.
    pub fn parse(raw: &str) -> Self {
        let list: Vec<String> = raw
            .split(',')
            .map(|o| o.trim().trim_end_matches('/').to_string())
            .filter(|o| !o.is_empty())
            .collect();
        if list.iter().any(|o| o == "*") {
            Cors::Any
        } else if list.is_empty() {
            Cors::None
        } else {
            Cors::Origins(list)
        }
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`, if allowed.
    pub fn allow_origin(&self, origin: Option<&str>) -> Option<String> {
        match (self, origin) {
            (Cors::Any, _) => Some("*".to_string()),
            (Cors::Origins(list), Some(origin)) if list.iter().any(|o| o == origin) => {
                Some(origin.to_string())
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> impl Variables {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name: &str| map.get(name).cloned()
    }

    #[test]
    fn defaults_match_earlier_releases() {
        let c = SseConfig::load(&vars(&[])).unwrap();
        assert_eq!(c.common.kafka_brokers, "kafka:9092");
        assert_eq!(c.common.topic, "aetherlink.events");
        assert_eq!(c.common.group, "crm-events-sse");
        assert_eq!(c.common.keys.prefix(), "crm-events");
        assert_eq!(c.keepalive_seconds, 15);
        assert_eq!(c.max_stream_seconds, 0);
        assert_eq!(c.cors, Cors::None);
    }

    #[test]
    fn bad_numbers_are_named() {
        let e = SseConfig::load(&vars(&[(KEEPALIVE_SECONDS, "soon")])).unwrap_err();
        assert_eq!(e.name, KEEPALIVE_SECONDS);
        assert!(e.to_string().contains("soon"));
        assert!(SseConfig::load(&vars(&[(KEEPALIVE_SECONDS, "0")])).is_err());
        let c = SseConfig::load(&vars(&[(MAX_CLIENTS, " 5 ")])).unwrap();
        assert_eq!(c.max_clients, 5);
        assert_eq!(c.linger_ms, DEFAULT_LINGER_MS);
        assert_eq!(
            SseConfig::load(&vars(&[(LINGER_MS, "0")]))
                .unwrap()
                .linger_ms,
            0
        );
        let e = SseConfig::load(&vars(&[(LINGER_MS, "1001")])).unwrap_err();
        assert_eq!(e.name, LINGER_MS);
    }

    #[test]
    fn publish_settings_hide_their_secrets() {
        let c = PublishConfig::load(&vars(&[
            (POSTGRES_ADDRESS, "postgres://u:s3cret@db/crm"),
            (PUBLISH_TOKEN, "tok3n"),
        ]))
        .unwrap();
        assert_eq!(c.max_body_bytes, DEFAULT_PUBLISH_MAX_BODY_BYTES);
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("tok3n"),
            "{shown}"
        );
        assert!(PublishConfig::load(&vars(&[(PUBLISH_MAX_BODY_BYTES, "10")])).is_err());
    }

    #[test]
    fn cors_is_explicit() {
        assert_eq!(Cors::parse("").allow_origin(Some("https://a")), None);
        assert_eq!(Cors::parse("*").allow_origin(None).as_deref(), Some("*"));
        let c = Cors::parse("https://a.example, https://b.example/");
        assert_eq!(
            c.allow_origin(Some("https://b.example")).as_deref(),
            Some("https://b.example")
        );
        assert_eq!(c.allow_origin(Some("https://evil.example")), None);
    }
}
