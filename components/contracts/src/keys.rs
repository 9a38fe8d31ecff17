//! Every Redis key crm-events uses, derived from one configurable prefix.
//!
//! Nothing else in the workspace spells a key name: the sidecar, the components and
//! the tests all ask a [`Keys`] value. The default prefix is [`DEFAULT_PREFIX`].

/// The prefix used when none is configured.
pub const DEFAULT_PREFIX: &str = "crm-events";

/// The stream field that holds the envelope JSON. Each entry has exactly this one
/// field, so Spin's flattened `XREAD`/`XRANGE` replies stay unambiguous.
pub const ENVELOPE_FIELD: &str = "e";

/// The keys of one stream a subscriber reads: its entries, its trim marker and the
/// key of the epoch its ids carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamKeys {
    /// The stream.
    pub stream: String,
    /// The id of the newest entry trimmed from it.
    pub trimmed: String,
    /// Its epoch.
    pub epoch: String,
}

/// The names of all Redis keys, for one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Default for Keys {
    fn default() -> Self {
        Self::new(DEFAULT_PREFIX)
    }
}

impl Keys {
    /// Keys under `prefix` (an empty prefix falls back to the default).
    pub fn new(prefix: &str) -> Self {
        let prefix = prefix.trim();
        let prefix = if prefix.is_empty() {
            DEFAULT_PREFIX
        } else {
            prefix
        };
        Self {
            prefix: prefix.to_string(),
        }
    }

    /// The prefix itself.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.prefix)
    }

    /// The Redis stream of envelopes (history, resume, fan-out).
    pub fn stream(&self) -> String {
        self.key("stream")
    }

    /// The all-tenants stream, as a subscriber reads it.
    pub fn all_tenants(&self) -> StreamKeys {
        StreamKeys {
            stream: self.stream(),
            trimmed: self.stream_trimmed(),
            epoch: self.stream_epoch(),
        }
    }

    /// One tenant's stream, as a subscriber reads it (the epoch is its shard's).
    pub fn one_tenant(&self, tenant: &str) -> StreamKeys {
        StreamKeys {
            stream: self.tenant_stream(tenant),
            trimmed: self.tenant_trimmed(tenant),
            epoch: self.tenants_epoch(),
        }
    }

    /// The id of the newest entry the sidecar trimmed from the stream (a string key).
    /// Redis's own `max-deleted-entry-id` does not move on trimming, so the sidecar
    /// records it; a client resuming before it has lost history (a `gap`).
    pub fn stream_trimmed(&self) -> String {
        self.key("stream:trimmed")
    }

    /// The stream's epoch: a random id the sidecar sets when it creates the stream and
    /// again whenever it finds Redis lost data. SSE ids carry it, so a client resuming
    /// from another epoch is told (`reset`) instead of silently skipping or replaying.
    pub fn stream_epoch(&self) -> String {
        self.key("stream:epoch")
    }

    /// Hash `topic/partition -> last offset written`: the exactly-once watermark.
    pub fn offsets(&self) -> String {
        self.key("stream:offsets")
    }

    /// The watermark hash field of one partition.
    pub fn offsets_field(topic: &str, partition: i32) -> String {
        format!("{topic}/{partition}")
    }

    /// Sorted set of the outbox ids already in the stream (member and score: the id),
    /// the newest `OUTBOX_DEDUP_WINDOW` of them: a record a publisher re-sent after a
    /// crash is dropped by it. Written in the same transaction as the events.
    pub fn outbox_ids(&self) -> String {
        self.key("stream:outbox-ids")
    }

    /// One tenant's stream of envelopes (the tenant-scoped view: no partition,
    /// offset or outbox id), on the tenant's shard ([`crate::tenant::shard_of`]).
    /// The tenant id ends the key, so no tenant's key can be another's.
    pub fn tenant_stream(&self, tenant: &str) -> String {
        self.key(&format!("tenant:stream:{tenant}"))
    }

    /// The epoch a tenant's stream is in: the shard's epoch
    /// ([`Keys::tenants_epoch`]) as of the stream's last write. The sidecar's append
    /// writes an epoch marker into the stream whenever the two differ, so an open
    /// stream learns of a new epoch from the stream itself.
    pub fn tenant_epoch(&self, tenant: &str) -> String {
        self.key(&format!("tenant:epoch:{tenant}"))
    }

    /// The id of the newest entry trimmed from a tenant's stream (by age or count).
    pub fn tenant_trimmed(&self, tenant: &str) -> String {
        self.key(&format!("tenant:trimmed:{tenant}"))
    }

    /// The watermark hash of the tenant streams of one shard (`topic/partition ->
    /// last offset written`), apart from the all-tenants stream's: each Redis the
    /// sidecar writes keeps its own, in the same transaction as its events.
    pub fn tenants_offsets(&self) -> String {
        self.key("tenants:offsets")
    }

    /// The epoch of one shard's tenant streams (every tenant-stream id carries it).
    pub fn tenants_epoch(&self) -> String {
        self.key("tenants:epoch")
    }

    /// The outbox-id dedup window of one shard's tenant streams.
    pub fn tenants_outbox_ids(&self) -> String {
        self.key("tenants:outbox-ids")
    }

    /// The pub/sub channel each written batch is published on.
    pub fn channel(&self) -> String {
        self.key("events")
    }

    /// The sidecar's heartbeat (a key with a TTL; the Spin `/readyz` checks it).
    pub fn heartbeat(&self) -> String {
        self.key("sidecar:heartbeat")
    }

    /// Hash of the sidecar's metric values re-exported by the Spin `/metrics`.
    pub fn sidecar_metrics(&self) -> String {
        self.key("sidecar:metrics")
    }

    /// Sorted set of SSE client leases (member: lease id, score: expiry in ms).
    pub fn sse_leases(&self) -> String {
        self.key("sse:leases")
    }

    /// Sorted set of the leases of one token subject (per-subject stream limit).
    pub fn sse_subject_leases(&self, subject: &str) -> String {
        self.key(&format!("sse:leases:subject:{subject}"))
    }

    /// Sorted set of the leases of one client address (per-address stream limit).
    pub fn sse_address_leases(&self, address: &str) -> String {
        self.key(&format!("sse:leases:address:{address}"))
    }

    /// Counter of one address's connection attempts in the current minute.
    pub fn sse_address_connects(&self, address: &str) -> String {
        self.key(&format!("sse:connects:{address}"))
    }

    /// Counter of one address's failed authentications in the current window.
    pub fn auth_failures(&self, address: &str) -> String {
        self.key(&format!("auth:failures:{address}"))
    }

    /// Counter that hands out lease ids.
    pub fn sse_lease_seq(&self) -> String {
        self.key("sse:lease-seq")
    }

    /// Counter of envelopes written to SSE clients (`crm_events_messages_total`).
    pub fn messages_total(&self) -> String {
        self.key("metrics:messages")
    }

    /// Counter of streams ended because the client stopped reading
    /// (`crm_events_sse_slow_clients_total`).
    pub fn slow_clients_total(&self) -> String {
        self.key("metrics:slow-clients")
    }

    /// Hash `"METHOD path" -> count` (`crm_events_http_requests_total`).
    pub fn http_requests(&self) -> String {
        self.key("metrics:http-requests")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_keys_share_the_prefix_and_differ() {
        let k = Keys::new("acme");
        let all = [
            k.stream(),
            k.offsets(),
            k.stream_trimmed(),
            k.stream_epoch(),
            k.outbox_ids(),
            k.channel(),
            k.heartbeat(),
            k.sidecar_metrics(),
            k.sse_leases(),
            k.sse_lease_seq(),
            k.sse_subject_leases("s"),
            k.sse_address_leases("a"),
            k.sse_address_connects("a"),
            k.messages_total(),
            k.slow_clients_total(),
            k.http_requests(),
            k.tenant_stream("t"),
            k.tenant_epoch("t"),
            k.tenant_trimmed("t"),
            k.tenants_offsets(),
            k.tenants_epoch(),
            k.tenants_outbox_ids(),
        ];
        for key in &all {
            assert!(key.starts_with("acme:"), "{key}");
        }
        let unique: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(unique.len(), all.len());
        assert_eq!(k.stream(), "acme:stream");
        assert_eq!(k.tenant_stream("t1"), "acme:tenant:stream:t1");
    }

    #[test]
    fn empty_prefix_falls_back_to_default() {
        assert_eq!(Keys::new("  ").prefix(), DEFAULT_PREFIX);
        assert_eq!(Keys::default().stream(), "crm-events:stream");
        assert_eq!(Keys::offsets_field("t", 2), "t/2");
    }
}
