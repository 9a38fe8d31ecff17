//! Connections to Postgres: one [`Session`] per publisher, which holds the lease,
//! receives the insert notifications and runs the publisher's statements.
//!
//! tokio-postgres delivers `NOTIFY` messages through the connection object, so the
//! session drives it in a task of its own: notifications wake a [`Notify`], and the
//! end of the connection (Postgres restarted, network cut) flips a watch the
//! publisher selects on — a publisher whose session ends has lost its lease and
//! must stop at once.

use anyhow::{Context, Result};
use crm_events_native::backoff::Backoff;
use crm_events_native::logging::redact_url as redact;
use futures::StreamExt;
use postgres_openssl::MakeTlsConnector;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client, Config};

/// A connection with its notifications and its liveness.
pub struct Session {
    /// The client; statements may be issued concurrently (they are pipelined).
    pub client: Client,
    notified: Arc<Notify>,
    alive: watch::Receiver<bool>,
    driver: JoinHandle<()>,
}

/// The connection settings of `url`, with timeouts and keepalives suited to a
/// long-lived publisher.
pub fn config(url: &str, application: &str) -> Result<Config> {
    let mut config: Config = url
        .parse()
        .with_context(|| format!("DATABASE_URL {} is not a Postgres URL", redact(url)))?;
    config
        .application_name(application)
        .connect_timeout(Duration::from_secs(5))
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30));
    Ok(config)
}

fn tls() -> Result<MakeTlsConnector> {
    let builder = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls())?;
    Ok(MakeTlsConnector::new(builder.build()))
}

impl Session {
    /// Connects once.
    pub async fn connect(config: &Config) -> Result<Self> {
        let (client, mut connection) = config.connect(tls()?).await?;
        let notified = Arc::new(Notify::new());
        let (alive_tx, alive) = watch::channel(true);
        let wake = notified.clone();
        let driver = tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(_)) => wake.notify_one(),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "Postgres connection ended");
                        break;
                    }
                }
            }
            let _ = alive_tx.send(false);
        });
        Ok(Self {
            client,
            notified,
            alive,
            driver,
        })
    }

    /// Connects, retrying with backoff until it works or `give_up` resolves.
    pub async fn connect_retrying(
        config: &Config,
        on_error: impl Fn(&anyhow::Error),
        give_up: impl std::future::Future<Output = ()>,
    ) -> Option<Self> {
        tokio::pin!(give_up);
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            match Self::connect(config).await {
                Ok(s) => return Some(s),
                Err(e) => {
                    on_error(&e);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = &mut give_up => return None,
                    }
                }
            }
        }
    }

    /// `LISTEN`s on the outbox channel.
    pub async fn listen(&self) -> Result<()> {
        let channel = crm_events_contracts::outbox::NOTIFY_CHANNEL;
        self.client
            .batch_execute(&format!("LISTEN {channel}"))
            .await
            .context("LISTEN")
    }

    /// Resolves when a notification arrived (at most one is remembered).
    pub async fn notified(&self) {
        self.notified.notified().await
    }

    /// Whether the connection still runs.
    pub fn is_alive(&self) -> bool {
        *self.alive.borrow()
    }

    /// Resolves when the connection has ended.
    pub async fn ended(&self) {
        let mut alive = self.alive.clone();
        let _ = alive.wait_for(|a| !a).await;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_the_logs() {
        let e = config("not a url", "x").unwrap_err().to_string();
        assert!(e.contains("DATABASE_URL"), "{e}");
        let e = config("postgres://u:s3cret@db/crm?bogus=1", "x").unwrap_err();
        assert!(!format!("{e:#}").contains("s3cret"), "{e:#}");
    }
}
