//! Faults, one function each, on a switchboard of real parts: a redis-server (with
//! the persistence the case needs), librdkafka's mock cluster, the real sidecar and
//! the components on the host. Redis that comes back with less than it had
//! (`FLUSHALL`, a restart without persistence, a failover to a replica that missed
//! writes), Redis that keeps everything (a restart with AOF, `DEBUG RELOAD`), Redis
//! that hangs, brokers that go down or move a partition's leader, a second sidecar
//! joining: every event exactly once in the stream, and every loss told to the
//! clients (`reset`), never a silent skip or a silent replay.

mod common;

use common::sidecar::Sidecar;
use common::stream::{entries, len, wait_for};
use crm_events_contracts::keys::Keys;
use crm_events_harness::mock_kafka::Kafka;
use crm_events_harness::redis_server::{Persistence, RedisServer};
use crm_events_harness::sse_client::SseClient;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

const TOPIC: &str = "aetherlink.events";
const T: Duration = Duration::from_secs(60);

/// The parts, and the faults to throw at them.
struct Switchboard {
    redis: RedisServer,
    kafka: Kafka,
    /// The sidecars started so far (killed ones stay, stopped).
    sidecars: Vec<Sidecar>,
    /// Settings of the next sidecar beside the switchboard's own.
    sidecar_env: Vec<(&'static str, &'static str)>,
    app: common::App,
    /// Events produced so far, per partition.
    produced: Vec<usize>,
}

/// What a switchboard starts with.
struct Setup {
    persistence: Persistence,
    brokers: i32,
    sidecars: usize,
    /// Application variables of the app.
    app: &'static [(&'static str, &'static str)],
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            persistence: Persistence::None,
            brokers: 1,
            sidecars: 1,
            app: &[],
        }
    }
}

impl Switchboard {
    async fn start(setup: Setup) -> Switchboard {
        let redis = RedisServer::launch(setup.persistence).unwrap();
        let kafka = Kafka::start_on(TOPIC, 3, setup.brokers);
        let app = common::App::start(&redis, setup.app).await;
        let mut board = Switchboard {
            redis,
            kafka,
            sidecars: Vec::new(),
            sidecar_env: Vec::new(),
            app,
            produced: vec![0; 3],
        };
        for _ in 0..setup.sidecars {
            board.add_sidecar();
        }
        board
    }

    /// Starts one more sidecar in the group.
    fn add_sidecar(&mut self) {
        let mut settings = vec![
            ("KAFKA_PROP_FETCH_WAIT_MAX_MS", "5"),
            ("HEARTBEAT_TTL_SECONDS", "3"),
            ("BATCH_MAX", "200"),
            ("BATCH_LINGER_MS", "2"),
        ];
        settings.extend(self.sidecar_env.iter().copied());
        let url = self.redis.url();
        let sidecar = Sidecar::start(&url, &self.kafka.brokers(), TOPIC, &settings);
        self.sidecars.push(sidecar);
    }

    /// Waits until the stream holds at least `n` entries (`XLEN`: cheap enough to
    /// poll while the sidecar writes thousands a second).
    fn wait_stream_len(&self, n: usize) {
        let mut conn = self.redis.connection().unwrap();
        let keys = Keys::default();
        wait_for(&format!("{n} entries in the stream"), T, || {
            len(&mut conn, &keys) >= n
        });
    }

    /// Produces `n` more events, round robin over the partitions.
    fn produce(&mut self, n: usize) {
        self.produce_over(3, n);
    }

    /// Produces `n` more events, round robin over the first `partitions` partitions.
    fn produce_over(&mut self, partitions: i32, n: usize) {
        let first: usize = self.produced.iter().sum();
        let per = self.kafka.send_events(n, partitions, first);
        for (p, k) in per.iter().enumerate() {
            self.produced[p] += k;
        }
    }

    /// Waits until the stream holds every produced event, then asserts each is there
    /// exactly once and in per-partition order; returns the stream's epoch.
    fn assert_stream_complete(&self) -> String {
        let keys = Keys::default();
        let mut conn = self.redis.connection().unwrap();
        let want: usize = self.produced.iter().sum();
        wait_for("every produced event in the stream", T, || {
            domain(&entries(&mut conn, &keys)).len() >= want
        });
        let all = domain(&entries(&mut conn, &keys));
        let mut next = [0i64; 3];
        for e in &all {
            let p = e["partition"].as_u64().unwrap() as usize;
            assert_eq!(e["offset"], next[p], "partition {p} in order, once each");
            next[p] += 1;
        }
        let got: Vec<usize> = next.iter().map(|n| *n as usize).collect();
        assert_eq!(got, self.produced, "events per partition");
        self.epoch()
    }

    fn epoch(&self) -> String {
        redis::cmd("GET")
            .arg(Keys::default().stream_epoch())
            .query(&mut self.redis.connection().unwrap())
            .unwrap()
    }

    async fn client(&self, last_event_id: Option<&str>) -> SseClient {
        let headers: Vec<(&str, &str)> = last_event_id
            .map(|id| ("last-event-id", id))
            .into_iter()
            .collect();
        SseClient::connect(&self.app.url("/crm-events"), &headers).await
    }

    /// Redis data losses the (first) sidecar has detected.
    async fn losses(&self) -> f64 {
        let m = "crm_events_sidecar_redis_data_lost_total";
        self.sidecars[0].metric(m).await.unwrap_or(-1.0)
    }

    // The faults.

    fn flushall(&self) {
        let () = redis::cmd("FLUSHALL")
            .query(&mut self.redis.connection().unwrap())
            .unwrap();
    }

    fn debug_reload(&self) {
        let () = redis::cmd("DEBUG")
            .arg("RELOAD")
            .query(&mut self.redis.connection().unwrap())
            .unwrap();
    }

    fn restart_redis(&mut self) {
        self.redis.restart().unwrap();
    }

    /// Kills the sidecar SIGKILL, mid-batch if it has one.
    fn kill_sidecar(&mut self, i: usize) {
        self.sidecars[i].kill();
    }

    fn broker_down(&self, id: i32) {
        self.kafka.cluster.broker_down(id).unwrap();
    }

    fn broker_up(&self, id: i32) {
        self.kafka.cluster.broker_up(id).unwrap();
    }

    fn move_leader(&self, partition: i32, broker: i32) {
        self.kafka
            .cluster
            .partition_leader(TOPIC, partition, Some(broker))
            .unwrap();
    }
}

/// The domain events of the stream (not the epoch markers).
fn domain(entries: &[(String, Value)]) -> Vec<Value> {
    entries
        .iter()
        .filter(|(_, e)| e["kind"] == "domain_event")
        .map(|(_, e)| e.clone())
        .collect()
}

/// Reads events until a `reset` arrives; returns it (panics after `T`).
async fn next_reset(c: &mut SseClient) -> Value {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let e = c.next(left).await.expect("a reset event");
        if e.event == "reset" {
            return serde_json::from_str(&e.data).unwrap();
        }
    }
}

/// What a stream open across the loss sees.
#[derive(Clone, Copy, PartialEq)]
enum OpenStream {
    /// Its connection survives (FLUSHALL): it must be told `reset`.
    ToldReset,
    /// Its connection to Redis breaks (a restart): it ends, or is told `reset`.
    EndsOrReset,
}

/// Reads an open stream until a `reset` (`Some`) or its end (`None`).
async fn reset_or_end(c: &mut SseClient) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(!left.is_zero(), "neither a reset nor the end within {T:?}");
        match c.next(left).await {
            Some(e) if e.event == "reset" => return Some(serde_json::from_str(&e.data).unwrap()),
            Some(_) => continue,
            None => return None,
        }
    }
}

/// Redis comes back with less than it had: the sidecar rebuilds the stream from
/// Kafka under a new epoch, an open stream gets `reset` (or ends, when its
/// connection broke), and a client that resumes with an id of the old epoch gets
/// `reset` first.
async fn lost_and_rebuilt(
    mut board: Switchboard,
    expect: OpenStream,
    lose: impl FnOnce(&mut Switchboard),
) {
    board.produce(600);
    let before = board.assert_stream_complete();
    let mut open = board.client(None).await;
    let (old_id, connected) = open.next_json(T).await.unwrap();
    assert_eq!(connected["epoch"], before.as_str());

    lose(&mut board);
    board.produce(600);
    let after = board.assert_stream_complete();
    assert_ne!(after, before, "a new epoch");
    assert!(board.losses().await >= 1.0);
    match reset_or_end(&mut open).await {
        Some(reset) => assert_eq!(reset["epoch"], after.as_str()),
        None => assert!(
            expect == OpenStream::EndsOrReset,
            "the open stream ended untold"
        ),
    }
    let mut resumed = board.client(Some(&old_id)).await;
    let (_, connected) = resumed.next_json(T).await.unwrap();
    assert_eq!(connected["epoch"], after.as_str());
    let reset = next_reset(&mut resumed).await;
    assert_eq!(reset["requested"], old_id.as_str());
    // Then what the new epoch holds: every event again, each once.
    let replay = resumed.domain_events(1_200, T).await;
    let keys: std::collections::BTreeSet<(i64, i64)> = replay
        .iter()
        .map(|(_, e)| {
            (
                e["partition"].as_i64().unwrap(),
                e["offset"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(keys.len(), 1_200);
}

#[tokio::test]
async fn flushall_mid_run_is_rebuilt_under_a_new_epoch_and_told() {
    let board = Switchboard::start(Setup::default()).await;
    lost_and_rebuilt(board, OpenStream::ToldReset, |b| b.flushall()).await;
}

#[tokio::test]
async fn a_restart_without_persistence_is_rebuilt_under_a_new_epoch_and_told() {
    let board = Switchboard::start(Setup::default()).await;
    lost_and_rebuilt(board, OpenStream::EndsOrReset, |b| b.restart_redis()).await;
}

/// A failover to a replica that missed the last writes: the watermarks are behind
/// what the sidecar wrote; it re-relays from just after them, so the stream holds
/// each event once (nothing it kept is written twice).
#[tokio::test]
async fn a_failover_to_a_replica_behind_resumes_from_its_watermarks() {
    let mut board = Switchboard::start(Setup::default()).await;
    board.produce(300);
    let before = board.assert_stream_complete();
    let replica = board.redis.snapshot().unwrap();
    board.produce(300);
    board.assert_stream_complete();
    board.redis.restart_from(&replica).unwrap();
    board.produce(300);
    let after = board.assert_stream_complete();
    assert_ne!(after, before, "clients are told: a new epoch");
    let kept = domain(&entries(
        &mut board.redis.connection().unwrap(),
        &Keys::default(),
    ));
    assert_eq!(kept.len(), 900);
}

/// Redis restarted with an append-only file synced on every write, and `DEBUG
/// RELOAD`: nothing was lost, so nothing is re-relayed and the epoch stays.
#[tokio::test]
async fn a_restart_with_aof_and_debug_reload_keep_everything_and_the_epoch() {
    let mut board = Switchboard::start(Setup {
        persistence: Persistence::AofAlways,
        ..Setup::default()
    })
    .await;
    board.produce(300);
    let epoch = board.assert_stream_complete();
    let mut open = board.client(None).await;
    let (id, _) = open.next_json(T).await.unwrap();
    board.restart_redis();
    board.produce(300);
    assert_eq!(board.assert_stream_complete(), epoch);
    board.debug_reload();
    board.produce(300);
    assert_eq!(board.assert_stream_complete(), epoch);
    assert_eq!(board.losses().await, 0.0);
    // A client resuming after the restart continues exactly, without a reset.
    let mut resumed = board.client(Some(&id)).await;
    let events = resumed.domain_events(600, T).await;
    assert_eq!(events.len(), 600);
    assert!(!resumed.raw().contains("event: reset"));
}

/// AOF synced every second (the recommended setting) and Redis killed: what the
/// last second held may be gone; the sidecar finds it behind and re-relays it.
#[tokio::test]
async fn a_crash_with_aof_everysec_loses_no_event() {
    let mut board = Switchboard::start(Setup {
        persistence: Persistence::AofEverysec,
        ..Setup::default()
    })
    .await;
    board.produce(500);
    board.assert_stream_complete();
    board.restart_redis();
    board.produce(500);
    board.assert_stream_complete();
}

/// A broker restart and a partition's leader moving to another broker mid-run.
#[tokio::test]
async fn broker_restarts_and_leader_changes_lose_and_duplicate_nothing() {
    let mut board = Switchboard::start(Setup {
        brokers: 3,
        ..Setup::default()
    })
    .await;
    board.produce(600);
    board.assert_stream_complete();
    // Leaders set explicitly (the mock picks them at random): broker 2 leads only
    // partition 0, so stopping it leaves 1 and 2 writable.
    board.move_leader(0, 2);
    board.move_leader(1, 3);
    board.move_leader(2, 3);
    board.produce(600);
    board.assert_stream_complete();
    board.broker_down(2);
    board.move_leader(0, 1);
    board.produce(600);
    board.broker_up(2);
    board.produce(600);
    board.assert_stream_complete();
    let per: BTreeMap<usize, usize> = board.produced.iter().copied().enumerate().collect();
    assert_eq!(per.values().sum::<usize>(), 2_400);
}

/// A sidecar killed (SIGKILL) mid-run and started again: it resumes from the
/// watermarks in Redis, not from Kafka's committed offsets, so nothing it wrote is
/// written twice and nothing it had not is skipped.
#[tokio::test]
async fn a_sidecar_killed_mid_run_resumes_without_loss_or_duplicates() {
    let mut board = Switchboard::start(Setup {
        sidecars: 0,
        ..Setup::default()
    })
    .await;
    board.produce(20_000);
    board.add_sidecar();
    board.wait_stream_len(4_000);
    board.kill_sidecar(0);
    let at_kill = len(&mut board.redis.connection().unwrap(), &Keys::default());
    assert!(at_kill < 20_000, "the kill must land mid-run ({at_kill})");
    board.add_sidecar();
    board.assert_stream_complete();
}

/// Redis down (the process gone, then back with its AOF) while events keep coming.
#[tokio::test]
async fn a_redis_outage_mid_run_loses_and_duplicates_nothing() {
    let mut board = Switchboard::start(Setup {
        persistence: Persistence::AofAlways,
        ..Setup::default()
    })
    .await;
    board.produce(3_000);
    board.wait_stream_len(1);
    board.redis.stop();
    board.produce(3_000);
    let sidecar = &board.sidecars[0];
    sidecar.wait_ready(T, |status, _| status == 503).await;
    board.redis.restart().unwrap();
    let epoch = board.epoch();
    board.assert_stream_complete();
    assert_eq!(
        board.epoch(),
        epoch,
        "an outage that loses nothing keeps the epoch"
    );
}

/// A partition the relay has never written — its first events came while no sidecar
/// ran; a partition added to the topic while running starts the same way: no
/// watermark, no committed offset — is read from its first event, even under
/// `KAFKA_OFFSET_RESET=latest` (which is for a group's first start only: with it, the
/// partition's events from before its assignment were skipped, silently).
#[tokio::test]
async fn a_partition_the_relay_never_wrote_is_read_from_its_first_event() {
    let mut board = Switchboard::start(Setup::default()).await;
    board.produce_over(2, 1_000);
    board.assert_stream_complete();
    assert_eq!(board.produced, [500, 500, 0]);
    board.kill_sidecar(0);
    board.produce(3_000);
    board.sidecar_env = vec![("KAFKA_OFFSET_RESET", "latest")];
    board.add_sidecar();
    board.assert_stream_complete();
}

/// A second sidecar joins the group mid-run: partitions move while the first has
/// batches in flight; then the first is killed and the second takes everything.
#[tokio::test]
async fn a_rebalance_between_two_sidecars_loses_and_duplicates_nothing() {
    let mut board = Switchboard::start(Setup {
        sidecars: 0,
        ..Setup::default()
    })
    .await;
    board.produce(15_000);
    board.add_sidecar();
    board.wait_stream_len(1_000);
    board.add_sidecar();
    board.produce(3_000);
    board.assert_stream_complete();
    board.kill_sidecar(0);
    board.produce(3_000);
    board.assert_stream_complete();
}

/// Redis hangs (SIGSTOP: its connections stay open, nothing answers). Every request
/// that needs it answers `503` JSON within the host's deadline (2 s) instead of
/// hanging; the sidecar's `/readyz` says 503; a stream open across the hang stays
/// open (keepalives) and carries on with every event once Redis thaws.
#[tokio::test]
async fn a_hung_redis_answers_503_in_time_and_open_streams_carry_on() {
    let mut board = Switchboard::start(Setup {
        app: &[("keepalive_seconds", "1")],
        ..Setup::default()
    })
    .await;
    let mut open = board.client(None).await;
    open.next_json(T).await.expect("connected");
    board.produce(300);
    board.assert_stream_complete();
    assert_eq!(open.domain_events(300, T).await.len(), 300);

    board.redis.pause();
    let http = common::client();
    for path in ["/readyz", "/", "/metrics", "/crm-events"] {
        let started = std::time::Instant::now();
        let resp = http.get(board.app.url(path)).send().await.unwrap();
        let took = started.elapsed();
        assert_eq!(resp.status(), 503, "{path}");
        let body: Value = resp.json().await.unwrap();
        let why = if path == "/readyz" {
            &body["failed"][0]
        } else {
            &body["error"]
        };
        let why = why.as_str().unwrap_or_default();
        assert!(
            body["ok"] == false && why.starts_with("redis"),
            "{path}: {body}"
        );
        assert!(took < Duration::from_secs(4), "{path} took {took:?}");
    }
    board.sidecars[0]
        .wait_ready(T, |status, _| status == 503)
        .await;
    board.produce(300);
    board.redis.resume();

    let after = open.domain_events(300, T).await;
    let offsets: Vec<i64> = after
        .iter()
        .map(|(_, e)| e["offset"].as_i64().unwrap())
        .collect();
    assert_eq!(offsets.len(), 300, "the open stream carried on");
    assert!(
        offsets.iter().all(|o| (100..200).contains(o)),
        "{offsets:?}"
    );
    board.assert_stream_complete();
}
