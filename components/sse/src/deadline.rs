//! Deadlines: a client that stops reading must not hold its stream (an instance, a
//! Redis connection, a lease) for ever, and one that stops sending a body must not
//! hold a publish request ([`within`]).
//!
//! A write waits only while the host's buffers and the socket's are full, which is
//! the stream's whole backlog: the relay reads the next batch from Redis only after
//! the last one was handed over, so nothing piles up in the component. The deadline
//! is a `wasi:clocks` pollable registered with spin-sdk's executor beside the body's
//! own, so whichever is ready first wins.

use futures::future::{select, Either};
use futures::{Sink, SinkExt};
use spin_executor::{push_waker_and_get_token, CancelOnDropToken};
use std::future::Future;
use std::pin::{pin, Pin};
use std::task::{Context, Poll};
use std::time::Duration;
use wasi::clocks::monotonic_clock;

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

/// Sends `chunk`, giving up after `timeout`.
pub async fn send_within<S: Sink<Vec<u8>> + Unpin>(
    body: &mut S,
    chunk: Vec<u8>,
    timeout: Duration,
) -> Sent {
    match within(body.send(chunk), timeout).await {
        Some(Ok(())) => Sent::Done,
        Some(Err(_)) => Sent::Gone,
        None => Sent::Stuck,
    }
}

/// `fut`'s output, or `None` when it is not ready within `timeout`.
pub async fn within<F: Future>(fut: F, timeout: Duration) -> Option<F::Output> {
    match select(pin!(fut), Sleep::new(timeout)).await {
        Either::Left((output, _)) => Some(output),
        Either::Right(_) => None,
    }
}

/// A future ready at a monotonic-clock instant.
struct Sleep {
    until: monotonic_clock::Instant,
    /// The registered pollable; dropping it unregisters it.
    token: Option<CancelOnDropToken>,
}

impl Sleep {
    fn new(after: Duration) -> Self {
        let nanos = u64::try_from(after.as_nanos()).unwrap_or(u64::MAX);
        Self {
            until: monotonic_clock::now().saturating_add(nanos),
            token: None,
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if monotonic_clock::now() >= self.until {
            self.token = None;
            return Poll::Ready(());
        }
        let pollable = monotonic_clock::subscribe_instant(self.until);
        self.token = Some(push_waker_and_get_token(pollable, cx.waker().clone()).into());
        Poll::Pending
    }
}
