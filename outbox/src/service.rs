//! The publisher process: migrations, the lease, and the tasks beside it.
//!
//! Several publishers may run (rolling deploys, HA). Exactly one *leads*: the one
//! whose session holds the advisory lock [`store::LEASE_LOCK`]; the others are
//! standbys that try for it every `OUTBOX_STANDBY_POLL_MS`. A leader that is killed
//! loses its session and so its lock, and a standby takes over within that poll
//! interval; a leader stopped with SIGTERM settles its in-flight batches and unlocks
//! first, so a rolling deploy publishes nothing twice.
//!
//! Beside the lease loop run the backlog statistics (`/metrics`), a Kafka probe
//! (`/readyz`) and, while leading, retention.

use crate::config::PublisherConfig;
use crate::db::{self, Session};
use crate::pipeline::{End, Marker, Pipeline};
use crate::store;
use crate::telemetry::{Check, Telemetry};
use anyhow::{Context, Result};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, Producer};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::Config;

/// The application name the publisher's sessions carry (`pg_stat_activity`).
pub const APPLICATION_NAME: &str = "crm-events-outbox";

/// Runs the publisher until `shutdown` resolves.
pub async fn run(
    config: PublisherConfig,
    telemetry: Arc<Telemetry>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    tokio::pin!(shutdown);
    let pg = db::config(&config.database.database_url, APPLICATION_NAME)?;
    let key_by = config
        .key_by()
        .map_err(|e| anyhow::anyhow!("OUTBOX_KEY: {e}"))?;
    if config.migrate && !migrate_when_reachable(&pg, &telemetry, &mut shutdown).await? {
        return Ok(());
    }
    let config = Arc::new(config);
    let background = [
        tokio::spawn(watch_backlog(pg.clone(), telemetry.clone())),
        tokio::spawn(probe_kafka(config.clone(), telemetry.clone())),
        tokio::spawn(retention_loop(
            pg.clone(),
            config.clone(),
            telemetry.clone(),
        )),
    ];
    let result = lease_loop(&config, &pg, &telemetry, key_by, &mut shutdown).await;
    background.iter().for_each(|t| t.abort());
    result
}

/// Applies the migrations once Postgres answers; `false` when shut down first.
async fn migrate_when_reachable(
    pg: &Config,
    telemetry: &Telemetry,
    shutdown: &mut Pin<&mut impl Future<Output = ()>>,
) -> Result<bool> {
    let Some(mut session) = connect(pg, telemetry, shutdown).await else {
        return Ok(false);
    };
    let applied = crate::migrate::apply(&mut session.client).await?;
    tracing::info!(?applied, "migrations applied");
    Ok(true)
}

/// Connects, counting and logging each failure; `None` when shut down first.
async fn connect(
    pg: &Config,
    telemetry: &Telemetry,
    shutdown: &mut Pin<&mut impl Future<Output = ()>>,
) -> Option<Session> {
    let on_error = |e: &anyhow::Error| {
        telemetry.error("postgres");
        telemetry.set_postgres(Check::Failed(format!("{e:#}")));
        tracing::warn!(error = format!("{e:#}"), "cannot reach Postgres yet");
    };
    Session::connect_retrying(pg, on_error, shutdown.as_mut()).await
}

/// Connect → wait for the lease → lead, again after every loss, until shutdown.
async fn lease_loop(
    config: &PublisherConfig,
    pg: &Config,
    telemetry: &Telemetry,
    key_by: crm_events_contracts::outbox::KeyBy,
    shutdown: &mut Pin<&mut impl Future<Output = ()>>,
) -> Result<()> {
    loop {
        let Some(session) = connect(pg, telemetry, shutdown).await else {
            return Ok(());
        };
        match wait_for_lease(config, &session, shutdown).await {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "lost the Postgres session while standing by");
                continue;
            }
        }
        session.listen().await?;
        telemetry.leader.set(1);
        tracing::info!("leading: publishing the outbox");
        let Some(marker) = start_marker(config, pg, telemetry, shutdown).await else {
            return Ok(());
        };
        let end = Pipeline::new(config, telemetry, &session, marker, key_by.clone())?
            .run(shutdown)
            .await;
        telemetry.leader.set(0);
        match end {
            End::Shutdown => {
                let _ = store::release_lease(&session.client).await;
                tracing::info!("stopped cleanly; lease released");
                return Ok(());
            }
            End::Lost(why) => {
                telemetry.error("postgres");
                tracing::warn!(why, "lost the lease; reconnecting");
            }
        }
    }
}

/// The marker and its sessions; `None` when shut down first.
async fn start_marker(
    config: &PublisherConfig,
    pg: &Config,
    telemetry: &Telemetry,
    shutdown: &mut Pin<&mut impl Future<Output = ()>>,
) -> Option<Marker> {
    loop {
        let mut sessions = Vec::new();
        for _ in 0..config.mark_sessions {
            sessions.push(connect(pg, telemetry, shutdown).await?);
        }
        match Marker::start(sessions).await {
            Ok(m) => return Some(m),
            Err(e) => tracing::warn!(error = %e, "cannot set up the marking sessions; again"),
        }
    }
}

/// Stands by until the lease is ours (`true`), or shutdown (`false`).
async fn wait_for_lease(
    config: &PublisherConfig,
    session: &Session,
    shutdown: &mut Pin<&mut impl Future<Output = ()>>,
) -> Result<bool, tokio_postgres::Error> {
    let mut announced = false;
    loop {
        if store::try_lease(&session.client).await? {
            return Ok(true);
        }
        if !announced {
            tracing::info!("standing by: another publisher leads");
            announced = true;
        }
        tokio::select! {
            _ = shutdown.as_mut() => return Ok(false),
            _ = tokio::time::sleep(Duration::from_millis(config.standby_poll_ms)) => {}
        }
    }
}

/// Every 5 s: the backlog for `/metrics`, and whether Postgres answers.
async fn watch_backlog(pg: Config, telemetry: Arc<Telemetry>) {
    let mut session: Option<Session> = None;
    loop {
        if session.as_ref().is_none_or(|s| !s.is_alive()) {
            session = Session::connect(&pg).await.ok();
        }
        let result = match &session {
            Some(s) => store::backlog(&s.client).await.map_err(|e| e.to_string()),
            None => Err("cannot connect".to_string()),
        };
        match result {
            Ok(backlog) => {
                telemetry.set_backlog(backlog);
                telemetry.set_postgres(Check::Ok);
            }
            Err(e) => telemetry.set_postgres(Check::Failed(e)),
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// Every 5 s: whether Kafka answers with the topic's metadata.
async fn probe_kafka(config: Arc<PublisherConfig>, telemetry: Arc<Telemetry>) {
    let mut client = ClientConfig::new();
    for (k, v) in config.kafka.properties_over(Vec::new()) {
        client.set(k, v);
    }
    let probe: BaseProducer = match client.create() {
        Ok(p) => p,
        Err(e) => return telemetry.set_kafka(Check::Failed(e.to_string())),
    };
    let probe = Arc::new(probe);
    loop {
        let (p, topic) = (probe.clone(), config.kafka.topic.clone());
        let check = tokio::task::spawn_blocking(move || topic_check(&p, &topic))
            .await
            .unwrap_or_else(|e| Check::Failed(e.to_string()));
        telemetry.set_kafka(check);
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

fn topic_check(producer: &BaseProducer, topic: &str) -> Check {
    match producer
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(3))
    {
        Ok(meta) => match meta.topics().first().and_then(|t| t.error()) {
            None => Check::Ok,
            Some(e) => Check::Failed(format!(
                "topic {topic}: {:?}",
                rdkafka::types::RDKafkaErrorCode::from(e)
            )),
        },
        Err(e) => Check::Failed(e.to_string()),
    }
}

/// While leading, every `OUTBOX_RETENTION_INTERVAL_SECONDS`: one retention pass.
async fn retention_loop(pg: Config, config: Arc<PublisherConfig>, telemetry: Arc<Telemetry>) {
    let every = Duration::from_secs(config.retention_interval_seconds);
    loop {
        tokio::time::sleep(every).await;
        if !telemetry.is_leader() {
            continue;
        }
        let pass = async {
            let session = Session::connect(&pg).await?;
            retention_pass(&session.client, &config, &telemetry).await
        };
        if let Err(e) = pass.await {
            telemetry.error("postgres");
            tracing::warn!(
                error = format!("{e:#}"),
                "retention pass failed; next one in {every:?}"
            );
        }
    }
}

/// Deletes published rows older than the retention and expired idempotency keys, in
/// batches of `OUTBOX_RETENTION_BATCH`, until none is left; returns the counts.
pub async fn retention_pass(
    client: &tokio_postgres::Client,
    config: &PublisherConfig,
    telemetry: &Telemetry,
) -> Result<(u64, u64)> {
    let batch = config.retention_batch;
    let mut rows = 0;
    if config.retention_days > 0.0 {
        loop {
            let n = store::delete_published(client, config.retention_days, batch)
                .await
                .context("deleting published rows")?;
            rows += n;
            if n < batch as u64 {
                break;
            }
        }
    }
    let mut keys = 0;
    loop {
        let n = store::delete_expired_keys(client, batch)
            .await
            .context("deleting expired idempotency keys")?;
        keys += n;
        if n < batch as u64 {
            break;
        }
    }
    let deleted = &telemetry.retention_deleted;
    deleted.with_label_values(&["outbox_events"]).inc_by(rows);
    deleted
        .with_label_values(&["idempotency_keys"])
        .inc_by(keys);
    if rows + keys > 0 {
        tracing::info!(
            rows,
            keys,
            "retention deleted published rows and expired keys"
        );
    }
    Ok((rows, keys))
}
