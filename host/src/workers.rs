//! Per-core workers: connections served on threads of their own, each with a
//! single-threaded tokio runtime, as nginx spreads connections over its workers.
//!
//! On tokio's work-stealing runtime every wake-up of a task may wake an idle sibling
//! thread to steal it (a futex call, then a search of the other queues). An open SSE
//! stream wakes two tasks per event it delivers — its instance, then its HTTP
//! connection — so on the tenant workload that machinery took about a sixth of the
//! host's time (docs/src/benchmarks.md, "Fourth round"). A connection handed to a
//! worker lives there whole: its HTTP task and its instance's task run on one thread
//! and wake each other without a system call. What instances share across workers (a
//! tail of a Redis stream, the shared Redis connection) still wakes them from its own
//! thread, once per read.
//!
//! The listener stays on the caller's runtime: it accepts, admits, and hands each
//! admitted socket to the next worker in turn.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::mpsc;

/// What a worker is asked to start: a future built on the worker's own thread (so
/// sockets and timers it makes register with the worker's runtime).
type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// The worker threads; dropping this stops them (and what they serve).
pub struct Workers {
    queues: Vec<mpsc::UnboundedSender<Job>>,
    next: AtomicUsize,
}

impl Workers {
    /// Starts `count` workers (at least one).
    pub fn start(count: usize) -> std::io::Result<Self> {
        let queues = (0..count.max(1))
            .map(start_worker)
            .collect::<std::io::Result<_>>()?;
        Ok(Self {
            queues,
            next: AtomicUsize::new(0),
        })
    }

    /// Runs the future `make` builds on the next worker, in turn. Returns false when
    /// the worker has stopped.
    pub fn spawn<F, Fut>(&self, make: F) -> bool
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.queues.len();
        let job: Job = Box::new(move || Box::pin(make()));
        self.queues[i].send(job).is_ok()
    }
}

/// One worker thread: runs each job it is sent as a task of its runtime, until the
/// queue closes.
fn start_worker(index: usize) -> std::io::Result<mpsc::UnboundedSender<Job>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (sender, mut jobs) = mpsc::unbounded_channel::<Job>();
    std::thread::Builder::new()
        .name(format!("crm-events-worker-{index}"))
        .spawn(move || {
            runtime.block_on(async {
                while let Some(job) = jobs.recv().await {
                    tokio::spawn(job());
                }
            });
        })?;
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Jobs go to the workers in turn, each on a thread of its own.
    #[tokio::test]
    async fn jobs_are_spread_over_the_workers_in_turn() {
        let workers = Workers::start(2).unwrap();
        let (sender, mut names) = mpsc::unbounded_channel();
        for _ in 0..4 {
            let sender = sender.clone();
            assert!(workers.spawn(move || async move {
                let name = std::thread::current().name().unwrap_or("").to_string();
                sender.send(name).unwrap();
            }));
        }
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(names.recv().await.unwrap());
        }
        seen.sort();
        assert_eq!(
            seen,
            [
                "crm-events-worker-0",
                "crm-events-worker-0",
                "crm-events-worker-1",
                "crm-events-worker-1"
            ]
        );
    }
}
