//! An SSE client for tests and benchmarks: `reqwest` for HTTP, `eventsource-stream` (a WHATWG
//! parser) for the events, and the raw text kept beside them for what a parser
//! does not surface (comments, id-only frames).

use eventsource_stream::{Event, Eventsource};
use futures::{Stream, StreamExt};
use serde_json::Value;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Events = Pin<Box<dyn Stream<Item = Result<Event, String>> + Send>>;

/// An open stream.
pub struct SseClient {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    events: Events,
    raw: Arc<Mutex<String>>,
}

impl SseClient {
    /// GETs `url` with extra headers; panics unless the answer is 200 event-stream.
    pub async fn connect(url: &str, headers: &[(&str, &str)]) -> SseClient {
        let mut req = reqwest::Client::new()
            .get(url)
            .header("accept", "text/event-stream");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("connect");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        assert_eq!(status, 200, "stream refused: {:?}", resp.text().await);
        let raw = Arc::new(Mutex::new(String::new()));
        let tee = raw.clone();
        let events = resp
            .bytes_stream()
            .inspect(move |chunk| {
                if let Ok(bytes) = chunk {
                    tee.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(bytes));
                }
            })
            .eventsource()
            .map(|r| r.map_err(|e| e.to_string()));
        SseClient {
            status,
            headers,
            events: Box::pin(events),
            raw,
        }
    }

    /// The next event, or None when the stream ends or `timeout` passes.
    pub async fn next(&mut self, timeout: Duration) -> Option<Event> {
        match tokio::time::timeout(timeout, self.events.next()).await {
            Ok(Some(Ok(e))) => Some(e),
            Ok(Some(Err(e))) => panic!("SSE parse error: {e}"),
            Ok(None) | Err(_) => None,
        }
    }

    /// The next event's JSON, with its id.
    pub async fn next_json(&mut self, timeout: Duration) -> Option<(String, Value)> {
        let e = self.next(timeout).await?;
        let v = serde_json::from_str(&e.data).unwrap_or_else(|err| {
            panic!("event data is not one JSON document ({err}): {:?}", e.data)
        });
        Some((e.id, v))
    }

    /// The next `n` domain events (connected and gap events are skipped).
    pub async fn domain_events(&mut self, n: usize, timeout: Duration) -> Vec<(String, Value)> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some((id, v)) = self.next_json(left).await else {
                panic!("got {} of {n} events before the timeout", out.len());
            };
            if v["kind"] == "domain_event" {
                out.push((id, v));
            }
        }
        out
    }

    /// The ids of the next `n` domain events.
    pub async fn domain_event_ids(&mut self, n: usize, timeout: Duration) -> Vec<String> {
        let events = self.domain_events(n, timeout).await;
        events.into_iter().map(|(id, _)| id).collect()
    }

    /// The Redis stream ids of the next `n` domain events (their SSE ids without the
    /// epoch), to compare with what a test wrote.
    pub async fn domain_stream_ids(&mut self, n: usize, timeout: Duration) -> Vec<String> {
        let ids = self.domain_event_ids(n, timeout).await;
        ids.iter().map(|id| stream_id(id).to_string()).collect()
    }

    /// Everything received so far, as text.
    pub fn raw(&self) -> String {
        self.raw.lock().unwrap().clone()
    }

    /// Waits until the raw text satisfies `check`, reading (and discarding) events.
    pub async fn wait_raw(&mut self, timeout: Duration, check: impl Fn(&str) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if check(&self.raw()) {
                return true;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            // Comments and id-only frames produce no event; poll in short slices.
            let _ = self.next(left.min(Duration::from_millis(100))).await;
        }
    }
}

/// The Redis stream id in an SSE event id (`<ms>-<seq>.<epoch>`).
pub fn stream_id(event_id: &str) -> &str {
    event_id.split('.').next().unwrap_or(event_id)
}
