//! Which stream a subscriber reads, and on which Redis.
//!
//! The tenant is the unit of fan-out: a stream that names one tenant — the only
//! tenant of its token, or the one `?tenant=` chooses — reads that tenant's stream
//! on the shard the tenant hashes to ([`shard_of`]). It holds the tenant's events
//! and nothing else, so the subscriber's frames, ids and keepalives cannot depend on
//! other tenants' traffic, and the node pays only for what it delivers. Only an
//! operator (a `*` token, or auth off) reads the all-tenants stream, for every
//! tenant or several at once. A token for several tenants must choose one: reading
//! them together would mean reading a stream they share with others.

use crm_events_contracts::auth::{Scope, Tenants};
use crm_events_contracts::config::SseConfig;
use crm_events_contracts::http::Refusal;
use crm_events_contracts::keys::StreamKeys;
use crm_events_contracts::request::Filters;
use crm_events_contracts::spin_glue::{Redis, RedisError};
use crm_events_contracts::tenant::{shard_of, usable_tenant, MAX_TENANT_BYTES};

/// The stream a subscriber reads.
#[derive(Debug)]
pub struct Source {
    /// Its keys.
    pub keys: StreamKeys,
    /// The Redis that holds it.
    pub address: String,
    /// Its tenant (`None`: the all-tenants stream).
    pub tenant: Option<String>,
}

impl Source {
    /// Opens the stream's Redis when it is not `control_address` (whose connection
    /// the stream already has).
    pub fn connect(&self, control_address: &str) -> Result<Option<Redis>, RedisError> {
        if self.address == control_address {
            return Ok(None);
        }
        Redis::open(&self.address).map(Some)
    }
}

/// The stream for a subscriber of `scope` whose filters (already narrowed to the
/// scope) are `filters`; returns it with the filters left to apply inside it.
pub fn choose(
    scope: &Scope,
    mut filters: Filters,
    config: &SseConfig,
) -> Result<(Source, Filters), Refusal> {
    let keys = &config.common.keys;
    if let [tenant] = filters.tenants.as_slice() {
        let tenant = tenant.clone();
        if !usable_tenant(&tenant) {
            let message =
                format!("a tenant id is 1 to {MAX_TENANT_BYTES} bytes, without control characters");
            return Err(Refusal::new(400, "bad_request", message).with("parameter", "tenant"));
        }
        // Every entry of the tenant's stream is the tenant's.
        filters.tenants.clear();
        let shard = &config.shards[shard_of(&tenant, config.shards.len())];
        let source = Source {
            keys: keys.one_tenant(&tenant),
            address: shard.clone(),
            tenant: Some(tenant),
        };
        return Ok((source, filters));
    }
    if scope.tenants != Tenants::All {
        return Err(tenant_required(
            "this token grants several tenants: choose one with ?tenant=<id>",
        ));
    }
    if !config.all_tenants_stream {
        return Err(tenant_required(
            "the all-tenants stream is turned off here: choose a tenant with ?tenant=<id>",
        ));
    }
    let source = Source {
        keys: keys.all_tenants(),
        address: config.common.redis_address.clone(),
        tenant: None,
    };
    Ok((source, filters))
}

fn tenant_required(message: &str) -> Refusal {
    Refusal::new(400, "tenant_required", message).with("parameter", "tenant")
}
