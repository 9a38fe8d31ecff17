//! Writing a batch to Redis: atomic, idempotent, retried until it lands.
//!
//! One `MULTI`/`EXEC` per batch holds the `XADD` of every new event, the `HSET` of
//! the new partition watermarks and the `PUBLISH` of the batch, so the stream and the
//! watermark can never disagree. Before it, the writer `WATCH`es the watermark hash
//! and reads it: events at or below their partition's watermark are already in the
//! stream and are left out, so re-delivery from Kafka (a crash before the offset
//! commit, a rebalance, a retried write whose reply was lost) never duplicates an
//! entry. If another writer moves a watermark in between (two sidecars during a
//! rebalance), `EXEC` is refused and the writer reads again. That is the
//! exactly-once guarantee, at native command speed.
//!
//! Records from the outbox publisher carry their row id. A publisher killed between
//! Kafka's acknowledgement and marking the row published sends it again, as a new
//! Kafka record; the writer drops it because the id is in the dedup window (a sorted
//! set of the newest `OUTBOX_DEDUP_WINDOW` ids, read under the same `WATCH` and
//! extended in the same `MULTI`). So the stream holds each outbox row once.
//!
//! The same read tells whether Redis still holds what the writer wrote (its epoch
//! and watermarks, see [`crate::continuity`]): when it lost data, the writer starts
//! a new epoch of the stream and asks the relay to rewind the consumer.
//!
//! A writer keeps either the all-tenants stream or the tenant streams of one shard
//! ([`Layout`]); the relay runs one per Redis it writes, each with its own
//! connection, watermarks, dedup window and epoch. A tenant-shard writer adds each
//! of its events to its tenant's stream with [`APPEND`], one script for all of the
//! batch's tenants in the same `MULTI`, which also opens each stream's epoch and
//! trims it by age and count.
//!
//! Trimming keeps `STREAM_MAXLEN` entries once the stream is 1% over it, exactly, and
//! records the newest trimmed id (Redis does not move `max-deleted-entry-id` on
//! trims): a client resuming before it is told about the gap. The writer remembers
//! the ids it added, so a trim costs one `XTRIM MINID`; only after a restart, before
//! it has written `STREAM_MAXLEN` entries itself, does it read the old ids back.

use crate::batch::{Batch, Event};
use crate::continuity::{new_epoch, Continuity, Verdict};
use crm_events_contracts::envelope::epoch_marker;
use crm_events_contracts::keys::{Keys, ENVELOPE_FIELD};
use crm_events_contracts::tenant::shard_of;
use crm_events_native::backoff::Backoff;
use redis::aio::ConnectionManager;
use redis::Value;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// How far past `maxlen` the stream may grow before it is trimmed back (1%), so the
/// trim runs once per that many events rather than on every batch.
pub fn trim_slack(maxlen: u64) -> u64 {
    (maxlen / 100).max(1)
}

/// Which streams a writer keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// The all-tenants stream (operators): every event, the operator's envelope.
    AllTenants,
    /// The tenant streams of one shard: the events whose tenant lives there.
    Tenants(TenantShard),
}

/// One shard of tenant streams and their retention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantShard {
    /// This shard's index in the shard list.
    pub index: usize,
    /// How many shards there are.
    pub count: usize,
    /// Entries each tenant stream keeps at most (0: no count limit).
    pub maxlen: u64,
    /// How long an entry stays, ms (0: no age limit); a stream with no write for
    /// this long expires whole.
    pub retention_ms: u64,
}

/// Appends a batch's events to its tenants' streams, in the writer's `MULTI`: one
/// script for the whole batch (a script per tenant cost Redis more in calling Lua
/// than in the work). For each tenant it opens the stream's epoch first when it is
/// not the shard's (an epoch marker entry, which streams in that epoch already
/// skip); then trims by count (exactly to `maxlen` once 1% over) and by age,
/// recording the newest trimmed id, and lets the stream's keys expire `retention`
/// after this write.
/// KEYS: per tenant its stream, its epoch, its trim marker. ARGV: shard epoch, epoch
/// marker, retention ms, maxlen, slack, then per tenant (in KEYS' order) the number
/// of its envelopes and the envelopes. Build it with [`append_command`].
pub const APPEND: &str = r#"
local retention, maxlen, slack = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local a = 6
for k = 1, #KEYS, 3 do
  local stream, epoch_key, trimmed_key = KEYS[k], KEYS[k + 1], KEYS[k + 2]
  local n = tonumber(ARGV[a])
  if retention > 0 and redis.call('EXISTS', stream) == 0 and redis.call('EXISTS', trimmed_key) == 0 then
    -- Begun (again): anything this tenant had before is older than the retention.
    redis.call('SET', trimmed_key, string.format('%.0f-18446744073709551615', math.max(now - retention, 0)))
  end
  if redis.call('GET', epoch_key) ~= ARGV[1] then
    redis.call('XADD', stream, '*', 'e', ARGV[2])
    redis.call('SET', epoch_key, ARGV[1])
  end
  for i = a + 1, a + n do
    redis.call('XADD', stream, '*', 'e', ARGV[i])
  end
  a = a + n + 1
  if maxlen > 0 then
    local len = redis.call('XLEN', stream)
    if len > maxlen + slack then
      local old = redis.call('XRANGE', stream, '-', '+', 'COUNT', len - maxlen)
      redis.call('XTRIM', stream, 'MAXLEN', '=', maxlen)
      redis.call('SET', trimmed_key, old[#old][1])
    end
  end
  if retention > 0 then
    local cutoff = now - retention
    local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
    if first and tonumber(string.match(first[1], '^%d+')) < cutoff then
      local cut = string.format('%.0f-0', cutoff)
      local last = redis.call('XREVRANGE', stream, '(' .. cut, '-', 'COUNT', 1)[1]
      redis.call('XTRIM', stream, 'MINID', '=', cut)
      if last then redis.call('SET', trimmed_key, last[1]) end
    end
    redis.call('PEXPIRE', stream, retention)
    redis.call('PEXPIRE', epoch_key, retention)
    redis.call('PEXPIRE', trimmed_key, retention)
  end
end
return 0
"#;

/// The [`APPEND`] of `tenants`' envelopes (each tenant's in order) to their streams
/// in the shard's `epoch` (`marker` opens it), under `shard`'s retention.
pub fn append_command(
    keys: &Keys,
    shard: &TenantShard,
    epoch: &str,
    marker: &str,
    tenants: &BTreeMap<&str, Vec<&str>>,
) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(APPEND).arg(3 * tenants.len());
    for tenant in tenants.keys() {
        cmd.arg(keys.tenant_stream(tenant))
            .arg(keys.tenant_epoch(tenant))
            .arg(keys.tenant_trimmed(tenant));
    }
    cmd.arg(epoch)
        .arg(marker)
        .arg(shard.retention_ms)
        .arg(shard.maxlen)
        .arg(trim_slack(shard.maxlen));
    for envelopes in tenants.values() {
        cmd.arg(envelopes.len()).arg(envelopes);
    }
    cmd
}

/// What one batch write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// Events new to the stream.
    pub fresh: u64,
    /// Re-sent outbox records dropped (their id is in the dedup window).
    pub duplicates: u64,
}

/// What a write attempt ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The batch is in the stream.
    Written(Written),
    /// Redis lost data: a new epoch was started and the batch was not written; the
    /// consumer must read again from these offsets (partition -> offset).
    Rewind(BTreeMap<i32, i64>),
}

/// What the stream already holds, read under `WATCH`.
struct Seen {
    /// Watermark per partition of the batch and of those written before (-1 where
    /// none is set).
    marks: BTreeMap<i32, i64>,
    /// The stream's epoch.
    epoch: Option<String>,
    /// Outbox ids of the batch already in the stream.
    outbox_ids: HashSet<i64>,
}

/// Writes batches for one topic and key prefix. Give it a connection of its own:
/// `WATCH` is per connection.
pub struct Writer {
    keys: Keys,
    layout: Layout,
    /// Why the current epoch began (the marker a tenant stream opens it with).
    epoch_reason: String,
    topic: String,
    maxlen: u64,
    /// How many outbox ids the dedup window keeps (0: no dedup).
    dedup_window: u64,
    /// Ids this writer added, oldest first (at most `maxlen + slack`).
    recent: VecDeque<String>,
    /// The epoch and what was written, to find out when Redis loses data.
    continuity: Continuity,
}

impl Writer {
    /// A writer for `topic` under `keys`; `maxlen` 0 keeps everything, a
    /// `dedup_window` of 0 turns the outbox-id check off; `continuity` knows the
    /// stream's epoch.
    pub fn new(
        keys: Keys,
        topic: &str,
        maxlen: u64,
        dedup_window: u64,
        continuity: Continuity,
    ) -> Self {
        Self {
            keys,
            layout: Layout::AllTenants,
            epoch_reason: "epoch_started".to_string(),
            topic: topic.to_string(),
            maxlen,
            dedup_window,
            recent: VecDeque::new(),
            continuity,
        }
    }

    /// This writer for `layout` instead of the all-tenants stream.
    pub fn with_layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        self
    }

    /// Which streams this writer keeps.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The watermark hash of the streams this writer keeps.
    pub fn offsets_key(&self) -> String {
        match self.layout {
            Layout::AllTenants => self.keys.offsets(),
            Layout::Tenants(_) => self.keys.tenants_offsets(),
        }
    }

    fn epoch_key(&self) -> String {
        match self.layout {
            Layout::AllTenants => self.keys.stream_epoch(),
            Layout::Tenants(_) => self.keys.tenants_epoch(),
        }
    }

    fn dedup_key(&self) -> String {
        match self.layout {
            Layout::AllTenants => self.keys.outbox_ids(),
            Layout::Tenants(_) => self.keys.tenants_outbox_ids(),
        }
    }

    /// The envelope `e` adds to this writer's streams (and the tenant whose stream
    /// takes it), or `None` when it has no place here.
    fn placed<'e>(&self, e: &'e Event) -> Option<(Option<&'e str>, &'e str)> {
        match &self.layout {
            Layout::AllTenants => Some((None, &e.envelope)),
            Layout::Tenants(shard) => e
                .tenant
                .as_ref()
                .filter(|t| shard_of(&t.id, shard.count) == shard.index)
                .map(|t| (Some(t.id.as_str()), t.envelope.as_str())),
        }
    }

    /// The stream's epoch, as this writer last saw it.
    pub fn epoch(&self) -> Option<&str> {
        self.continuity.epoch.as_deref()
    }

    /// The topic whose watermarks this writer keeps.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// One attempt (an empty batch only checks that Redis still holds what was
    /// written).
    pub async fn write_once(
        &mut self,
        conn: &mut ConnectionManager,
        batch: &Batch,
    ) -> redis::RedisResult<Outcome> {
        loop {
            let seen = self.watch_seen(conn, batch).await?;
            let created = match self.continuity.judge(seen.epoch.as_deref(), &seen.marks) {
                Verdict::Lost { reason, rewind } => {
                    match self.renew_epoch(conn, reason, &rewind).await? {
                        true => return Ok(Outcome::Rewind(rewind)),
                        false => continue,
                    }
                }
                Verdict::Create => Some(new_epoch()),
                Verdict::Intact => None,
            };
            let (fresh, duplicates) = fresh_events(batch, &seen, |e| self.placed(e).is_some());
            let moved = moved_watermarks(batch, &seen.marks);
            if moved.is_empty() && created.is_none() {
                let () = redis::cmd("UNWATCH").query_async(conn).await?;
                self.continuity.wrote(batch.last_offsets());
                return Ok(Outcome::Written(Written::default()));
            }
            let tx = self.transaction(&fresh, &moved, created.as_deref());
            let Some(results) = exec(conn, tx).await? else {
                continue; // Another writer moved a watermark: read them again.
            };
            self.after_exec(conn, &results).await?;
            if let Some(epoch) = created {
                self.continuity.created(epoch);
            }
            self.continuity.wrote(batch.last_offsets());
            return Ok(Outcome::Written(Written {
                fresh: fresh.len() as u64,
                duplicates,
            }));
        }
    }

    /// Starts a new epoch: the epoch key and its marker entry, which every open
    /// stream turns into a `reset` event. `false` when another writer changed the
    /// watched keys first (read again).
    async fn renew_epoch(
        &mut self,
        conn: &mut ConnectionManager,
        reason: &str,
        rewind: &BTreeMap<i32, i64>,
    ) -> redis::RedisResult<bool> {
        let epoch = new_epoch();
        let mut tx = redis::pipe();
        tx.atomic().set(self.epoch_key(), &epoch).ignore();
        if self.layout == Layout::AllTenants {
            // Tenant streams get their markers as they are next written (APPEND).
            tx.cmd("XADD")
                .arg(self.keys.stream())
                .arg("*")
                .arg(ENVELOPE_FIELD)
                .arg(epoch_marker(&epoch, reason))
                .ignore();
        }
        if exec(conn, tx).await?.is_none() {
            return Ok(false);
        }
        tracing::warn!(
            reason,
            epoch,
            ?rewind,
            "Redis lost data: new stream epoch, reading Kafka again from the rewind offsets"
        );
        // The ids of the stream before are no guide for trimming any more.
        self.recent.clear();
        self.epoch_reason = reason.to_string();
        self.continuity.renewed(epoch, rewind);
        Ok(true)
    }

    /// `WATCH`es the watermark hash and the dedup window, and reads the watermarks of
    /// the batch's partitions and which of its outbox ids the stream already has.
    async fn watch_seen(
        &self,
        conn: &mut ConnectionManager,
        batch: &Batch,
    ) -> redis::RedisResult<Seen> {
        let offsets_key = self.offsets_key();
        let (epoch_key, dedup_key) = (self.epoch_key(), self.dedup_key());
        let mut partitions: Vec<i32> = batch.last_offsets().into_keys().collect();
        partitions.extend(self.continuity.partitions());
        partitions.sort_unstable();
        partitions.dedup();
        let fields: Vec<String> = partitions
            .iter()
            .map(|p| Keys::offsets_field(&self.topic, *p))
            .collect();
        let ids: Vec<i64> = batch
            .events
            .iter()
            .filter(|e| self.placed(e).is_some())
            .filter_map(|e| e.outbox_id)
            .collect();
        let dedup = self.dedup_window > 0 && !ids.is_empty();
        let mut watch = redis::cmd("WATCH");
        watch.arg(&offsets_key).arg(&epoch_key);
        if dedup {
            watch.arg(&dedup_key);
        }
        let () = watch.query_async(conn).await?;
        let (marks, epoch): (Vec<Option<i64>>, Option<String>) = if fields.is_empty() {
            let epoch = redis::cmd("GET").arg(&epoch_key).query_async(conn).await?;
            (Vec::new(), epoch)
        } else {
            redis::pipe()
                .cmd("HMGET")
                .arg(&offsets_key)
                .arg(&fields)
                .get(&epoch_key)
                .query_async(conn)
                .await?
        };
        let mut outbox_ids = HashSet::new();
        if dedup {
            let scores: Vec<Option<f64>> = redis::cmd("ZMSCORE")
                .arg(&dedup_key)
                .arg(&ids)
                .query_async(conn)
                .await?;
            outbox_ids.extend(
                ids.iter()
                    .zip(scores)
                    .filter(|(_, s)| s.is_some())
                    .map(|(id, _)| *id),
            );
        }
        Ok(Seen {
            marks: partitions
                .into_iter()
                .zip(marks.into_iter().map(|m| m.unwrap_or(-1)))
                .collect(),
            epoch,
            outbox_ids,
        })
    }

    /// The `MULTI`/`EXEC`: the fresh events ([`Writer::add_events`]), their outbox ids
    /// into the dedup window (trimmed to its size), the moved watermarks.
    fn transaction(
        &self,
        fresh: &[&Event],
        moved: &[(i32, i64)],
        new_epoch: Option<&str>,
    ) -> redis::Pipeline {
        let mut tx = redis::pipe();
        tx.atomic();
        if let Some(epoch) = new_epoch {
            tx.set(self.epoch_key(), epoch).ignore();
        }
        let ids: Vec<(i64, i64)> = fresh
            .iter()
            .filter_map(|e| e.outbox_id)
            .map(|id| (id, id))
            .collect();
        if self.dedup_window > 0 && !ids.is_empty() {
            let window = self.dedup_key();
            tx.zadd_multiple(&window, &ids).ignore();
            tx.zremrangebyrank(&window, 0, -(self.dedup_window as isize) - 1)
                .ignore();
        }
        let pairs: Vec<(String, i64)> = moved
            .iter()
            .map(|(p, m)| (Keys::offsets_field(&self.topic, *p), *m))
            .collect();
        if !pairs.is_empty() {
            tx.hset_multiple(self.offsets_key(), &pairs).ignore();
        }
        let epoch = new_epoch.or(self.continuity.epoch.as_deref());
        self.add_events(&mut tx, fresh, epoch.unwrap_or_default());
        tx
    }

    /// The adds of the transaction. The all-tenants stream: an `XADD` per event, the
    /// `PUBLISH` of the batch, and `XLEN` last (to know when to trim). Tenant
    /// streams: one [`APPEND`] for the batch, each tenant's events in batch order.
    fn add_events(&self, tx: &mut redis::Pipeline, fresh: &[&Event], epoch: &str) {
        let shard = match &self.layout {
            Layout::AllTenants => {
                let stream = self.keys.stream();
                for e in fresh {
                    tx.cmd("XADD")
                        .arg(&stream)
                        .arg("*")
                        .arg(ENVELOPE_FIELD)
                        .arg(&e.envelope);
                }
                if !fresh.is_empty() {
                    tx.publish(self.keys.channel(), batch_json(fresh)).ignore();
                }
                tx.xlen(&stream);
                return;
            }
            Layout::Tenants(shard) => shard,
        };
        let mut by_tenant: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (tenant, envelope) in fresh.iter().filter_map(|e| self.placed(e)) {
            by_tenant
                .entry(tenant.unwrap_or_default())
                .or_default()
                .push(envelope);
        }
        if by_tenant.is_empty() {
            return;
        }
        let marker = epoch_marker(epoch, &self.epoch_reason);
        tx.add_command(append_command(
            &self.keys, shard, epoch, &marker, &by_tenant,
        ))
        .ignore();
    }

    /// Remembers the ids `EXEC` returned and trims when the stream is due.
    async fn after_exec(
        &mut self,
        conn: &mut ConnectionManager,
        results: &[Value],
    ) -> redis::RedisResult<()> {
        if self.layout != Layout::AllTenants {
            return Ok(()); // APPEND trimmed each tenant stream itself.
        }
        let (len, ids) = results.split_last().unwrap_or((&Value::Nil, &[]));
        for id in ids {
            if let Value::BulkString(b) = id {
                self.remember(String::from_utf8_lossy(b).into_owned());
            }
        }
        if let Value::Int(len) = len {
            self.trim_if_due(conn, *len as u64).await?;
        }
        Ok(())
    }

    fn remember(&mut self, id: String) {
        if self.maxlen == 0 {
            return;
        }
        self.recent.push_back(id);
        let cap = (self.maxlen + trim_slack(self.maxlen)) as usize;
        while self.recent.len() > cap {
            self.recent.pop_front();
        }
    }

    /// Trims the stream back to `maxlen` once it is `slack` over, recording the
    /// newest trimmed id.
    async fn trim_if_due(
        &mut self,
        conn: &mut ConnectionManager,
        len: u64,
    ) -> redis::RedisResult<()> {
        if self.maxlen == 0 || len <= self.maxlen + trim_slack(self.maxlen) {
            return Ok(());
        }
        let maxlen = self.maxlen as usize;
        let (first_kept, last_trimmed) = if self.recent.len() > maxlen {
            // Everything older than the maxlen-th newest id we wrote goes.
            let cut = self.recent.len() - maxlen;
            (self.recent[cut].clone(), self.recent[cut - 1].clone())
        } else {
            // After a restart: read the ids of the oldest entries back.
            let excess = (len - self.maxlen) as usize;
            let old: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
                .arg(self.keys.stream())
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(excess + 1)
                .query_async(conn)
                .await?;
            if old.len() < excess + 1 {
                return Ok(());
            }
            (old[excess].0.clone(), old[excess - 1].0.clone())
        };
        let mut tx = redis::pipe();
        tx.atomic()
            .cmd("XTRIM")
            .arg(self.keys.stream())
            .arg("MINID")
            .arg("=")
            .arg(&first_kept)
            .ignore()
            .set(self.keys.stream_trimmed(), &last_trimmed)
            .ignore();
        let () = tx.query_async(conn).await?;
        while self.recent.front().is_some_and(|id| *id != first_kept) {
            self.recent.pop_front();
        }
        Ok(())
    }

    /// Writes until it succeeds or `give_up_at` passes; calls `on_error` for every
    /// failed attempt. Returns what it wrote and the latency of the successful attempt.
    pub async fn write(
        &mut self,
        conn: &mut ConnectionManager,
        batch: &Batch,
        give_up_at: impl Fn() -> Option<Instant>,
        mut on_error: impl FnMut(&redis::RedisError),
    ) -> Result<(Outcome, Duration), redis::RedisError> {
        let mut backoff = Backoff::default();
        loop {
            let started = Instant::now();
            match self.write_once(conn, batch).await {
                Ok(n) => return Ok((n, started.elapsed())),
                Err(e) => {
                    on_error(&e);
                    let delay = backoff.next_delay();
                    if give_up_at().is_some_and(|t| Instant::now() + delay > t) {
                        return Err(e);
                    }
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, events = batch.len(), "Redis write failed; holding the batch");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

/// The events to add: placed in this writer's streams, above their partition's
/// watermark, and — for outbox records —
/// with an id neither in the dedup window nor earlier in the batch. Also returns how
/// many outbox records were dropped as duplicates.
fn fresh_events<'b>(
    batch: &'b Batch,
    seen: &Seen,
    placed: impl Fn(&Event) -> bool,
) -> (Vec<&'b Event>, u64) {
    let mut fresh = Vec::with_capacity(batch.len());
    let mut in_batch = HashSet::new();
    let mut duplicates = 0;
    for e in batch.events.iter().filter(|e| placed(e)) {
        if e.offset <= seen.marks.get(&e.partition).copied().unwrap_or(-1) {
            continue;
        }
        if let Some(id) = e.outbox_id {
            if seen.outbox_ids.contains(&id) || !in_batch.insert(id) {
                duplicates += 1;
                continue;
            }
        }
        fresh.push(e);
    }
    (fresh, duplicates)
}

/// The watermarks the batch moves: each partition's last offset in the batch, where
/// that is above its watermark (dropped duplicates move it too, or they would be read
/// again after a restart).
fn moved_watermarks(batch: &Batch, marks: &BTreeMap<i32, i64>) -> Vec<(i32, i64)> {
    batch
        .last_offsets()
        .into_iter()
        .filter(|(p, last)| *last > marks.get(p).copied().unwrap_or(-1))
        .collect()
}

/// Runs a `MULTI`/`EXEC`; `None` when `EXEC` was refused (a watched key changed).
async fn exec(
    conn: &mut ConnectionManager,
    tx: redis::Pipeline,
) -> redis::RedisResult<Option<Vec<Value>>> {
    match tx.query_async::<Value>(conn).await? {
        Value::Nil => Ok(None),
        Value::Array(results) => Ok(Some(results)),
        other => Err(redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "EXEC reply",
            format!("{other:?}"),
        ))),
    }
}

/// The envelopes as one JSON array (the `PUBLISH` payload), without a JSON tree.
fn batch_json(events: &[&Event]) -> String {
    let mut payload =
        String::with_capacity(events.iter().map(|e| e.envelope.len() + 1).sum::<usize>() + 2);
    payload.push('[');
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            payload.push(',');
        }
        payload.push_str(&e.envelope);
    }
    payload.push(']');
    payload
}

/// Connects a [`ConnectionManager`] (it reconnects by itself afterwards), retrying
/// with backoff until Redis answers or `give_up_at` passes.
pub async fn connect(url: &str, give_up_at: Option<Instant>) -> anyhow::Result<ConnectionManager> {
    let client = redis::Client::open(url).map_err(|e| anyhow::anyhow!("REDIS_URL {url:?}: {e}"))?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(3)))
        .set_response_timeout(Some(Duration::from_secs(10)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2));
    let mut backoff = Backoff::default();
    loop {
        match ConnectionManager::new_with_config(client.clone(), config.clone()).await {
            Ok(c) => return Ok(c),
            Err(e) => {
                let delay = backoff.next_delay();
                if give_up_at.is_some_and(|t| Instant::now() + delay > t) {
                    return Err(anyhow::anyhow!("Redis at {url}: {e}"));
                }
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot reach Redis yet");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_json_is_an_array_of_the_envelopes() {
        let e = |envelope: &str| Event {
            partition: 0,
            offset: 0,
            timestamp: None,
            envelope: envelope.into(),
            ..Event::default()
        };
        let (a, b) = (e(r#"{"a":1}"#), e("{}"));
        assert_eq!(batch_json(&[&a, &b]), r#"[{"a":1},{}]"#);
        assert_eq!(batch_json(&[]), "[]");
    }

    fn outbox_event(partition: i32, offset: i64, id: Option<i64>) -> Event {
        Event {
            partition,
            offset,
            timestamp: None,
            envelope: "{}".into(),
            outbox_id: id,
            ..Event::default()
        }
    }

    #[test]
    fn re_sent_and_repeated_outbox_ids_are_dropped_but_move_the_watermark() {
        let batch = Batch {
            generation: 0,
            events: vec![
                outbox_event(0, 4, Some(10)), // at the watermark: already in the stream
                outbox_event(0, 5, Some(11)), // seen in the window: a re-send
                outbox_event(0, 6, Some(12)),
                outbox_event(0, 7, Some(12)), // the same row twice in one batch
                outbox_event(1, 0, None),     // not from the outbox
            ],
        };
        let seen = Seen {
            marks: BTreeMap::from([(0, 4), (1, -1)]),
            epoch: None,
            outbox_ids: HashSet::from([11]),
        };
        let (fresh, duplicates) = fresh_events(&batch, &seen, |_| true);
        let offsets: Vec<(i32, i64)> = fresh.iter().map(|e| (e.partition, e.offset)).collect();
        assert_eq!(offsets, [(0, 6), (1, 0)]);
        assert_eq!(duplicates, 2);
        assert_eq!(moved_watermarks(&batch, &seen.marks), [(0, 7), (1, 0)]);
        let behind = BTreeMap::from([(0, 9), (1, 0)]);
        assert!(moved_watermarks(&batch, &behind).is_empty());
    }

    #[test]
    fn remembers_at_most_maxlen_plus_slack_ids() {
        let mut w = Writer::new(
            Keys::default(),
            "t",
            200,
            0,
            Continuity::new(200, Default::default()),
        );
        for i in 0..1000 {
            w.remember(format!("{i}-0"));
        }
        assert_eq!(w.recent.len(), 202);
        assert_eq!(w.recent.back().unwrap(), "999-0");
        let mut none = Writer::new(
            Keys::default(),
            "t",
            0,
            0,
            Continuity::new(0, Default::default()),
        );
        none.remember("1-0".into());
        assert!(none.recent.is_empty());
    }
}
