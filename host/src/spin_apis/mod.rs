//! Host implementations of the Spin interfaces the components import, behaving as
//! Spin's do:
//!
//! * [`redis`]: `fermyon:spin/redis@2.0.0` against a real Redis.
//! * [`shared_redis`]: one `XREAD` per stream for every instance tailing it.
//! * [`postgres`]: `spin:postgres/postgres@4.0.0` against a real PostgreSQL.
//! * [`variables`]: `fermyon:spin/variables@2.0.0` from the manifest.
//! * [`outbound_http`]: the `allowed_outbound_hosts` check on `wasi:http` requests.
//!
//! Outbound connections must be permitted by the component's
//! `allowed_outbound_hosts` ([`address_allowed`]), as in Spin.

pub mod outbound_http;
pub mod postgres;
pub mod redis;
pub mod shared_redis;
pub mod variables;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "crm-events:host/spin-imports",
    imports: { default: async | trappable },
    with: {
        "fermyon:spin/redis.connection": redis::RedisConnection,
        "spin:postgres/postgres.connection": postgres::PgConnection,
    },
});

/// Whether `address` (a `scheme://[user@]host[:port]…` URL) is allowed by `allowed`
/// (as in `spin.toml`: `scheme://host:port`, where host and port may be `*`, and a
/// missing port is the scheme's `default_port`).
pub fn address_allowed(address: &str, allowed: &[String], default_port: u16) -> bool {
    let default_port = default_port.to_string();
    let split = |url: &str| -> Option<(String, String, String)> {
        let (scheme, rest) = url.split_once("://")?;
        let authority = rest.split(['/', '?']).next()?;
        let authority = authority.rsplit('@').next()?;
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (h, p),
            _ => (authority, default_port.as_str()),
        };
        Some((scheme.to_string(), host.to_string(), port.to_string()))
    };
    let Some((scheme, host, port)) = split(address) else {
        return false;
    };
    allowed.iter().any(|a| {
        let Some((s, h, p)) = split(a) else {
            return false;
        };
        (s == "*" || s == scheme) && (h == "*" || h == host) && (p == "*" || p == port)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_hosts_match_like_spin() {
        let allowed = vec!["redis://127.0.0.1:6379".to_string()];
        assert!(address_allowed("redis://127.0.0.1:6379", &allowed, 6379));
        assert!(address_allowed("redis://127.0.0.1", &allowed, 6379));
        assert!(address_allowed(
            "redis://:pw@127.0.0.1:6379/0",
            &allowed,
            6379
        ));
        assert!(!address_allowed("redis://127.0.0.1:6380", &allowed, 6379));
        assert!(!address_allowed("redis://10.0.0.1:6379", &allowed, 6379));
        assert!(!address_allowed(
            "postgres://127.0.0.1:6379",
            &allowed,
            5432
        ));
        let any = vec!["redis://*:*".to_string()];
        assert!(address_allowed("redis://x:1", &any, 6379));
        let pg = vec!["postgres://db".to_string()];
        assert!(address_allowed(
            "postgres://u:p@db:5432/crm?sslmode=disable",
            &pg,
            5432
        ));
        assert!(!address_allowed("postgres://db:5433/crm", &pg, 5432));
    }
}
