//! The pipeline: consume → batch → write → commit, and a graceful stop.
//!
//! The consumer task builds batches of up to `BATCH_MAX` events, or whatever has
//! arrived `BATCH_LINGER_MS` after a batch's first event. A channel of two batches
//! carries them to the writer task, so one batch is written while the next fills.
//! When Redis is down the writer holds its batch and retries; the channel fills and
//! the consumer stops reading Kafka until Redis is back: nothing is dropped, nothing
//! committed early.
//!
//! On shutdown (SIGTERM/SIGINT) the consumer stops, the open batch is written, the
//! offsets are committed synchronously, and `run` returns, all within
//! `SHUTDOWN_TIMEOUT_SECONDS`. A batch that cannot be written by then is left
//! uncommitted, so the next start reads it again.

use crate::batch::{Batch, Event};
use crate::config::RelayConfig;
use crate::consumer::{self, RelayConsumer};
use crate::telemetry::Telemetry;
use crate::writer::{self, Writer};
use anyhow::{Context, Result};
use crm_events_contracts::keys::Keys;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use redis::aio::ConnectionManager;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Runs the relay until `shutdown` resolves.
pub async fn run(
    config: RelayConfig,
    telemetry: Arc<Telemetry>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    tokio::pin!(shutdown);
    let keys = Keys::new(&config.key_prefix);
    let conn = tokio::select! {
        c = writer::connect(&config.redis_url, None) => c?,
        _ = &mut shutdown => return Ok(()),
    };
    telemetry.set_redis_ok(true);
    tracing::info!(redis = %redact(&config.redis_url), "connected to Redis");

    let consumer = Arc::new(
        consumer::create(
            &config.kafka_properties(),
            &config.redis_url,
            keys.clone(),
            telemetry.clone(),
        )
        .context("creating the Kafka consumer")?,
    );
    consumer
        .subscribe(&[&config.kafka_topic])
        .with_context(|| format!("subscribing to {}", config.kafka_topic))?;
    tracing::info!(brokers = %config.kafka_brokers, topic = %config.kafka_topic, group = %config.kafka_group, "consuming");

    let (stop_tx, stop_rx) = watch::channel(false);
    let heartbeat = tokio::spawn(heartbeat_loop(
        conn.clone(),
        keys.clone(),
        telemetry.clone(),
        config.heartbeat_ttl_seconds,
        stop_rx,
    ));

    let give_up_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let (tx, rx) = mpsc::channel::<Batch>(2);
    // The writer's own connection: WATCH is per connection.
    let writer_conn = writer::connect(&config.redis_url, None).await?;
    let writer_task = tokio::spawn(write_loop(
        rx,
        writer_conn,
        consumer.clone(),
        Writer::new(keys.clone(), &config.kafka_topic, config.stream_maxlen),
        config.kafka_topic.clone(),
        telemetry.clone(),
        give_up_at.clone(),
    ));

    let max = config.batch_max as usize;
    let mut batch = Batch::with_capacity(max);
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut writer_gone = false;
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            _ = sleep_until(deadline), if deadline.is_some() => {
                deadline = None;
                if tx.send(std::mem::replace(&mut batch, Batch::with_capacity(max))).await.is_err() {
                    writer_gone = true;
                    break;
                }
            }
            msg = consumer.recv() => match msg {
                Ok(m) => {
                    telemetry.consumed.inc();
                    if telemetry.has_kafka_error() {
                        telemetry.set_kafka_error(None);
                    }
                    batch.events.push(Event::from_message(&m, config.max_value_bytes));
                    if batch.len() == 1 {
                        deadline = Some(tokio::time::Instant::now() + config.linger());
                    }
                    if batch.len() >= max {
                        deadline = None;
                        if tx.send(std::mem::replace(&mut batch, Batch::with_capacity(max))).await.is_err() {
                            writer_gone = true;
                            break;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Kafka receive error");
                    telemetry.errors.with_label_values(&["kafka"]).inc();
                    telemetry.set_kafka_error(Some(e.to_string()));
                }
            }
        }
    }

    // Graceful stop: write what was read, commit, leave.
    let timeout = Duration::from_secs(config.shutdown_timeout_seconds);
    *give_up_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + timeout);
    tracing::info!(pending = batch.len(), "stopping: writing the last batch");
    if !writer_gone && !batch.is_empty() {
        let _ = tokio::time::timeout(timeout, tx.send(batch)).await;
    }
    drop(tx);
    let written = tokio::time::timeout(timeout + Duration::from_secs(1), writer_task).await;
    let _ = stop_tx.send(true);
    let _ = heartbeat.await;
    match written {
        Ok(Ok(Ok(()))) => {
            if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                // Nothing consumed since the last commit, or the group is gone:
                // the watermark in Redis is the source of truth either way.
                tracing::debug!(error = %e, "final commit");
            }
            tracing::info!("stopped cleanly");
            Ok(())
        }
        Ok(Ok(Err(e))) => Err(e).context("writer stopped with a batch it could not write (it was not committed and will be read again)"),
        Ok(Err(e)) => Err(e).context("writer task failed"),
        Err(_) => anyhow::bail!("the last batch did not reach Redis within {timeout:?}; it was not committed and will be read again"),
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn write_loop(
    mut rx: mpsc::Receiver<Batch>,
    mut conn: ConnectionManager,
    consumer: Arc<RelayConsumer>,
    mut writer: Writer,
    topic: String,
    telemetry: Arc<Telemetry>,
    give_up_at: Arc<Mutex<Option<Instant>>>,
) -> Result<()> {
    while let Some(batch) = rx.recv().await {
        if batch.is_empty() {
            continue;
        }
        let give_up = || *give_up_at.lock().unwrap_or_else(|p| p.into_inner());
        let on_error = |_: &redis::RedisError| {
            telemetry.errors.with_label_values(&["redis"]).inc();
            telemetry.set_redis_ok(false);
        };
        let (written, latency) = writer.write(&mut conn, &batch, give_up, on_error).await?;
        telemetry.set_redis_ok(true);
        telemetry.redis_write.observe(latency.as_secs_f64());
        telemetry.batches.inc();
        telemetry.written.inc_by(written);
        observe_ages(&telemetry, &batch);

        // Only now may Kafka forget these records.
        let mut tpl = TopicPartitionList::new();
        for (partition, offset) in batch.last_offsets() {
            let _ = tpl.add_partition_offset(&topic, partition, Offset::Offset(offset + 1));
        }
        if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
            telemetry.errors.with_label_values(&["commit"]).inc();
            tracing::warn!(error = %e, "offset commit failed (the Redis watermark still prevents duplicates)");
        }
    }
    Ok(())
}

fn observe_ages(telemetry: &Telemetry, batch: &Batch) {
    let now_ms = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    let mut last = None;
    for e in &batch.events {
        if let Some(ts) = e.timestamp {
            let age = ((now_ms as i64 - ts).max(0)) as f64 / 1000.0;
            telemetry.event_age.observe(age);
            last = Some(age);
        }
    }
    if let Some(age) = last {
        telemetry.last_event_age.set(age);
    }
}

async fn heartbeat_loop(
    mut conn: ConnectionManager,
    keys: Keys,
    telemetry: Arc<Telemetry>,
    ttl_seconds: u64,
    mut stop: watch::Receiver<bool>,
) {
    let every = Duration::from_millis(ttl_seconds * 1000 / 3);
    loop {
        match telemetry.beat(&mut conn, &keys, ttl_seconds).await {
            Ok(()) => telemetry.set_redis_ok(true),
            Err(e) => {
                telemetry.set_redis_ok(false);
                tracing::debug!(error = %e, "heartbeat failed");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}

/// The URL with any password replaced, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_credentials() {
        assert_eq!(
            super::redact("redis://:secret@redis:6379/0"),
            "redis://***@redis:6379/0"
        );
        assert_eq!(super::redact("redis://redis:6379"), "redis://redis:6379");
    }
}
