//! The streaming loop: `XREAD BLOCK` from the Redis stream, frame, send, repeat.
//!
//! * Each read blocks for at most the keepalive interval; a read that returns nothing
//!   sends a keepalive comment, so idle connections stay open through proxies.
//! * Filtered-out entries are not sent, but the position still advances: when a batch
//!   ends on a filtered entry an id-only frame moves the client's `Last-Event-ID`.
//! * Under load a stream reads at most once per `linger_ms`: events that arrive
//!   within it go out in one write (one wake-up of the instance for all of them).
//! * A client that takes nothing for `send_timeout_seconds` ends its stream
//!   ([`crate::body`]); it resumes exactly with `Last-Event-ID`.
//! * The stream ends cleanly when `max_stream_seconds` is reached, when Redis fails
//!   (the client reconnects and resumes exactly), or when the client is gone. A
//!   Redis that hangs (a read that fails only after its whole block time) does not
//!   end it: keepalives go on and the stream carries on where it was.

use crate::body::{EventBody, Sent};
use crate::Opened;
use crm_events_contracts::config::SseConfig;
use crm_events_contracts::envelope::{
    auth_expired_event, connected_event, read_epoch_marker, reset_event, KIND_AUTH_EXPIRED,
    KIND_RESET,
};
use crm_events_contracts::http::EVENT_STREAM;
use crm_events_contracts::reply::{parse_xread, Entry};
use crm_events_contracts::spin_glue::{fields, now_seconds};
use crm_events_contracts::sse;
use crm_events_contracts::stream_id::{event_id, push_event_id, StreamId};
use spin_sdk::http::{OutgoingResponse, ResponseOutparam};
use std::time::{Duration, Instant};
use wasi::clocks::monotonic_clock;

/// Relayed events are counted in Redis at most this often (and at the end): one
/// round trip per client per batch would double the Redis load of a busy stream.
const COUNT_EVERY: Duration = Duration::from_secs(1);

/// One open stream.
pub struct Relay<'a> {
    config: &'a SseConfig,
    opened: Opened,
    /// The last stream id the client has been told about.
    position: StreamId,
    /// When the stream must end (`max_stream_seconds`), if ever.
    deadline: Option<Instant>,
    /// When the token expires, if it does.
    expiry: Option<Instant>,
    last_renewal: Instant,
    /// When the last read that found entries without waiting for them returned
    /// (`linger_ms` counts from it); `None` after a read that had to wait.
    last_batch: Option<Instant>,
    uncounted: u64,
    last_count: Instant,
    /// `XREAD` arguments that never change, made once.
    stream_key: String,
    read_count: String,
}

/// What one wake-up of the loop produced.
enum Step {
    /// Frames to send (possibly only a keepalive comment); go on.
    Send(String),
    /// Final frames to send; then the stream ends.
    End(String),
}

impl<'a> Relay<'a> {
    /// A relay for an admitted stream.
    pub fn new(config: &'a SseConfig, opened: Opened) -> Self {
        let now = Instant::now();
        let stream_key = opened.source.keys.stream.clone();
        Self {
            config,
            position: opened.start.after,
            expiry: expiry_instant(opened.expires_at, now),
            opened,
            deadline: (config.max_stream_seconds > 0)
                .then(|| now + Duration::from_secs(config.max_stream_seconds)),
            last_renewal: now,
            last_batch: None,
            uncounted: 0,
            last_count: now,
            stream_key,
            read_count: config.read_count.to_string(),
        }
    }

    /// Sends the headers and streams until the end.
    pub async fn run(mut self, out: ResponseOutparam, cors: &[(&'static str, String)]) {
        let Some(mut body) = send_head(out, cors) else {
            self.finish();
            return;
        };
        let timeout = Duration::from_secs(self.config.send_timeout_seconds);
        let mut chunk = self.first_frames();
        loop {
            match body.send_within(chunk.as_bytes(), timeout).await {
                Sent::Done => {}
                Sent::Gone => break,
                Sent::Stuck => {
                    self.count_slow_client();
                    break;
                }
            }
            match self.next_step() {
                Step::Send(frames) => chunk = frames,
                Step::End(frames) => {
                    let _ = body.send_within(frames.as_bytes(), timeout).await;
                    break;
                }
            }
        }
        self.finish();
        // Dropping the body finishes the response: the client gets what the host
        // and the socket still hold, then the end, and resumes from its last id.
    }

    /// The SSE id of a stream entry: the stream id with the epoch it belongs to.
    fn event_id(&self, id: StreamId) -> String {
        event_id(id, self.opened.epoch.as_deref())
    }

    /// `retry:`, the `connected` event carrying the start position (and the epoch), a
    /// `reset` event when the client's position is from another epoch of the stream,
    /// and a `gap` event when history the client asked for is gone.
    fn first_frames(&self) -> String {
        let common = &self.config.common;
        let position = self.event_id(self.position);
        let epoch = self.opened.epoch.as_deref();
        let mut frames = String::new();
        sse::retry(&mut frames, self.config.retry_ms);
        let connected = connected_event(&common.topic, &common.group, &position, epoch);
        sse::event(&mut frames, Some(&position), &connected);
        if let Some(reset) = &self.opened.start.reset {
            sse::named_event(&mut frames, KIND_RESET, None, reset);
        }
        if let Some(gap) = &self.opened.start.gap {
            sse::event(&mut frames, None, gap);
        }
        frames
    }

    /// Waits for the next entries (or the keepalive, or the deadline) and frames them.
    /// The clock is read twice per step, before and after the read (each reading is
    /// a call into the host).
    fn next_step(&mut self) -> Step {
        let now = self.linger(Instant::now()); // first: expiry and deadline after it
        self.renew_lease_if_due(now);
        if self.expiry.is_some_and(|e| e <= now) {
            let mut frames = String::new();
            let resume_from = self.event_id(self.position);
            sse::named_event(
                &mut frames,
                KIND_AUTH_EXPIRED,
                None,
                &auth_expired_event(&resume_from),
            );
            return Step::End(frames);
        }
        let Some(block) = self.block_time(now) else {
            return end("stream time limit reached; reconnect to resume");
        };
        let read = self.read(block);
        let waited = Instant::now().saturating_duration_since(now);
        let entries = match read {
            Ok(entries) => entries,
            // The read waited out its whole block time before failing: Redis hangs
            // (a host deadline gave up on it), it is not gone. Keep the stream and
            // read again from the same position; a reconnect would only meet 503s.
            Err(_) if waited >= block => Vec::new(),
            Err(e) => return end(&format!("{e}; reconnect to resume")),
        };
        let mut frames = String::with_capacity(frames_capacity(&entries));
        if entries.is_empty() {
            sse::comment(&mut frames, "keepalive");
        } else {
            // A read that had to wait for its entries found a quiet stream: the next
            // event is likely as far off, and lingering for it would only cost a
            // wake-up. A read answered at once found a busy one: linger.
            let returned = now + waited;
            let quiet = waited >= Duration::from_millis(self.config.linger_ms);
            self.last_batch = (!quiet).then_some(returned);
            self.frame(&entries, &mut frames, returned);
        }
        Step::Send(frames)
    }

    /// How long the next read may block: the keepalive, or less before the deadline
    /// or the token's expiry; `None` once the deadline has passed.
    fn block_time(&self, now: Instant) -> Option<Duration> {
        let keepalive = Duration::from_secs(self.config.keepalive_seconds);
        let until_expiry = self
            .expiry
            .map_or(keepalive, |e| e.saturating_duration_since(now));
        let block = keepalive.min(until_expiry);
        match self.deadline {
            None => Some(block),
            Some(d) => {
                let left = d.saturating_duration_since(now);
                (!left.is_zero()).then(|| block.min(left))
            }
        }
    }

    /// Waits out what is left of `linger_ms` since the last batch: what arrives
    /// meanwhile goes out in the next one, one wake-up and one write for all of it.
    /// After a read that waited for its entries (a quiet stream) nothing waits.
    /// Returns the time after the wait.
    fn linger(&self, now: Instant) -> Instant {
        let linger = Duration::from_millis(self.config.linger_ms);
        let Some(last) = self.last_batch else {
            return now;
        };
        let left = linger.saturating_sub(now.saturating_duration_since(last));
        if left.is_zero() {
            return now;
        }
        monotonic_clock::subscribe_duration(left.as_nanos() as u64).block();
        Instant::now()
    }

    /// One `XREAD BLOCK` after the current position, on the stream's Redis.
    fn read(&self, block: Duration) -> Result<Vec<Entry>, String> {
        let redis = self.opened.shard.as_ref().unwrap_or(&self.opened.redis);
        let reply = redis.run(
            "XREAD",
            &[
                "COUNT",
                &self.read_count,
                "BLOCK",
                &block.as_millis().max(1).to_string(),
                "STREAMS",
                &self.stream_key,
                &self.position.to_string(),
            ],
        );
        let items = reply.map_err(|e| e.to_string())?;
        parse_xread(items).map_err(|e| format!("stream error: {e}"))
    }

    /// Frames the entries that pass the filters; an id-only frame when the batch ends
    /// on a filtered one, so the client's `Last-Event-ID` still advances. An epoch
    /// marker of a new epoch (Redis lost data and the sidecar rebuilt the stream)
    /// goes to every client, whatever its filters, as a `reset` event; one of the
    /// epoch the stream is in (a tenant stream begun again) is passed over.
    fn frame(&mut self, entries: &[Entry], frames: &mut String, now: Instant) {
        let mut last_sent = None;
        let mut id = String::with_capacity(ID_CAPACITY);
        for entry in entries {
            match read_epoch_marker(&entry.envelope) {
                Some((epoch, reason)) if Some(&epoch) != self.opened.epoch.as_ref() => {
                    let before = self.event_id(self.position);
                    self.opened.epoch = Some(epoch.clone());
                    let reset = reset_event(Some(&before), &epoch, &reason);
                    let marker_id = self.event_id(entry.id);
                    sse::named_event(frames, KIND_RESET, Some(&marker_id), &reset);
                    last_sent = Some(entry.id);
                }
                Some(_) => {} // the epoch the stream is in already
                None if self.opened.filters.matches(&entry.envelope) => {
                    id.clear();
                    push_event_id(&mut id, entry.id, self.opened.epoch.as_deref());
                    sse::event_bytes(frames, Some(&id), &entry.envelope);
                    self.uncounted += 1;
                    last_sent = Some(entry.id);
                }
                None => {}
            }
        }
        let newest = entries[entries.len() - 1].id;
        if last_sent != Some(newest) {
            sse::id_only(frames, &self.event_id(newest));
        }
        self.position = newest;
        if now.saturating_duration_since(self.last_count) >= COUNT_EVERY {
            self.count_messages(now);
        }
    }

    /// Renews the client lease once per keepalive interval.
    fn renew_lease_if_due(&mut self, now: Instant) {
        let interval = Duration::from_secs(self.config.keepalive_seconds);
        if now.saturating_duration_since(self.last_renewal) >= interval {
            self.opened.lease.renew(&self.opened.redis);
            self.last_renewal = now;
        }
    }

    /// Adds the relayed events to `crm_events_messages_total` (best effort).
    fn count_messages(&mut self, now: Instant) {
        self.last_count = now;
        if self.uncounted > 0 {
            let key = self.config.common.keys.messages_total();
            let n = std::mem::take(&mut self.uncounted).to_string();
            let _ = self.opened.redis.run("INCRBY", &[&key, &n]);
        }
    }

    /// Counts a stream ended because its client stopped reading (best effort).
    fn count_slow_client(&self) {
        let key = self.config.common.keys.slow_clients_total();
        let _ = self.opened.redis.run("INCR", &[&key]);
    }

    /// Counts what is left and gives the lease back.
    fn finish(mut self) {
        self.count_messages(Instant::now());
        self.opened.lease.release(&self.opened.redis);
    }
}

/// The instant of a token's `exp` (seconds since the epoch) by this clock.
fn expiry_instant(expires_at: Option<u64>, now: Instant) -> Option<Instant> {
    // `exp` is at most year 9999 (the verifier refuses later ones), but the monotonic
    // clock may not reach that far: no expiry timer then, rather than a panic.
    expires_at
        .and_then(|exp| now.checked_add(Duration::from_secs(exp.saturating_sub(now_seconds()))))
}

/// Room for an event id: 20 + 1 + 20 digits, the separator and a 32-byte epoch.
const ID_CAPACITY: usize = 80;

/// Room for a batch's frames (`id:`, `data:`, the envelope and line ends each), so
/// framing it allocates once.
fn frames_capacity(entries: &[Entry]) -> usize {
    let per_frame = ID_CAPACITY + 16;
    entries
        .iter()
        .map(|e| e.envelope.len() + per_frame)
        .sum::<usize>()
        + 32
}

/// A step that ends the stream with a comment saying why.
fn end(why: &str) -> Step {
    let mut frames = String::new();
    sse::comment(&mut frames, why);
    Step::End(frames)
}

/// Sends `200 text/event-stream` and returns the body to stream into.
fn send_head(out: ResponseOutparam, cors: &[(&'static str, String)]) -> Option<EventBody> {
    let mut headers = cors.to_vec();
    headers.extend([
        ("content-type", EVENT_STREAM.to_string()),
        ("cache-control", "no-cache".to_string()),
        ("x-accel-buffering", "no".to_string()),
    ]);
    let response = OutgoingResponse::new(fields(&headers));
    let _ = response.set_status_code(200);
    let body = response.body().ok()?;
    out.set(response);
    EventBody::new(body)
}
