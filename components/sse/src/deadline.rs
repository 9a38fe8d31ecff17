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
use spin_executor::{push_waker_and_get_token, CancelOnDropToken};
use std::future::Future;
use std::pin::{pin, Pin};
use std::task::{Context, Poll};
use std::time::Duration;
use wasi::clocks::monotonic_clock;
use wasi::io::poll::Pollable;

/// `fut`'s output, or `None` when it is not ready within `timeout` (counted from
/// when `fut` is first found not ready: one that is ready at once costs no clock).
pub async fn within<F: Future>(fut: F, timeout: Duration) -> Option<F::Output> {
    match select(pin!(fut), Sleep::new(timeout)).await {
        Either::Left((output, _)) => Some(output),
        Either::Right(_) => None,
    }
}

/// A future ready `after` its first poll.
pub struct Sleep {
    after: Duration,
    /// The instant, taken from the clock at the first poll.
    until: Option<monotonic_clock::Instant>,
    /// The registered pollable; dropping it unregisters it.
    token: Option<CancelOnDropToken>,
}

impl Sleep {
    pub fn new(after: Duration) -> Self {
        Self {
            after,
            until: None,
            token: None,
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // spin-sdk's executor polls every future whenever any pollable is ready:
        // the clock decides, not the wake-up.
        let now = monotonic_clock::now();
        let nanos = u64::try_from(self.after.as_nanos()).unwrap_or(u64::MAX);
        let until = *self.until.get_or_insert(now.saturating_add(nanos));
        if now >= until {
            self.token = None;
            return Poll::Ready(());
        }
        let pollable = monotonic_clock::subscribe_instant(until);
        self.token = Some(push_waker_and_get_token(pollable, cx.waker().clone()).into());
        Poll::Pending
    }
}

/// A future ready when a WASI pollable is — or, as spin-sdk's executor polls every
/// future whenever any pollable is ready, possibly before: the caller checks again
/// what it waited for.
pub struct PollableReady {
    pollable: Option<Pollable>,
    /// The pollable registered with the executor; dropping it unregisters it.
    token: Option<CancelOnDropToken>,
}

impl PollableReady {
    pub fn new(pollable: Pollable) -> Self {
        Self {
            pollable: Some(pollable),
            token: None,
        }
    }
}

impl Future for PollableReady {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.pollable.take() {
            Some(pollable) => {
                let waker = cx.waker().clone();
                self.token = Some(push_waker_and_get_token(pollable, waker).into());
                Poll::Pending
            }
            None => {
                self.token = None;
                Poll::Ready(())
            }
        }
    }
}
