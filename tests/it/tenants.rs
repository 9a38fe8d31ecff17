//! Tenant streams end to end (mock Kafka → the real sidecar → Redis → the real `sse`
//! component): each tenant-scoped subscriber reads its own tenant's stream and learns
//! nothing of other tenants; retention is per tenant; tenants live on Redis shards;
//! positions from the all-tenants stream move over exactly or with a `reset`.

mod common;

use common::sidecar::Sidecar;
use common::{client, App};
use crm_events_contracts::keys::Keys;
use crm_events_contracts::tenant::shard_of;
use crm_events_harness::mock_kafka::Kafka;
use crm_events_harness::redis_server::RedisServer;
use crm_events_harness::sse_client::SseClient;
use crm_events_harness::tokens::{auth_vars, token};
use jsonwebtoken::Algorithm;
use serde_json::Value;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);
const TOPIC: &str = "aetherlink.events";

async fn app(redis: &RedisServer, extra: &[(&str, &str)]) -> App {
    let mut vars = auth_vars(&[Algorithm::EdDSA]);
    vars.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    App::start(redis, &vars).await
}

/// Redis, the mock Kafka, the app (`app_vars`) and the sidecar (`sidecar_env`).
struct Rig {
    redis: RedisServer,
    kafka: Kafka,
    app: App,
    _sidecar: Sidecar,
}

async fn rig(app_vars: &[(&str, &str)], sidecar_env: &[(&str, &str)]) -> Rig {
    let redis = RedisServer::start().unwrap();
    let kafka = Kafka::start(TOPIC, 3);
    let app = app(&redis, app_vars).await;
    let sidecar = Sidecar::start(&redis.url(), &kafka.brokers(), TOPIC, sidecar_env);
    Rig {
        redis,
        kafka,
        app,
        _sidecar: sidecar,
    }
}

fn bearer(subject: &str, tenants: &[&str]) -> String {
    format!("Bearer {}", token(subject, tenants))
}

/// Sends one event of `tenant` (its `Seq` in the value) to partition `seq % 3`.
fn send(kafka: &Kafka, tenant: &str, seq: usize) {
    let value = format!(r#"{{"Type":"JobUpdated","TenantId":"{tenant}","Seq":{seq}}}"#);
    kafka.send(
        (seq % 3) as i32,
        Some(b"JobUpdated"),
        Some(value.as_bytes()),
    );
}

/// The frames of a raw SSE text with what differs between runs by nature (the
/// tenant's own ids and Kafka timestamps) blanked.
fn normalised(raw: &str) -> String {
    raw.lines()
        .map(|l| match l.strip_prefix("id: ") {
            Some(_) => "id: <id>".to_string(),
            None => blank_timestamps(l),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn blank_timestamps(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find("\"timestamp\":") {
        let (head, tail) = rest.split_at(at + "\"timestamp\":".len());
        out.push_str(head);
        out.push_str("<t>");
        rest = tail.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

/// Collects a client's frames until it has `n` more domain events; returns the raw
/// text received meanwhile.
async fn frames_until(c: &mut SseClient, n: usize) -> String {
    let before = c.raw().len();
    let got = c.domain_events(n, T).await;
    assert_eq!(got.len(), n);
    c.raw()[before..].to_string()
}

/// The `Seq`s of domain events, sorted (events of several partitions arrive in no
/// one order).
fn sorted_seqs(events: &[(String, Value)]) -> Vec<i64> {
    let mut seqs: Vec<i64> = events
        .iter()
        .map(|(_, e)| e["value"]["Seq"].as_i64().unwrap())
        .collect();
    seqs.sort_unstable();
    seqs
}

/// Waits until the tenant streams' watermark of every partition reached `last[p]`.
fn wait_for_tenant_watermarks(redis: &RedisServer, last: &[i64]) {
    let keys = Keys::default();
    common::stream::wait_for("the tenant streams' watermarks", T, || {
        let mut c = redis.connection().unwrap();
        last.iter().enumerate().all(|(p, want)| {
            let field = Keys::offsets_field(TOPIC, p as i32);
            let mark: Option<i64> = redis::cmd("HGET")
                .arg(keys.tenants_offsets())
                .arg(field)
                .query(&mut c)
                .unwrap_or(None);
            mark == Some(*want)
        })
    });
}

/// A tenant's subscriber gets the same bytes whether the other tenants are silent or
/// busy: no id-only frames, no partition, offset or outbox id, keepalives on its own
/// clock. The operator's stream still carries everything.
#[tokio::test]
async fn a_tenants_frames_do_not_depend_on_other_tenants() {
    let Rig {
        redis: _redis,
        kafka,
        app,
        _sidecar,
    } = rig(&[("keepalive_seconds", "1"), ("linger_ms", "0")], &[]).await;
    let auth = bearer("ada", &["acme"]);
    let mut acme = SseClient::connect(&app.url("/crm-events"), &[("authorization", &auth)]).await;
    assert_eq!(acme.next_json(T).await.unwrap().1["kind"], "connected");
    let ops = bearer("ops", &["*"]);
    let mut operator =
        SseClient::connect(&app.url("/crm-events"), &[("authorization", &ops)]).await;
    operator.next(T).await.unwrap();

    // Others silent: five of acme's events, one at a time.
    let mut quiet = String::new();
    for seq in 0..5 {
        send(&kafka, "acme", seq);
        kafka.flush();
        quiet.push_str(&frames_until(&mut acme, 1).await);
    }
    // Others busy: the same five between 600 events of 30 other tenants.
    let mut busy = String::new();
    for seq in 0..5 {
        for i in 0..120 {
            send(&kafka, &format!("other-{}", i % 30), 1000 + seq * 120 + i);
        }
        send(&kafka, "acme", seq);
        kafka.flush();
        busy.push_str(&frames_until(&mut acme, 1).await);
    }
    let strip = |raw: &str| {
        normalised(raw)
            .lines()
            .filter(|l| !l.starts_with(':') && !l.is_empty())
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        strip(&busy),
        strip(&quiet),
        "busy:\n{busy}\nquiet:\n{quiet}"
    );
    for line in busy.lines().filter(|l| l.starts_with("data: ")) {
        let e: Value = serde_json::from_str(&line[6..]).unwrap();
        let fields: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            fields,
            ["key", "kind", "timestamp", "topic", "value"],
            "{line}"
        );
        assert_eq!(e["value"]["TenantId"], "acme");
    }
    // While only others are busy, acme's stream says nothing but keepalives.
    let before = acme.raw().len();
    for i in 0..600 {
        send(&kafka, &format!("other-{}", i % 30), 5000 + i);
    }
    kafka.flush();
    let seen = operator.domain_events(5 + 600 + 600, T).await;
    assert!(seen
        .iter()
        .all(|(_, e)| e["partition"].is_u64() && e["offset"].is_u64()));
    // Two keepalives: a second of its own silence each, whatever the others did.
    let two = |raw: &str| raw[before..].matches(": keepalive").count() >= 2;
    assert!(
        acme.wait_raw(Duration::from_secs(10), two).await,
        "keepalives on its own clock"
    );
    let idle = acme.raw()[before..].to_string();
    assert!(
        idle.lines()
            .filter(|l| !l.is_empty())
            .all(|l| l == ": keepalive"),
        "acme saw other tenants' traffic: {idle:?}"
    );
}

/// A token for several tenants names one with `?tenant=` (400 without); an operator
/// may read one tenant's stream the same way; events of no tenant reach operators only.
#[tokio::test]
async fn several_tenants_choose_one_and_events_without_a_tenant_are_operators_only() {
    let Rig {
        redis: _redis,
        kafka,
        app,
        _sidecar,
    } = rig(&[], &[]).await;
    let both = bearer("bo", &["t1", "t2"]);
    let r = client()
        .get(app.url("/crm-events"))
        .header("authorization", &both)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (body["error"].as_str(), body["parameter"].as_str()),
        (Some("tenant_required"), Some("tenant"))
    );
    let mut t2 = SseClient::connect(
        &app.url("/crm-events?tenant=t2"),
        &[("authorization", &both)],
    )
    .await;
    t2.next(T).await.unwrap();
    let ops = bearer("ops", &["*"]);
    let mut op_t1 = SseClient::connect(
        &app.url("/crm-events?tenant=t1"),
        &[("authorization", &ops)],
    )
    .await;
    op_t1.next(T).await.unwrap();
    let mut op_all = SseClient::connect(&app.url("/crm-events"), &[("authorization", &ops)]).await;
    op_all.next(T).await.unwrap();
    kafka.send(0, Some(b"Audit"), Some(br#"{"Type":"Audit","Seq":0}"#));
    send(&kafka, "t1", 1);
    send(&kafka, "t2", 2);
    kafka.flush();
    let got = t2.domain_events(1, T).await;
    assert_eq!(got[0].1["value"]["Seq"], 2);
    let got = op_t1.domain_events(1, T).await;
    assert_eq!(got[0].1["value"]["Seq"], 1);
    let all: Vec<Value> = op_all
        .domain_events(3, T)
        .await
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    assert!(
        all.iter().any(|e| e["value"]["Type"] == "Audit"),
        "events without a tenant reach operators"
    );
}

/// Each tenant stream keeps its own count: a loud tenant's history is trimmed (a
/// resume before it is told of the gap) while a quiet tenant keeps all of its own.
#[tokio::test]
async fn a_loud_tenant_cannot_evict_a_quiet_tenants_history() {
    let Rig {
        redis,
        kafka,
        app,
        _sidecar,
    } = rig(
        &[],
        &[("TENANT_STREAM_MAXLEN", "100"), ("STREAM_MAXLEN", "200")],
    )
    .await;
    let quiet = bearer("q", &["quiet"]);
    let mut live = SseClient::connect(&app.url("/crm-events"), &[("authorization", &quiet)]).await;
    live.next(T).await.unwrap();
    for seq in 0..3 {
        send(&kafka, "quiet", seq);
    }
    kafka.flush();
    let first = live.domain_events(3, T).await;
    for seq in 3..1503 {
        send(&kafka, "loud", seq);
    }
    kafka.flush();
    let loud = bearer("l", &["loud"]);
    let loud_len = || {
        let mut c = redis.connection().unwrap();
        let key = Keys::default().tenant_stream("loud");
        redis::cmd("XLEN")
            .arg(key)
            .query::<u64>(&mut c)
            .unwrap_or(0)
    };
    wait_for_tenant_watermarks(&redis, &[500, 500, 500]);
    // The quiet tenant resumes from its first event: the other two, no gap.
    let mut resumed = SseClient::connect(
        &app.url("/crm-events"),
        &[("authorization", &quiet), ("last-event-id", &first[0].0)],
    )
    .await;
    resumed.next(T).await.unwrap();
    let again = resumed.domain_events(2, T).await;
    let seqs = |events: &[(String, Value)]| -> Vec<Value> {
        events
            .iter()
            .map(|(_, e)| e["value"]["Seq"].clone())
            .collect()
    };
    assert_eq!(seqs(&again), seqs(&first[1..]));
    assert!(
        !resumed.raw().contains("\"kind\":\"gap\""),
        "{}",
        resumed.raw()
    );
    // The loud tenant kept its newest 100 (at most 1% more).
    let len = loud_len();
    assert!((100..=101).contains(&len), "{len}");
    // A loud resume from the start is told what it lost.
    let mut old =
        SseClient::connect(&app.url("/crm-events?since=0"), &[("authorization", &loud)]).await;
    old.next(T).await.unwrap();
    let gap = old.next_json(T).await.unwrap().1;
    assert_eq!(
        (gap["kind"].as_str(), gap["reason"].as_str()),
        (Some("gap"), Some("trimmed"))
    );
}

/// Entries older than the retention are trimmed from a live stream (a replay from
/// before them is told of the gap), and the stream of a tenant that went quiet
/// expires whole.
#[tokio::test]
async fn tenant_streams_are_trimmed_by_age_and_quiet_ones_expire() {
    let Rig {
        redis,
        kafka,
        app,
        _sidecar,
    } = rig(&[], &[("TENANT_RETENTION_SECONDS", "3")]).await;
    let auth = bearer("a", &["aged"]);
    let mut live = SseClient::connect(&app.url("/crm-events"), &[("authorization", &auth)]).await;
    live.next(T).await.unwrap();
    let keys = Keys::default();
    let mut c = redis.connection().unwrap();
    let mut ids = Vec::new();
    for seq in 0..3 {
        send(&kafka, "aged", seq);
        if seq == 0 {
            send(&kafka, "gone", 100);
        }
        kafka.flush();
        let got = live.domain_events(1, T).await;
        assert_eq!(got[0].1["value"]["Seq"], seq);
        ids.push(crm_events_harness::sse_client::stream_id(&got[0].0).to_string());
        if seq < 2 {
            tokio::time::sleep(Duration::from_millis(1800)).await;
        }
    }
    let entry = |c: &mut redis::Connection, id: &str| -> usize {
        let found: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(keys.tenant_stream("aged"))
            .arg(id)
            .arg(id)
            .query(c)
            .unwrap();
        found.len()
    };
    assert_eq!(entry(&mut c, &ids[0]), 0, "3.6 s old: trimmed");
    assert_eq!((entry(&mut c, &ids[1]), entry(&mut c, &ids[2])), (1, 1));
    let mut replay =
        SseClient::connect(&app.url("/crm-events?since=0"), &[("authorization", &auth)]).await;
    replay.next(T).await.unwrap();
    let gap = replay.next_json(T).await.unwrap().1;
    assert_eq!(
        (gap["kind"].as_str(), gap["reason"].as_str()),
        (Some("gap"), Some("trimmed"))
    );
    let rest = replay.domain_events(2, T).await;
    assert_eq!(rest[0].1["value"]["Seq"], 1);
    // "gone" wrote nothing for longer than its retention: its keys are gone.
    let exists = |c: &mut redis::Connection, key: &str| {
        redis::cmd("EXISTS").arg(key).query::<u64>(c).unwrap() == 1
    };
    assert!(!exists(&mut c, &keys.tenant_stream("gone")));
    assert!(!exists(&mut c, &keys.tenant_epoch("gone")));
}

/// A client of an earlier release resumes with an id of the all-tenants stream: when
/// it missed nothing of its tenant it carries on exactly; when it did, it gets a
/// `reset` and the tenant's stream from the start, never a silent skip.
#[tokio::test]
async fn positions_from_the_all_tenants_stream_move_over_exactly_or_with_a_reset() {
    let Rig {
        redis: _redis,
        kafka,
        app,
        _sidecar,
    } = rig(&[], &[]).await;
    let ops = bearer("ops", &["*"]);
    let mut all = SseClient::connect(&app.url("/crm-events"), &[("authorization", &ops)]).await;
    all.next(T).await.unwrap();
    send(&kafka, "m1", 0);
    send(&kafka, "m2", 1);
    kafka.flush();
    let seen = all.domain_events(2, T).await;
    let caught_up = seen[1].0.clone(); // past m1's only event
    let m1 = bearer("u", &["m1"]);
    let mut exact = SseClient::connect(
        &app.url("/crm-events"),
        &[("authorization", &m1), ("last-event-id", &caught_up)],
    )
    .await;
    exact.next(T).await.unwrap();
    send(&kafka, "m1", 2);
    kafka.flush();
    let next = exact.domain_events(1, T).await;
    assert_eq!(next[0].1["value"]["Seq"], 2, "exactly what came after");
    assert!(!exact.raw().contains("event: reset"), "{}", exact.raw());
    // Behind: an m1 event came after the position.
    let behind = seen[0].0.clone();
    let mut reset = SseClient::connect(
        &app.url("/crm-events"),
        &[("authorization", &m1), ("last-event-id", &behind)],
    )
    .await;
    reset.next(T).await.unwrap();
    let r = reset.next(T).await.unwrap();
    assert_eq!(r.event, "reset");
    let r: Value = serde_json::from_str(&r.data).unwrap();
    assert_eq!(r["reason"], "stream_changed");
    let replay = reset.domain_events(2, T).await;
    let seqs: Vec<&Value> = replay.iter().map(|(_, e)| &e["value"]["Seq"]).collect();
    assert_eq!(seqs, [0, 2]);
}

/// Tenants on two Redis shards: each stream lives on the shard its tenant hashes to;
/// with one shard down its tenants get `503` and `Retry-After` while the others
/// stream on; when it returns, nothing is lost or repeated.
#[tokio::test]
async fn a_shard_down_holds_only_its_own_tenants() {
    let (primary, mut shard_b) = (
        RedisServer::start().unwrap(),
        RedisServer::start_persistent().unwrap(),
    );
    let shards = format!("{},{}", primary.url(), shard_b.url());
    let kafka = Kafka::start(TOPIC, 3);
    let listed = format!("{},{}", primary.host_port(), shard_b.host_port());
    let port = shard_b.host_port().rsplit_once(':').unwrap().1.to_string();
    let shard_vars = [
        ("redis_shards", listed.as_str()),
        ("redis_shard_port", &port),
    ];
    let app = app(&primary, &shard_vars).await;
    let mut sidecar = Sidecar::start(
        &primary.url(),
        &kafka.brokers(),
        TOPIC,
        &[("REDIS_SHARDS", &shards)],
    );
    let on = |shard: usize| {
        (0..)
            .map(|i| format!("tenant-{i}"))
            .find(|t| shard_of(t, 2) == shard)
            .unwrap()
    };
    let (a, b) = (on(0), on(1));
    let mut on_a = SseClient::connect(
        &app.url("/crm-events"),
        &[("authorization", &bearer("a", &[&a]))],
    )
    .await;
    on_a.next(T).await.unwrap();
    for seq in 0..20 {
        send(&kafka, &a, seq);
        send(&kafka, &b, 100 + seq);
    }
    kafka.flush();
    on_a.domain_events(20, T).await;
    let keys = Keys::default();
    let xlen = |server: &RedisServer, t: &str| -> u64 {
        let mut c = server.connection().unwrap();
        redis::cmd("XLEN")
            .arg(keys.tenant_stream(t))
            .query(&mut c)
            .unwrap()
    };
    common::stream::wait_for("b's events on shard B", T, || xlen(&shard_b, &b) >= 20);
    assert_eq!(
        (xlen(&primary, &b), xlen(&shard_b, &a)),
        (0, 0),
        "each on its own shard"
    );

    shard_b.stop();
    let r = client()
        .get(app.url("/crm-events"))
        .header("authorization", bearer("b", &[&b]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "redis_unavailable");
    for seq in 20..40 {
        send(&kafka, &a, seq);
        send(&kafka, &b, 100 + seq);
    }
    kafka.flush();
    let got = on_a.domain_events(20, T).await;
    assert_eq!(
        sorted_seqs(&got),
        (20..40).collect::<Vec<_>>(),
        "shard A's tenants stream on"
    );

    shard_b.restart().unwrap();
    // The app reconnects to the shard within its Retry-After.
    let b_auth = bearer("b", &[&b]);
    crm_events_harness::wait::until("shard B serving again", T, || async {
        let r = client()
            .get(app.url("/crm-events?tail=1"))
            .header("authorization", &b_auth);
        r.send().await.is_ok_and(|r| r.status() == 200)
    })
    .await
    .unwrap();
    let mut on_b = SseClient::connect(
        &app.url("/crm-events?since=0"),
        &[("authorization", &bearer("b", &[&b]))],
    )
    .await;
    on_b.next(T).await.unwrap();
    let got = on_b.domain_events(40, Duration::from_secs(60)).await;
    assert_eq!(
        sorted_seqs(&got),
        (100..140).collect::<Vec<_>>(),
        "every event of b once"
    );
    assert!(on_b
        .next_json(Duration::from_millis(500))
        .await
        .is_none_or(|(_, e)| e["kind"] != "domain_event"));
    sidecar.terminate();
    assert!(sidecar.exit_status(T).await.success());
}
