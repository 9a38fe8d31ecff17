//! The streaming loop: `XREAD BLOCK` from the Redis stream, frame, send, repeat.
//!
//! * Each read blocks for at most the keepalive interval; a read that returns nothing
//!   sends a keepalive comment, so idle connections stay open through proxies.
//! * Filtered-out entries are not sent, but the position still advances: when a batch
//!   ends on a filtered entry an id-only frame moves the client's `Last-Event-ID`.
//! * The stream ends cleanly when `max_stream_seconds` is reached, when Redis fails
//!   (the client reconnects and resumes exactly), or when the client is gone.

use crate::lease::Lease;
use crm_events_contracts::config::SseConfig;
use crm_events_contracts::envelope::connected_event;
use crm_events_contracts::reply::parse_xread;
use crm_events_contracts::request::Filters;
use crm_events_contracts::resume::Start;
use crm_events_contracts::spin_glue::{fields, Redis};
use crm_events_contracts::sse;
use futures::SinkExt;
use spin_sdk::http::{OutgoingResponse, ResponseOutparam};
use std::time::{Duration, Instant};

/// One open stream.
pub struct Relay<'a> {
    /// Settings.
    pub config: &'a SseConfig,
    /// Connection for counters and the lease.
    pub control: &'a Redis,
    /// Connection used only for `XREAD BLOCK`.
    pub reader: &'a Redis,
    /// The client's filters.
    pub filters: &'a Filters,
    /// The client's lease, released when the stream ends.
    pub lease: Lease,
}

impl Relay<'_> {
    /// Adds `n` to `crm_events_messages_total` (best effort) and resets it.
    fn count_messages(&self, n: &mut u64) {
        if *n > 0 {
            let key = self.config.common.keys.messages_total();
            let _ = self.control.run("INCRBY", &[&key, &n.to_string()]);
            *n = 0;
        }
    }

    /// Sends the headers and streams until the end.
    pub async fn run(self, out: ResponseOutparam, headers: &[(&str, &str)], start: Start) {
        let response = OutgoingResponse::new(fields(headers));
        let _ = response.set_status_code(200);
        let mut body = response.take_body();
        out.set(response);

        let config = self.config;
        let keys = &config.common.keys;
        let stream_key = keys.stream();
        let mut position = start.after;

        let mut first = String::new();
        sse::retry(&mut first, config.retry_ms);
        let connected = connected_event(
            &config.common.topic,
            &config.common.group,
            &position.to_string(),
        );
        sse::event(&mut first, Some(&position.to_string()), &connected);
        if let Some(gap) = &start.gap {
            sse::event(&mut first, None, gap);
        }

        let opened = Instant::now();
        let keepalive = Duration::from_secs(config.keepalive_seconds);
        let deadline = (config.max_stream_seconds > 0)
            .then(|| opened + Duration::from_secs(config.max_stream_seconds));
        let mut last_renewal = Instant::now();
        // Relayed events are counted in Redis at most once a second (and at the end),
        // not on every read: one round trip per client per batch would double the
        // Redis load of a busy stream.
        let mut uncounted = 0u64;
        let mut last_count = Instant::now();
        let count = config.read_count.to_string();

        let mut chunk = first;
        loop {
            if !chunk.is_empty()
                && body
                    .send(std::mem::take(&mut chunk).into_bytes())
                    .await
                    .is_err()
            {
                break; // The client is gone.
            }
            if last_renewal.elapsed() >= keepalive {
                self.lease.renew(self.control);
                last_renewal = Instant::now();
            }
            let mut block = keepalive;
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    sse::comment(&mut chunk, "stream time limit reached; reconnect to resume");
                    let _ = body.send(chunk.into_bytes()).await;
                    break;
                }
                block = block.min(left);
            }
            let block_ms = block.as_millis().max(1).to_string();
            let from = position.to_string();
            let reply = self.reader.run(
                "XREAD",
                &[
                    "COUNT",
                    &count,
                    "BLOCK",
                    &block_ms,
                    "STREAMS",
                    &stream_key,
                    &from,
                ],
            );
            let entries = match reply.map(|r| parse_xread(&r)) {
                Ok(Ok(entries)) => entries,
                Ok(Err(e)) => {
                    sse::comment(
                        &mut chunk,
                        &format!("stream error: {e}; reconnect to resume"),
                    );
                    let _ = body.send(chunk.into_bytes()).await;
                    break;
                }
                Err(e) => {
                    sse::comment(&mut chunk, &format!("{e}; reconnect to resume"));
                    let _ = body.send(chunk.into_bytes()).await;
                    break;
                }
            };
            if entries.is_empty() {
                sse::comment(&mut chunk, "keepalive");
                continue;
            }
            let mut sent = 0u64;
            let mut last_sent = None;
            for entry in &entries {
                if self.filters.matches(&entry.envelope) {
                    let id = entry.id.to_string();
                    sse::event(
                        &mut chunk,
                        Some(&id),
                        &String::from_utf8_lossy(&entry.envelope),
                    );
                    sent += 1;
                    last_sent = Some(entry.id);
                }
            }
            let newest = entries[entries.len() - 1].id;
            if last_sent != Some(newest) {
                sse::id_only(&mut chunk, &newest.to_string());
            }
            position = newest;
            uncounted += sent;
            if uncounted > 0 && last_count.elapsed() >= Duration::from_secs(1) {
                self.count_messages(&mut uncounted);
                last_count = Instant::now();
            }
        }
        self.count_messages(&mut uncounted);
        self.lease.release(self.control);
        // Dropping the body finishes the response.
        drop(body);
    }
}
