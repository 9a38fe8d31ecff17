//! Waiting for a condition by polling it: what the tests and benchmarks do instead of
//! sleeping for a guessed time.

use std::future::Future;
use std::time::Duration;

/// Polls `check` every 5 ms until it is true; fails naming `what` after `timeout`.
pub async fn until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}
