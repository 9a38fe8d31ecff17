//! Publishing while holding the lease: claim → produce → acknowledged → mark.
//!
//! The loop claims the oldest pending rows (id order), produces them at once and
//! goes on claiming while up to `OUTBOX_PIPELINE_DEPTH` batches wait for Kafka's
//! acknowledgements; each batch is settled in claim order: refused rows get
//! `retry_count` and `last_error`, and acknowledged ones go to the [`Marker`], which
//! marks them published on a session of its own, so claiming never waits for the
//! marks (the `UPDATE` is the most expensive statement of the three). A row stays in
//! flight, and so out of claims, until it is marked.
//!
//! * **Order**: one publisher leads, rows go out in id order, and the idempotent
//!   producer keeps each partition's order. A refused row *holds its tenant*: that
//!   tenant's later rows are not produced (not in this batch, not claimed after)
//!   until the row is retried or has failed, so nothing overtakes it.
//! * **Late commits**: ids are drawn before commit, so a row may become visible after
//!   higher ids were published. Claims skip in-flight ids rather than keep a
//!   cursor, so such a row is simply the oldest pending one next time.
//! * **Wake-ups**: `NOTIFY` from the insert trigger, a settled batch, a hold or a
//!   Kafka pause ending, or the poll interval — whichever comes first.
//! * **Crash safety**: a row is marked only after its acknowledgement; killed in
//!   between, the next leader sends it again and the sidecar drops the copy by its
//!   outbox id.

use crate::config::PublisherConfig;
use crate::db::Session;
use crate::producer::{self, Failure};
use crate::store::{self, Claimed};
use crate::telemetry::Telemetry;
use crm_events_contracts::outbox::{KeyBy, OUTBOX_ID_HEADER};
use crm_events_native::backoff::Backoff;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use futures::StreamExt;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Why leading ended.
#[derive(Debug)]
pub enum End {
    /// Shutdown was asked for; in-flight batches were settled (within the timeout).
    Shutdown,
    /// The session (and with it the lease) is gone, or a statement failed on it.
    Lost(String),
}

/// What became of one row of a batch.
enum Outcome {
    /// Kafka acknowledged it.
    Acked,
    /// It was not sent or not acknowledged.
    Failed(Failure),
    /// Not sent: its tenant is held behind a refused row.
    HeldBack,
}

/// A batch whose acknowledgements are all in.
struct Settled {
    rows: Vec<Claimed>,
    outcomes: Vec<Outcome>,
}

/// Marks acknowledged rows published on sessions of its own (`OUTBOX_MARK_SESSIONS`
/// of them, taking batches in turn: the order of marks does not matter).
pub struct Marker {
    jobs: Vec<mpsc::UnboundedSender<Vec<Claimed>>>,
    next: usize,
    done: mpsc::UnboundedReceiver<Result<Vec<Claimed>, String>>,
    /// Batches sent and not yet marked.
    pending: usize,
}

impl Marker {
    /// A marker on `sessions` (which need no lease: marking an acknowledged row
    /// published is always right). Their commits do not wait for the WAL flush: a
    /// mark a Postgres crash loses only makes the row go out again, and the sidecar
    /// drops it. (The pipeline bounds how many batches wait here: see `may_claim`.)
    pub async fn start(sessions: Vec<Session>) -> Result<Self, tokio_postgres::Error> {
        let (done_tx, done) = mpsc::unbounded_channel();
        let mut jobs = Vec::with_capacity(sessions.len());
        for session in sessions {
            session
                .client
                .batch_execute("SET synchronous_commit = off")
                .await?;
            let (tx, rx) = mpsc::unbounded_channel::<Vec<Claimed>>();
            tokio::spawn(mark_loop(session, rx, done_tx.clone()));
            jobs.push(tx);
        }
        Ok(Self {
            jobs,
            next: 0,
            done,
            pending: 0,
        })
    }

    fn mark(&mut self, rows: Vec<Claimed>) -> Result<(), String> {
        self.pending += 1;
        self.next = (self.next + 1) % self.jobs.len();
        self.jobs[self.next]
            .send(rows)
            .map_err(|_| "the marker stopped".to_string())
    }

    /// The next marked batch (pending forever while nothing is being marked).
    async fn marked(&mut self) -> Result<Vec<Claimed>, String> {
        if self.pending == 0 {
            return std::future::pending().await;
        }
        let r = self
            .done
            .recv()
            .await
            .unwrap_or(Err("the marker stopped".into()));
        self.pending -= 1;
        r
    }
}

/// One marking session: marks each batch it is given and reports it (or its error,
/// and stops).
async fn mark_loop(
    session: Session,
    mut jobs: mpsc::UnboundedReceiver<Vec<Claimed>>,
    done: mpsc::UnboundedSender<Result<Vec<Claimed>, String>>,
) {
    while let Some(rows) = jobs.recv().await {
        let ids: Vec<i64> = rows.iter().map(|c| c.row.id).collect();
        let result = store::mark_published(&session.client, &ids)
            .await
            .map(|_| rows)
            .map_err(|e| e.to_string());
        let failed = result.is_err();
        if done.send(result).is_err() || failed {
            return;
        }
    }
}

/// The leader's state.
pub struct Pipeline<'a> {
    config: &'a PublisherConfig,
    telemetry: &'a Telemetry,
    session: &'a Session,
    marker: Marker,
    key_by: KeyBy,
    producer: FutureProducer,
    in_flight: FuturesOrdered<BoxFuture<'static, Settled>>,
    in_flight_ids: HashSet<i64>,
    /// Tenants held behind a refused row: until when (`None`: until its refusal is
    /// recorded).
    held: HashMap<String, Option<Instant>>,
    kafka_pause: Option<Instant>,
    kafka_backoff: Backoff,
    /// Whether to claim (something may be pending).
    wake: bool,
}

impl<'a> Pipeline<'a> {
    /// A pipeline on `session`, which holds the lease, marking through `marker`.
    pub fn new(
        config: &'a PublisherConfig,
        telemetry: &'a Telemetry,
        session: &'a Session,
        marker: Marker,
        key_by: KeyBy,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            config,
            telemetry,
            session,
            marker,
            key_by,
            producer: producer::create(&config.kafka)?,
            in_flight: FuturesOrdered::new(),
            in_flight_ids: HashSet::new(),
            held: HashMap::new(),
            kafka_pause: None,
            kafka_backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(10)),
            wake: true,
        })
    }

    /// Publishes until `shutdown` resolves or the session is lost.
    pub async fn run(mut self, shutdown: &mut Pin<&mut impl Future<Output = ()>>) -> End {
        let session = self.session;
        let mut poll = tokio::time::interval(self.config.poll_interval());
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.may_claim() {
                match self.claim_and_produce().await {
                    Ok(true) => continue, // a full batch: more may be waiting
                    Ok(false) => self.wake = false,
                    Err(e) => return End::Lost(format!("claiming: {e}")),
                }
            }
            let resume_at = self.next_release();
            tokio::select! {
                biased;
                _ = shutdown.as_mut() => return self.drain().await,
                _ = session.ended() => return End::Lost("the Postgres connection ended".into()),
                Some(settled) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    if let Err(e) = self.settle(settled).await {
                        return End::Lost(format!("settling: {e}"));
                    }
                    self.wake = true;
                }
                marked = self.marker.marked() => match marked {
                    Ok(rows) => self.published(&rows),
                    Err(e) => return End::Lost(format!("marking: {e}")),
                },
                _ = session.notified() => self.wake = true,
                _ = poll.tick() => self.wake = true,
                _ = sleep_until(resume_at), if resume_at.is_some() => self.wake = true,
            }
        }
    }

    /// Whether to claim now: woken, room in the pipeline (batches waiting for their
    /// acknowledgement, and for their marks), Kafka not paused.
    fn may_claim(&self) -> bool {
        let depth = self.config.pipeline_depth as usize;
        self.wake
            && self.in_flight.len() < depth
            && self.marker.pending < depth
            && self.kafka_pause.is_none_or(|p| p <= Instant::now())
    }

    /// The next moment a hold or the Kafka pause ends.
    fn next_release(&self) -> Option<Instant> {
        self.held
            .values()
            .flatten()
            .copied()
            .chain(self.kafka_pause)
            .filter(|t| *t > Instant::now())
            .min()
    }

    /// Claims a batch and produces it; returns whether the batch was full.
    async fn claim_and_produce(&mut self) -> Result<bool, tokio_postgres::Error> {
        let now = Instant::now();
        self.held.retain(|_, until| until.is_none_or(|t| t > now));
        self.kafka_pause = self.kafka_pause.filter(|p| *p > now);
        if self.producer.client().fatal_error().is_some() && self.in_flight.is_empty() {
            self.renew_producer();
        }
        let in_flight: Vec<i64> = self.in_flight_ids.iter().copied().collect();
        let held: Vec<String> = self.held.keys().cloned().collect();
        let limit = self.config.batch_size as i64;
        let rows = store::claim(&self.session.client, &in_flight, &held, limit).await?;
        let full = rows.len() as i64 == limit;
        if !rows.is_empty() {
            self.in_flight_ids.extend(rows.iter().map(|c| c.row.id));
            let batch = self.produce(rows).await;
            self.in_flight.push_back(batch);
        }
        Ok(full)
    }

    /// A fresh producer after a fatal error (a possible gap): everything unmarked is
    /// sent again from the outbox, in order.
    fn renew_producer(&mut self) {
        match producer::create(&self.config.kafka) {
            Ok(p) => {
                tracing::warn!("Kafka producer had a fatal error; starting a fresh one");
                self.producer = p;
            }
            Err(e) => tracing::error!(error = %e, "cannot create a Kafka producer"),
        }
    }

    /// Sends every row of the batch (in id order) and returns the future of its
    /// acknowledgements.
    async fn produce(&mut self, rows: Vec<Claimed>) -> BoxFuture<'static, Settled> {
        let mut pending = Vec::with_capacity(rows.len());
        let mut kafka_down = false;
        for c in &rows {
            let sent = if kafka_down || self.held.contains_key(&c.row.tenant_id) {
                Err(Outcome::HeldBack)
            } else {
                self.send(c).await
            };
            match &sent {
                // Nothing of this tenant may overtake the refused row.
                Err(Outcome::Failed(Failure::Row(_))) => {
                    self.held.insert(c.row.tenant_id.clone(), None);
                }
                // Kafka refused a send: the rest of the batch waits for the next claim.
                Err(Outcome::Failed(Failure::Kafka(_))) => kafka_down = true,
                _ => {}
            }
            pending.push(sent);
        }
        Box::pin(async move {
            let mut outcomes = Vec::with_capacity(pending.len());
            for p in pending {
                outcomes.push(match p {
                    Ok(delivery) => match delivery.await {
                        Ok(Ok(_)) => Outcome::Acked,
                        Ok(Err((e, _))) => Outcome::Failed(producer::classify(&e)),
                        Err(_) => {
                            Outcome::Failed(Failure::Kafka("the producer was dropped".into()))
                        }
                    },
                    Err(outcome) => outcome,
                });
            }
            Settled { rows, outcomes }
        })
    }

    /// Sends one row (waiting while librdkafka's queue is full).
    async fn send(&self, c: &Claimed) -> Result<rdkafka::producer::DeliveryFuture, Outcome> {
        let record = c.row.record(&self.key_by);
        let size =
            record.key.len() + record.value.len() + OUTBOX_ID_HEADER.len() + record.outbox_id.len();
        if size > self.config.max_message_bytes {
            return Err(Outcome::Failed(Failure::Row(format!(
                "the record is {size} bytes, over OUTBOX_MAX_MESSAGE_BYTES ({})",
                self.config.max_message_bytes
            ))));
        }
        loop {
            let headers = OwnedHeaders::new().insert(Header {
                key: OUTBOX_ID_HEADER,
                value: Some(record.outbox_id.as_str()),
            });
            let kafka_record = FutureRecord::to(&self.config.kafka.topic)
                .key(record.key.as_str())
                .payload(record.value.as_str())
                .headers(headers);
            match self.producer.send_result(kafka_record) {
                Ok(delivery) => return Ok(delivery),
                Err((e, _)) if producer::is_queue_full(&e) => {
                    tokio::time::sleep(Duration::from_millis(1)).await
                }
                Err((e, _)) => return Err(Outcome::Failed(producer::classify(&e))),
            }
        }
    }

    /// Hands what was acknowledged to the marker, records what was refused, and
    /// releases the ids of everything else.
    async fn settle(&mut self, s: Settled) -> Result<(), String> {
        let mut acked = Vec::new();
        let mut kafka_failed = None;
        for (c, outcome) in s.rows.into_iter().zip(s.outcomes) {
            match outcome {
                Outcome::Acked => {
                    acked.push(c);
                    continue;
                }
                Outcome::Failed(Failure::Row(why)) => {
                    self.refused(&c, &why).await.map_err(|e| e.to_string())?
                }
                Outcome::Failed(Failure::Kafka(why)) => kafka_failed = Some(why),
                Outcome::HeldBack => {}
            }
            self.in_flight_ids.remove(&c.row.id);
        }
        match kafka_failed {
            Some(why) => self.pause_for_kafka(&why),
            None => self.kafka_backoff.reset(),
        }
        if !acked.is_empty() {
            self.observe_acked(&acked);
            self.marker.mark(acked)?;
        }
        Ok(())
    }

    /// Kafka acknowledged these: occurred_at → acknowledged.
    fn observe_acked(&self, acked: &[Claimed]) {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        for c in acked {
            let age = (now_ms - c.row.occurred_at_ms).max(0) as f64 / 1000.0;
            self.telemetry.latency.observe(age);
        }
    }

    /// The marker marked these published: they leave the pipeline.
    fn published(&mut self, rows: &[Claimed]) {
        self.telemetry.published.inc_by(rows.len() as u64);
        for c in rows {
            self.in_flight_ids.remove(&c.row.id);
        }
    }

    /// Records a refused attempt and holds the tenant until the retry is due.
    async fn refused(&mut self, c: &Claimed, why: &str) -> Result<(), tokio_postgres::Error> {
        self.telemetry.error("row");
        let max = self.config.max_retries as i32;
        let failed = store::record_failure(&self.session.client, c.row.id, why, max).await?;
        let attempt = c.retries as u32 + 1;
        if failed {
            self.telemetry.failed.inc();
            tracing::error!(id = c.row.id, tenant = %c.row.tenant_id, attempts = attempt, error = why, "outbox row failed; it waits for `crm-events-outbox failed requeue`");
            self.held.remove(&c.row.tenant_id);
        } else {
            let delay = self.config.retry_delay(attempt);
            tracing::warn!(
                id = c.row.id,
                attempt,
                retry_in_ms = delay.as_millis() as u64,
                error = why,
                "outbox row refused"
            );
            self.held
                .insert(c.row.tenant_id.clone(), Some(Instant::now() + delay));
        }
        Ok(())
    }

    /// Stops claiming for a while: Kafka did not take the rows (they stay pending).
    fn pause_for_kafka(&mut self, why: &str) {
        self.telemetry.error("kafka");
        let delay = self.kafka_backoff.next_delay();
        tracing::warn!(
            error = why,
            retry_in_ms = delay.as_millis() as u64,
            "Kafka did not take the rows; they stay pending"
        );
        self.kafka_pause = Some(Instant::now() + delay);
    }

    /// Settles and marks what is in flight, within the shutdown timeout.
    async fn drain(mut self) -> End {
        let timeout = Duration::from_secs(self.config.shutdown_timeout_seconds);
        let deadline = tokio::time::Instant::now() + timeout;
        while let Ok(Some(settled)) = tokio::time::timeout_at(deadline, self.in_flight.next()).await
        {
            if let Err(e) = self.settle(settled).await {
                return End::Lost(format!("settling at shutdown: {e}"));
            }
        }
        while self.marker.pending > 0 {
            match tokio::time::timeout_at(deadline, self.marker.marked()).await {
                Ok(Ok(rows)) => self.published(&rows),
                Ok(Err(e)) => return End::Lost(format!("marking at shutdown: {e}")),
                Err(_) => break,
            }
        }
        if !self.in_flight.is_empty() {
            tracing::warn!(
                batches = self.in_flight.len(),
                "stopping with unacknowledged rows; they stay pending and are sent again"
            );
        }
        End::Shutdown
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}
