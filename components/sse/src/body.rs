//! The stream's response body, written straight to the host's output stream.
//!
//! spin-sdk's body sink makes five calls into the host per chunk (check-write,
//! write, check-write, flush, check-write: it waits for each flush to complete), and
//! a deadline beside it a sixth (the clock). A chunk the host has room for needs
//! three here: check-write, write, flush. Only when the host has no room — its
//! buffers and the socket's are full: the client is not reading — does a send wait,
//! on the stream's pollable and the deadline together ([`crate::deadline`]); the
//! next send after a flush that has not completed waits the same way.

use crate::deadline::{PollableReady, Sleep};
use futures::future::{select, Either};
use spin_sdk::http::OutgoingBody;
use std::pin::pin;
use std::time::Duration;
use wasi::io::streams::OutputStream;

/// How a send ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    /// The chunk is with the host.
    Done,
    /// The client is gone (the body is closed).
    Gone,
    /// The client did not take the chunk within the deadline.
    Stuck,
}

/// An open response body; dropping it finishes the response.
pub struct EventBody {
    /// The body's stream (dropped before the body is finished).
    stream: Option<OutputStream>,
    body: Option<OutgoingBody>,
}

impl EventBody {
    /// The body of a response whose head is set; `None` when it was taken already.
    pub fn new(body: OutgoingBody) -> Option<Self> {
        let stream = body.write().ok()?;
        Some(Self {
            stream: Some(stream),
            body: Some(body),
        })
    }

    /// Sends `chunk`, giving up when the host has had no room for it for `timeout`.
    pub async fn send_within(&mut self, chunk: &[u8], timeout: Duration) -> Sent {
        let Some(stream) = self.stream.as_ref() else {
            return Sent::Gone;
        };
        let mut deadline = pin!(Sleep::new(timeout));
        let mut rest = chunk;
        loop {
            match stream.check_write() {
                Ok(0) => {
                    let room = PollableReady::new(stream.subscribe());
                    if let Either::Right(_) = select(room, deadline.as_mut()).await {
                        return Sent::Stuck;
                    }
                }
                Ok(room) => {
                    let room = usize::try_from(room).unwrap_or(usize::MAX);
                    let (now, later) = rest.split_at(rest.len().min(room));
                    if stream.write(now).is_err() {
                        return Sent::Gone;
                    }
                    rest = later;
                    if rest.is_empty() {
                        return match stream.flush() {
                            Ok(()) => Sent::Done,
                            Err(_) => Sent::Gone,
                        };
                    }
                }
                Err(_) => return Sent::Gone,
            }
        }
    }
}

impl Drop for EventBody {
    fn drop(&mut self) {
        drop(self.stream.take());
        if let Some(body) = self.body.take() {
            let _ = OutgoingBody::finish(body, None);
        }
    }
}
