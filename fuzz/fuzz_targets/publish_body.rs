//! `POST /crm-events`'s body and `Idempotency-Key`: the input is the header, then
//! (after the first newline) the body. Validation never panics; an accepted body has
//! a canonical UUID tenant, a type of the allowed characters, a payload that is JSON
//! without U+0000, and a fingerprint that layout does not change.
#![no_main]

use crm_events_contracts::publish::{idempotency_key, Publish};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (key, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    if let Ok(key) = std::str::from_utf8(key) {
        if let Ok(k) = idempotency_key(Some(key)) {
            assert!((1..=200).contains(&k.len()));
        }
    }
    let Ok(request) = Publish::parse(body) else {
        return;
    };
    assert_eq!(request.tenant_id.len(), 36);
    assert!(!request.payload.contains("\\u0000"));
    let payload: serde_json::Value =
        serde_json::from_str(&request.payload).expect("payload is JSON");
    // The same request, laid out differently, has the same fingerprint.
    let again = serde_json::json!({
        "payload": payload,
        "tenant_id": request.tenant_id.to_uppercase(),
        "type": request.event_type,
        "occurred_at": request.occurred_at,
    });
    let reparsed =
        Publish::parse(serde_json::to_string_pretty(&again).unwrap().as_bytes()).unwrap();
    assert_eq!(reparsed.fingerprint, request.fingerprint);
});
