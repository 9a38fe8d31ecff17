//! A token's claims (the JSON a verified token carries): reading them never panics,
//! and nothing in parsing widens a scope — "every tenant" only from the lone `"*"`
//! list, an `exp` only from a NumericDate within range.
#![no_main]

use crm_events_contracts::auth::{read_claims, ClaimNames, Tenants, MAX_NUMERIC_DATE};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(claims) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Ok(identity) = read_claims(&claims, &ClaimNames::default()) else {
        return;
    };
    assert!(!identity.subject.is_empty());
    if identity.scope.tenants == Tenants::All {
        let list = claims["tenants"].as_array().expect("All comes from a list");
        assert!(list.iter().all(|t| t == "*"), "All from {list:?}");
    }
    if let Tenants::Only(tenants) = &identity.scope.tenants {
        assert!(!tenants.contains("*"));
    }
    if let Some(exp) = identity.expires_at {
        assert!(exp <= MAX_NUMERIC_DATE);
    }
});
