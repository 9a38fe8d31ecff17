//! The SSE framing of what a stream sends: a Kafka key and value of any bytes become
//! an envelope, the envelope an event frame. The envelope is one line of JSON; a
//! frame is exactly one event (no line break from the input can end it early or add a
//! field), and a client reading it gets the data back.
#![no_main]

use crm_events_contracts::envelope::{encode_record, Audience, RawRecord};
use crm_events_contracts::sse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |n| usize::from(*n)).min(data.len());
    let (key, value) = data.split_at(split);
    let record = RawRecord {
        topic: "aetherlink.events",
        partition: 0,
        offset: 7,
        timestamp: Some(1),
        key: Some(key),
        value: Some(value),
    };
    let envelope = encode_record(record, [("crm-outbox-id", Some(key))], 1 << 20, Audience::Operator);
    assert!(!envelope.contains('\n') && !envelope.contains('\r'));
    serde_json::from_str::<serde_json::Value>(&envelope).expect("the envelope is JSON");

    // Any text as data, any text as id: one event, and the data comes back.
    let text = String::from_utf8_lossy(value);
    let id = String::from_utf8_lossy(key);
    let mut frame = String::new();
    sse::event(&mut frame, Some(&id), &text);
    assert!(frame.ends_with("\n\n"));
    let body = &frame[..frame.len() - 2];
    assert!(!body.contains("\n\n"), "the frame ends early: {frame:?}");
    assert!(!body.contains('\r'));
    let mut data_lines = Vec::new();
    for line in body.split('\n') {
        if let Some(d) = line.strip_prefix("data: ") {
            data_lines.push(d);
        } else {
            assert!(line.starts_with("id: "), "a field the input made: {line:?}");
        }
    }
    let normalised = text.replace("\r\n", "\n").replace('\r', "\n");
    assert_eq!(data_lines.join("\n"), normalised);
});
