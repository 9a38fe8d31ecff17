//! Tenants as the unit of storage and fan-out: which tenant an event belongs to, and
//! which Redis shard holds a tenant's stream.
//!
//! An event's tenant is its value's `TenantId` (a JSON string, or a number as
//! written), the same field the `?tenant=` filter and the token's scope read. The
//! sidecar writes each event with a tenant to that tenant's stream
//! ([`crate::keys::Keys::tenant_stream`]) on the shard [`shard_of`] picks; the
//! components pick the same shard to read it. Events without a tenant (or with one
//! that cannot name a key, see [`usable_tenant`]) go to the all-tenants stream only.

use serde_json::value::RawValue;
use std::borrow::Cow;

/// How long a tenant stream keeps an entry by default (24 hours), seconds; the
/// sidecar's `TENANT_RETENTION_SECONDS`.
pub const DEFAULT_RETENTION_SECONDS: u64 = 86_400;

/// The longest tenant id that gets a stream of its own, in bytes.
pub const MAX_TENANT_BYTES: usize = 200;

/// The value fields the tenant is read from.
#[derive(serde::Deserialize, Default)]
struct TenantProbe<'a> {
    #[serde(rename = "TenantId", borrow, default)]
    tenant: Option<&'a RawValue>,
}

/// A `TenantId` as text: a JSON string, or a number as written; anything else
/// (`null`, an object, a bool) is no tenant.
pub fn tenant_text(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    if text.starts_with('"') {
        serde_json::from_str(text).ok()
    } else if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        Some(Cow::Borrowed(text))
    } else {
        None
    }
}

/// The tenant of a Kafka value (JSON bytes), when it names one that can have a
/// stream of its own.
pub fn tenant_of_value(value: &[u8]) -> Option<String> {
    if !is_object(value) {
        return None;
    }
    let probe: TenantProbe<'_> = serde_json::from_slice(value).ok()?;
    let tenant = tenant_text(probe.tenant?)?;
    usable_tenant(&tenant).then(|| tenant.into_owned())
}

/// Whether JSON text is an object: serde reads a struct from an array too,
/// positionally (`["acme"]` would name tenant `acme`), so the shape is checked first.
pub fn is_object(json: &[u8]) -> bool {
    json.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// Whether `tenant` may name a stream: 1 to [`MAX_TENANT_BYTES`] bytes, no control
/// characters (it ends a Redis key and appears in logs).
pub fn usable_tenant(tenant: &str) -> bool {
    (1..=MAX_TENANT_BYTES).contains(&tenant.len()) && !tenant.chars().any(char::is_control)
}

/// The shard (0-based index into the shard list) that holds `tenant`'s stream, for
/// `shards` shards: Lamping and Veach's jump consistent hash of the tenant's XXH3-64.
/// Both are fixed functions, so every sidecar and component agrees without sharing
/// state; and adding a shard at the end of the list moves only the tenants the new
/// shard takes (1/n of them), none between the old shards.
pub fn shard_of(tenant: &str, shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    let mut key = xxhash_rust::xxh3::xxh3_64(tenant.as_bytes());
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < shards as i64 {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as usize
}

/// A comma-separated list of Redis addresses (`REDIS_SHARDS`, `redis_shards`);
/// empty means the one Redis `fallback`.
pub fn parse_shards(list: &str, fallback: &str) -> Vec<String> {
    let shards: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if shards.is_empty() {
        vec![fallback.to_string()]
    } else {
        shards
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tenant_is_the_values_tenant_id_as_text() {
        assert_eq!(
            tenant_of_value(br#"{"TenantId":"acme","x":1}"#).as_deref(),
            Some("acme")
        );
        assert_eq!(
            tenant_of_value(br#"{"TenantId":42}"#).as_deref(),
            Some("42")
        );
        for none in [
            &br#"{"TenantId":null}"#[..],
            br#"{"TenantId":{"a":1}}"#,
            br#"{"TenantId":""}"#,
            br#"{"TenantId":"a\nb"}"#,
            br#"{"Other":"x"}"#,
            b"not json",
            br#"["TenantId"]"#,
        ] {
            assert_eq!(
                tenant_of_value(none),
                None,
                "{}",
                String::from_utf8_lossy(none)
            );
        }
        let long = format!(r#"{{"TenantId":"{}"}}"#, "t".repeat(MAX_TENANT_BYTES + 1));
        assert_eq!(tenant_of_value(long.as_bytes()), None);
    }

    #[test]
    fn shards_are_stable_and_spread() {
        // Fixed values: the sidecar and every component must agree, across releases.
        assert_eq!(shard_of("acme", 1), 0);
        let first: Vec<usize> = ["acme", "globex", "initech", "umbrella"]
            .iter()
            .map(|t| shard_of(t, 3))
            .collect();
        assert_eq!(first, [0, 2, 1, 2]);
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            counts[shard_of(&format!("tenant-{i}"), 4)] += 1;
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
        // Growing from 3 to 4 shards moves tenants only to the new shard.
        for i in 0..2000 {
            let t = format!("tenant-{i}");
            let (before, after) = (shard_of(&t, 3), shard_of(&t, 4));
            assert!(after == before || after == 3, "{t}: {before} -> {after}");
        }
    }

    #[test]
    fn an_empty_shard_list_is_the_one_redis() {
        assert_eq!(parse_shards(" ", "redis://r"), ["redis://r"]);
        assert_eq!(
            parse_shards("redis://a, redis://b", "redis://r"),
            ["redis://a", "redis://b"]
        );
    }
}
