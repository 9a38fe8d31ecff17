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
use crate::continuity::Continuity;
use crate::telemetry::Telemetry;
use crate::writer::{self, Layout, Outcome, TenantShard, Writer};
use anyhow::{Context, Result};
use crm_events_contracts::keys::Keys;
use crm_events_native::logging::redact_url;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Offset, TopicPartitionList};
use redis::aio::ConnectionManager;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// When the writer must stop retrying: unset while running, set at shutdown.
type GiveUpAt = Arc<Mutex<Option<Instant>>>;

/// Batches a destination may hold unwritten while its Redis is away (the others
/// write on meanwhile; past it the consumer waits, and Kafka keeps the rest).
const QUEUE_BATCHES: usize = 256;

/// One Redis the relay writes: the all-tenants stream, or one shard's tenant streams.
pub struct Destination {
    /// Its URL (credentials and all; logged redacted).
    pub url: String,
    /// The writer, with its layout.
    pub writer: Writer,
    /// Set at assignment when its watermarks are gone (see [`crate::consumer`]).
    pub lost_at_start: Arc<AtomicBool>,
}

/// The destinations `config` asks for: the all-tenants stream on `REDIS_URL`, then
/// each shard of `REDIS_SHARDS`.
pub fn destinations(config: &RelayConfig, keys: &Keys) -> Result<Vec<Destination>> {
    anyhow::ensure!(
        config.all_tenants_stream || config.tenant_streams,
        "ALL_TENANTS_STREAM and TENANT_STREAMS are both false: there is nothing to write"
    );
    let writer = |lost: &Arc<AtomicBool>| {
        Writer::new(
            keys.clone(),
            &config.kafka.topic,
            config.stream_maxlen,
            config.outbox_dedup_window,
            Continuity::new(config.stream_maxlen, lost.clone()),
        )
    };
    let mut all = Vec::new();
    if config.all_tenants_stream {
        let lost = Arc::default();
        all.push(Destination {
            url: config.redis_url.clone(),
            writer: writer(&lost),
            lost_at_start: lost,
        });
    }
    let shards = config.shards();
    if config.tenant_streams {
        for (index, url) in shards.iter().enumerate() {
            let lost = Arc::default();
            let layout = Layout::Tenants(TenantShard {
                index,
                count: shards.len(),
                maxlen: config.tenant_stream_maxlen,
                retention_ms: config.tenant_retention_seconds.saturating_mul(1000),
            });
            all.push(Destination {
                url: url.clone(),
                writer: writer(&lost).with_layout(layout),
                lost_at_start: lost,
            });
        }
    }
    Ok(all)
}

/// Runs the relay until `shutdown` resolves.
pub async fn run(
    config: RelayConfig,
    telemetry: Arc<Telemetry>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    tokio::pin!(shutdown);
    let keys = Keys::new(&config.key_prefix);
    let destinations = destinations(&config, &keys)?;
    let conn = tokio::select! {
        c = writer::connect(&config.redis_url, None) => c?,
        _ = &mut shutdown => return Ok(()),
    };
    telemetry.set_redis_ok(true);
    tracing::info!(redis = %redact_url(&config.redis_url), shards = config.shards().len(), "connected to Redis");
    let consumer = subscribe(&config, &telemetry, &destinations)?;

    let (stop_heartbeat, stop_rx) = watch::channel(false);
    let heartbeat = tokio::spawn(heartbeat_loop(
        conn,
        keys.clone(),
        telemetry.clone(),
        config.heartbeat_ttl_seconds,
        stop_rx,
    ));
    let give_up_at = GiveUpAt::default();
    let (rewind_tx, rewind_rx) = mpsc::unbounded_channel::<Rewind>();
    let shared = Arc::new(Shared {
        consumer: consumer.clone(),
        telemetry: telemetry.clone(),
        give_up_at: give_up_at.clone(),
        progress: Mutex::new(vec![BTreeMap::new(); destinations.len()]),
        rewinds: Mutex::new((0, rewind_tx)),
    });
    let (senders, writers) = match spawn_writers(destinations, &shared, &mut shutdown).await {
        Some(started) => started,
        None => return Ok(()),
    };

    let pending = consume(
        &config,
        &consumer,
        &telemetry,
        (&senders, rewind_rx),
        &mut shutdown,
    )
    .await;

    let timeout = Duration::from_secs(config.shutdown_timeout_seconds);
    let stop_by = Instant::now() + timeout;
    *give_up_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(stop_by);
    let written = finish_writes(senders, pending, writers, timeout).await;
    let _ = stop_heartbeat.send(true);
    let _ = heartbeat.await;
    if written.is_ok() {
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
            // Nothing consumed since the last commit, or the group is gone: the
            // watermark in Redis is the source of truth either way.
            tracing::debug!(error = %e, "final commit");
        }
    }
    // Bounded on every way out, a failed last write included.
    close_consumer(consumer, stop_by.saturating_duration_since(Instant::now())).await;
    written?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Leaves the consumer group, waiting at most `timeout` (what is left of the stop's
/// bound, `SHUTDOWN_TIMEOUT_SECONDS`). rdkafka's close (the
/// consumer's drop) polls until the group coordinator lets it go, with no bound of
/// its own: once seen to hold a stop for good when Kafka and Redis had been gone
/// for a long time. Past the bound the close is left to its thread and the process
/// exits; the group then rebalances after `session.timeout.ms`. Nothing is lost:
/// every consumed event is in Redis and the watermarks say where to resume.
async fn close_consumer(consumer: Arc<RelayConsumer>, timeout: Duration) {
    let (closed, on_closed) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        drop(consumer);
        let _ = closed.send(());
    });
    if tokio::time::timeout(timeout, on_closed).await.is_err() {
        tracing::warn!(
            "Kafka did not let the consumer leave its group within the shutdown bound; stopping without it"
        );
    }
}

/// Creates the consumer and subscribes it to the topic.
fn subscribe(
    config: &RelayConfig,
    telemetry: &Arc<Telemetry>,
    destinations: &[Destination],
) -> Result<Arc<RelayConsumer>> {
    let setup = consumer::Setup {
        watermarks: destinations
            .iter()
            .map(|d| consumer::Watermarks {
                redis_url: d.url.clone(),
                key: d.writer.offsets_key(),
                lost_at_start: d.lost_at_start.clone(),
            })
            .collect(),
        telemetry: telemetry.clone(),
        maxlen: config.stream_maxlen,
    };
    let consumer = consumer::create(&config.kafka_properties(), setup)
        .context("creating the Kafka consumer")?;
    consumer
        .subscribe(&[&config.kafka.topic])
        .with_context(|| format!("subscribing to {}", config.kafka.topic))?;
    tracing::info!(brokers = %config.kafka.brokers, topic = %config.kafka.topic, group = %config.kafka_group, "consuming");
    Ok(Arc::new(consumer))
}

/// What every destination's writer task shares.
struct Shared {
    consumer: Arc<RelayConsumer>,
    telemetry: Arc<Telemetry>,
    give_up_at: GiveUpAt,
    /// Per destination, the last offset it wrote per partition: Kafka is committed
    /// to the least of them.
    progress: Mutex<Vec<BTreeMap<i32, i64>>>,
    /// The rewinds asked for so far, and where they go (one lock, so the consumer
    /// gets them in the order their generations were handed out).
    rewinds: Mutex<(u64, mpsc::UnboundedSender<Rewind>)>,
}

impl Shared {
    /// Records that destination `dest` wrote `batch`; returns the offsets every
    /// destination now has, for the batch's partitions (those Kafka may forget).
    fn wrote(&self, dest: usize, batch: &Batch) -> BTreeMap<i32, i64> {
        let mut progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        let last = batch.last_offsets();
        for (p, o) in &last {
            let done = progress[dest].entry(*p).or_insert(*o);
            *done = (*done).max(*o);
        }
        last.keys()
            .filter_map(|p| {
                let each: Option<Vec<i64>> = progress.iter().map(|d| d.get(p).copied()).collect();
                Some((*p, each?.into_iter().min()?))
            })
            .collect()
    }

    /// Destination `dest` lost data and must read again from `from`: the consumer
    /// seeks there, or further back where another destination has not written yet
    /// (its queued batches of before are dropped too). Returns the generation of
    /// batches read after the seek.
    fn rewind(&self, dest: usize, mut from: BTreeMap<i32, i64>) -> u64 {
        {
            let mut progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
            for (p, o) in &from {
                progress[dest].insert(*p, o - 1);
            }
            for (p, o) in from.iter_mut() {
                for done in progress.iter() {
                    if let Some(d) = done.get(p) {
                        *o = (*o).min(d + 1);
                    }
                }
            }
        }
        let mut rewinds = self.rewinds.lock().unwrap_or_else(|p| p.into_inner());
        rewinds.0 += 1;
        let generation = rewinds.0;
        let _ = rewinds.1.send(Rewind {
            generation,
            offsets: from,
        });
        generation
    }
}

/// Starts a writer task per destination, each on a connection of its own (`WATCH`
/// is per connection); `None` when `shutdown` came first.
async fn spawn_writers(
    destinations: Vec<Destination>,
    shared: &Arc<Shared>,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Option<(Vec<mpsc::Sender<Arc<Batch>>>, Vec<JoinHandle<Result<()>>>)> {
    let (mut senders, mut tasks) = (Vec::new(), Vec::new());
    for (index, d) in destinations.into_iter().enumerate() {
        let conn = tokio::select! {
            c = writer::connect(&d.url, None) => c.ok()?,
            _ = shutdown.as_mut() => return None,
        };
        let (tx, rx) = mpsc::channel(QUEUE_BATCHES);
        senders.push(tx);
        tasks.push(tokio::spawn(write_loop(
            index,
            rx,
            conn,
            d.writer,
            shared.clone(),
        )));
    }
    Some((senders, tasks))
}

/// The writer found that Redis lost data: the consumer reads again from these
/// offsets, and every batch read before (an older generation) is dropped.
#[derive(Debug)]
struct Rewind {
    generation: u64,
    offsets: BTreeMap<i32, i64>,
}

/// Seeks the consumer's partitions back (a partition no longer assigned here is
/// someone else's to rewind).
fn seek_back(consumer: &RelayConsumer, topic: &str, offsets: &BTreeMap<i32, i64>) {
    for (p, o) in offsets {
        if let Err(e) = consumer.seek(topic, *p, Offset::Offset(*o), Duration::from_secs(5)) {
            tracing::warn!(partition = p, offset = o, error = %e, "cannot rewind the partition");
        }
    }
}

/// The batch being filled, and when it must go.
struct Batcher {
    batch: Batch,
    max: usize,
    linger: Duration,
    deadline: Option<tokio::time::Instant>,
    generation: u64,
}

impl Batcher {
    fn new(max: usize, linger: Duration) -> Self {
        Self {
            batch: Batch::with_capacity(max),
            max,
            linger,
            deadline: None,
            generation: 0,
        }
    }

    /// Drops what was read so far: the consumer was rewound (a new generation).
    fn discard(&mut self, generation: u64) {
        self.take();
        self.generation = generation;
    }

    /// Adds an event; returns the batch when it is full.
    fn push(&mut self, event: Event) -> Option<Batch> {
        self.batch.events.push(event);
        if self.batch.len() == 1 {
            self.deadline = Some(tokio::time::Instant::now() + self.linger);
        }
        (self.batch.len() >= self.max).then(|| self.take())
    }

    /// The batch so far, leaving an empty one.
    fn take(&mut self) -> Batch {
        self.deadline = None;
        let mut batch = std::mem::replace(&mut self.batch, Batch::with_capacity(self.max));
        batch.generation = self.generation;
        batch
    }
}

/// What the consumer loop leaves for the graceful stop.
struct Pending {
    batch: Batch,
    writer_gone: bool,
}

/// Reads Kafka into batches and hands them to the writer until `shutdown`.
async fn consume(
    config: &RelayConfig,
    consumer: &RelayConsumer,
    telemetry: &Telemetry,
    (senders, mut rewinds): (&[mpsc::Sender<Arc<Batch>>], mpsc::UnboundedReceiver<Rewind>),
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Pending {
    let mut batcher = Batcher::new(config.batch_max as usize, config.linger());
    loop {
        let full = tokio::select! {
            biased;
            _ = shutdown.as_mut() => break,
            Some(r) = rewinds.recv() => {
                seek_back(consumer, &config.kafka.topic, &r.offsets);
                batcher.discard(r.generation);
                None
            }
            _ = sleep_until(batcher.deadline), if batcher.deadline.is_some() => Some(batcher.take()),
            msg = consumer.recv() => match msg {
                Ok(m) => batcher.push(received(&m, telemetry, config.max_value_bytes)),
                Err(e) => {
                    kafka_error(telemetry, e);
                    None
                }
            }
        };
        if let Some(batch) = full {
            if !hand_over(senders, batch).await {
                return Pending {
                    batch: Batch::default(),
                    writer_gone: true,
                };
            }
        }
    }
    Pending {
        batch: batcher.take(),
        writer_gone: false,
    }
}

/// Gives the batch to every destination's writer, in order; `false` when a writer
/// is gone.
async fn hand_over(senders: &[mpsc::Sender<Arc<Batch>>], batch: Batch) -> bool {
    let batch = Arc::new(batch);
    for tx in senders {
        if tx.send(batch.clone()).await.is_err() {
            return false;
        }
    }
    true
}

/// Counts a consumed record and turns it into an event.
fn received(m: &BorrowedMessage<'_>, telemetry: &Telemetry, max_value_bytes: usize) -> Event {
    telemetry.consumed.inc();
    if telemetry.has_kafka_error() {
        telemetry.set_kafka_error(None);
    }
    Event::from_message(m, max_value_bytes)
}

fn kafka_error(telemetry: &Telemetry, e: rdkafka::error::KafkaError) {
    tracing::warn!(error = %e, "Kafka receive error");
    telemetry.errors.with_label_values(&["kafka"]).inc();
    telemetry.set_kafka_error(Some(e.to_string()));
}

/// Hands the last batch to the writers and waits for them, within `timeout`.
async fn finish_writes(
    senders: Vec<mpsc::Sender<Arc<Batch>>>,
    pending: Pending,
    writers: Vec<JoinHandle<Result<()>>>,
    timeout: Duration,
) -> Result<()> {
    tracing::info!(
        pending = pending.batch.len(),
        "stopping: writing the last batch"
    );
    if !pending.writer_gone && !pending.batch.is_empty() {
        let _ = tokio::time::timeout(timeout, hand_over(&senders, pending.batch)).await;
    }
    drop(senders);
    let all = async {
        let mut results = Vec::new();
        for w in writers {
            results.push(w.await);
        }
        results
    };
    let results = match tokio::time::timeout(timeout + Duration::from_secs(1), all).await {
        Ok(results) => results,
        Err(_) => anyhow::bail!("the last batch did not reach Redis within {timeout:?}; it was not committed and will be read again"),
    };
    for result in results {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e).context("writer stopped with a batch it could not write (it was not committed and will be read again)"),
            Err(e) => return Err(e).context("writer task failed"),
        }
    }
    Ok(())
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// How often an idle writer checks that Redis still holds what it wrote.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Writes each batch to one destination, then commits what every destination has:
/// only then may Kafka forget it. Between batches it checks every [`CHECK_EVERY`]
/// that Redis kept what it wrote; when Redis lost data (a new epoch), it has the
/// consumer rewind.
async fn write_loop(
    dest: usize,
    mut rx: mpsc::Receiver<Arc<Batch>>,
    mut conn: ConnectionManager,
    mut writer: Writer,
    shared: Arc<Shared>,
) -> Result<()> {
    let mut generation = 0;
    let mut check = tokio::time::interval(CHECK_EVERY);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let batch = tokio::select! {
            b = rx.recv() => match b {
                Some(b) => b,
                None => return Ok(()),
            },
            _ = check.tick() => Arc::new(Batch { generation, ..Batch::default() }),
        };
        if batch.generation < generation {
            continue; // Read before this destination's rewind: it is read again.
        }
        let telemetry = &shared.telemetry;
        let give_up = || *shared.give_up_at.lock().unwrap_or_else(|p| p.into_inner());
        let on_error = |_: &redis::RedisError| {
            telemetry.errors.with_label_values(&["redis"]).inc();
            telemetry.set_redis_ok(false);
        };
        match writer.write(&mut conn, &batch, give_up, on_error).await? {
            (Outcome::Written(_), _) if batch.is_empty() => {}
            (Outcome::Written(written), latency) => {
                if dest == 0 {
                    telemetry.observe_write(&batch, written, latency);
                }
                let everywhere = shared.wrote(dest, &batch);
                commit(&shared.consumer, writer.topic(), &everywhere, telemetry);
            }
            (Outcome::Rewind(mut offsets), _) => {
                // The batch that found the loss is read again too.
                for (p, first) in batch.first_offsets() {
                    let o = offsets.entry(p).or_insert(first);
                    *o = (*o).min(first);
                }
                telemetry.redis_lost.inc();
                generation = shared.rewind(dest, offsets);
            }
        }
    }
}

/// Commits `offsets` (the last written per partition), asynchronously: the
/// watermark in Redis is what prevents duplicates; the commit only saves re-reading.
fn commit(
    consumer: &RelayConsumer,
    topic: &str,
    offsets: &BTreeMap<i32, i64>,
    telemetry: &Telemetry,
) {
    if offsets.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for (partition, offset) in offsets {
        let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(offset + 1));
    }
    if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
        telemetry.errors.with_label_values(&["commit"]).inc();
        tracing::warn!(error = %e, "offset commit failed (the Redis watermark still prevents duplicates)");
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(offset: i64) -> Event {
        Event {
            partition: 0,
            offset,
            timestamp: None,
            envelope: "{}".into(),
            ..Event::default()
        }
    }

    #[tokio::test]
    async fn batcher_hands_over_full_batches_and_sets_a_deadline_on_the_first_event() {
        let mut b = Batcher::new(3, Duration::from_millis(2));
        assert!(b.deadline.is_none());
        assert!(b.push(event(0)).is_none());
        assert!(b.deadline.is_some());
        assert!(b.push(event(1)).is_none());
        let full = b.push(event(2)).expect("full at 3");
        assert_eq!(full.len(), 3);
        assert!(b.deadline.is_none() && b.batch.is_empty());
    }
}
