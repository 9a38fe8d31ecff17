//! `/crm-events` through the real `sse` component on the test host, against a real
//! Redis, and end to end with the sidecar and the mock Kafka broker.

mod common;

use common::sidecar::Sidecar;
use common::{client, App};
use crm_events_contracts::keys::Keys;
use crm_events_harness::mock_kafka::Kafka;
use crm_events_harness::redis_server::RedisServer;
use crm_events_harness::sse_client::{stream_id, SseClient};
use serde_json::Value;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(20);
const TOPIC: &str = "aetherlink.events";

/// Appends an envelope to the stream as the sidecar would; returns the entry id.
fn add(conn: &mut redis::Connection, id: &str, offset: i64, tenant: &str, kind: &str) -> String {
    let value = format!(r#"{{"Type":"{kind}","TenantId":"{tenant}","JobId":{offset}}}"#);
    common::stream::append(conn, id, offset, Some(kind.as_bytes()), &value)
}

fn add_many(conn: &mut redis::Connection, n: i64) -> Vec<String> {
    (0..n)
        .map(|i| add(conn, "*", i, "t1", "JobCreated"))
        .collect()
}

async fn metric(app: &App, line_prefix: &str) -> Option<f64> {
    let text = client()
        .get(app.url("/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn wait_metric(app: &App, prefix: &str, want: f64) {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let now = metric(app, prefix).await;
        if now == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{prefix} never became {want} (last: {now:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn stream_starts_with_retry_and_connected_then_relays_new_events() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis.connection().unwrap();
    add_many(&mut conn, 3); // history: not sent to a client that does not ask for it
    let app = App::start(&redis, &[("retry_ms", "1500")]).await;
    let mut c = SseClient::connect(&app.url("/crm-events"), &[]).await;
    assert_eq!(c.headers["content-type"], "text/event-stream");
    assert_eq!(c.headers["cache-control"], "no-cache");
    assert_eq!(c.headers["x-accel-buffering"], "no");

    let first = c.next(T).await.expect("connected event");
    assert!(c.raw().starts_with("retry: 1500\n"), "{:?}", c.raw());
    let connected: Value = serde_json::from_str(&first.data).unwrap();
    assert_eq!(connected["kind"], "connected");
    assert_eq!(connected["topic"], TOPIC);
    assert_eq!(connected["group"], "crm-events-sse");

    let ids: Vec<String> = (10..13)
        .map(|i| add(&mut conn, "*", i, "t1", "JobCreated"))
        .collect();
    let got = c.domain_events(3, T).await;
    let got_ids: Vec<&str> = got.iter().map(|(id, _)| stream_id(id)).collect();
    assert_eq!(got_ids, ids);
    assert_eq!(got[0].1["offset"], 10);
    assert_eq!(got[2].1["value"]["JobId"], 12);
}

#[tokio::test]
async fn kafka_to_sse_end_to_end_in_order_with_hostile_values_intact() {
    let redis = RedisServer::start().unwrap();
    let kafka = Kafka::start(TOPIC, 3);
    let app = App::start(&redis, &[]).await;
    let _sidecar = Sidecar::start(&redis.url(), &kafka.brokers(), TOPIC, &[]);
    let mut c = SseClient::connect(&app.url("/crm-events"), &[]).await;
    assert_eq!(c.next_json(T).await.unwrap().1["kind"], "connected");

    let per = kafka.send_events(299, 3, 0);
    kafka.send(1, Some(b"Note"), Some(b"line one\n\ndata: x\r\nid: 0"));
    kafka.flush();
    let got = c.domain_events(300, Duration::from_secs(60)).await;
    let mut next = [0i64; 3];
    let mut hostile = None;
    for (_, e) in &got {
        let p = e["partition"].as_u64().unwrap() as usize;
        assert_eq!(
            e["offset"].as_i64().unwrap(),
            next[p],
            "partition {p} out of order"
        );
        next[p] += 1;
        if e["key"] == "Note" {
            hostile = Some(e.clone());
        }
    }
    assert_eq!(next.iter().sum::<i64>(), 300);
    assert_eq!(next[0] as usize, per[0]);
    let hostile = hostile.expect("the text value arrived as one event");
    assert_eq!(hostile["value"], "line one\n\ndata: x\r\nid: 0");
    assert_eq!(hostile["value_encoding"], "text");
}

#[tokio::test]
async fn last_event_id_resumes_exactly_after_that_event() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis.connection().unwrap();
    let ids = add_many(&mut conn, 200);
    let app = App::start(&redis, &[]).await;

    let mut c = SseClient::connect(&app.url("/crm-events"), &[("last-event-id", &ids[99])]).await;
    let connected = c.next(T).await.unwrap();
    assert_eq!(
        stream_id(&connected.id),
        ids[99],
        "connected carries the resume position"
    );
    let got = c.domain_events(100, T).await;
    assert_eq!(got[0].1["offset"], 100, "the next event after #100 is #101");
    let got_ids: Vec<&str> = got.iter().map(|(id, _)| stream_id(id)).collect();
    assert_eq!(got_ids, ids[100..], "none repeated, none missing");

    // The query parameter works the same for clients that cannot set headers.
    let url = app.url(&format!("/crm-events?last_event_id={}", ids[197]));
    let mut c = SseClient::connect(&url, &[]).await;
    let got = c.domain_events(2, T).await;
    assert_eq!(stream_id(&got[0].0), ids[198]);
    assert_eq!(stream_id(&got[1].0), ids[199]);
}

#[tokio::test]
async fn since_replays_from_a_time() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis.connection().unwrap();
    for (i, ms) in [1_000u64, 2_000, 3_000, 4_000].iter().enumerate() {
        add(&mut conn, &format!("{ms}-0"), i as i64, "t1", "JobCreated");
    }
    let app = App::start(&redis, &[]).await;
    let mut c = SseClient::connect(&app.url("/crm-events?since=3000"), &[]).await;
    let got = c.domain_events(2, T).await;
    assert_eq!(stream_id(&got[0].0), "3000-0");
    assert_eq!(stream_id(&got[1].0), "4000-0");
    let mut c = SseClient::connect(&app.url("/crm-events?since=1970-01-01T00:00:02Z"), &[]).await;
    assert_eq!(stream_id(&c.domain_events(1, T).await[0].0), "2000-0");
}

#[tokio::test]
async fn trimmed_history_yields_a_gap_event_then_the_stream() {
    let redis = RedisServer::start().unwrap();
    let kafka = Kafka::start(TOPIC, 1);
    let app = App::start(&redis, &[]).await;
    let _sidecar = Sidecar::start(
        &redis.url(),
        &kafka.brokers(),
        TOPIC,
        &[("STREAM_MAXLEN", "50")],
    );
    let mut early = SseClient::connect(&app.url("/crm-events"), &[]).await;
    early.next(T).await.unwrap();
    kafka.send_events(1, 1, 0);
    let (seen, _) = early.domain_events(1, T).await.remove(0);
    drop(early);

    // 199 more events while the client is away; the sidecar keeps about 50.
    kafka.send_events(199, 1, 1);
    let url = redis.url();
    let keys = Keys::default();
    tokio::task::spawn_blocking(move || {
        common::stream::wait_for_watermarks(&url, &keys, TOPIC, &[199], Duration::from_secs(60))
    })
    .await
    .unwrap();
    let mut conn = redis.connection().unwrap();
    // The trim follows the write that moved the watermark.
    common::stream::wait_for("the trim", T, || {
        common::stream::len(&mut conn, &Keys::default()) <= 51
    });
    let kept = common::stream::entries(&mut conn, &Keys::default());
    assert!(
        kept.len() <= 51,
        "trimmed to STREAM_MAXLEN (+1%): {}",
        kept.len()
    );

    let mut c = SseClient::connect(&app.url("/crm-events"), &[("last-event-id", &seen)]).await;
    assert_eq!(c.next_json(T).await.unwrap().1["kind"], "connected");
    let (_, gap) = c.next_json(T).await.unwrap();
    assert_eq!(gap["kind"], "gap");
    assert_eq!(gap["reason"], "trimmed");
    assert_eq!(gap["requested"], stream_id(&seen));
    assert_eq!(gap["oldest"], kept[0].0.as_str());
    let got = c.domain_events(kept.len(), T).await;
    assert_eq!(
        stream_id(&got[0].0),
        kept[0].0,
        "then the stream continues from the oldest entry"
    );
    assert_eq!(got.last().unwrap().1["offset"], 199);

    // Resuming from an entry that is still there reports no gap.
    let mut c = SseClient::connect(&app.url("/crm-events"), &[("last-event-id", &kept[3].0)]).await;
    c.next(T).await.unwrap();
    let (id, e) = c.next_json(T).await.unwrap();
    assert_eq!(
        (stream_id(&id), e["kind"].as_str()),
        (kept[4].0.as_str(), Some("domain_event"))
    );

    // A position beyond the stream (Redis lost its data): gap "reset", then everything.
    let mut c = SseClient::connect(
        &app.url("/crm-events"),
        &[("last-event-id", "99999999999999-0")],
    )
    .await;
    c.next(T).await.unwrap();
    let (_, gap) = c.next_json(T).await.unwrap();
    assert_eq!(gap["reason"], "reset");
    assert_eq!(stream_id(&c.domain_events(1, T).await[0].0), kept[0].0);
}

#[tokio::test]
async fn malformed_positions_get_400_json_before_the_stream() {
    let redis = RedisServer::start().unwrap();
    let app = App::start(&redis, &[]).await;
    for (path, header, parameter) in [
        ("/crm-events", Some("abc"), "Last-Event-ID"),
        ("/crm-events?last_event_id=12-x", None, "last_event_id"),
        ("/crm-events?since=next-tuesday", None, "since"),
    ] {
        let mut req = client().get(app.url(path));
        if let Some(h) = header {
            req = req.header("last-event-id", h);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{path}");
        assert_eq!(resp.headers()["content-type"], "application/json");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "bad_request");
        assert_eq!(body["parameter"], parameter);
    }
}

#[tokio::test]
async fn filters_skip_events_but_advance_the_position() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis.connection().unwrap();
    let app = App::start(&redis, &[]).await;
    // Two tenants: the operator's all-tenants stream, filtered (one tenant would be
    // that tenant's own stream, where no other tenant's event is to skip).
    let mut c = SseClient::connect(
        &app.url("/crm-events?tenant=t1,t9&type=JobCreated,JobDeleted"),
        &[],
    )
    .await;
    c.next(T).await.unwrap();
    let a = add(&mut conn, "*", 0, "t1", "JobCreated");
    add(&mut conn, "*", 1, "t2", "JobCreated");
    add(&mut conn, "*", 2, "t1", "JobUpdated");
    let d = add(&mut conn, "*", 3, "t1", "JobDeleted");
    let last = add(&mut conn, "*", 4, "t3", "JobDeleted");
    let got = c.domain_events(2, T).await;
    assert_eq!(
        (stream_id(&got[0].0), stream_id(&got[1].0)),
        (a.as_str(), d.as_str())
    );
    // The trailing filtered event still moves the client's Last-Event-ID.
    assert!(
        c.wait_raw(T, |raw| raw.contains(&format!("id: {last}.")))
            .await
    );
    assert!(!c.raw().contains("\"TenantId\":\"t2\""));
}

#[tokio::test]
async fn keepalive_comments_arrive_while_idle() {
    let redis = RedisServer::start().unwrap();
    let app = App::start(&redis, &[("keepalive_seconds", "1")]).await;
    let mut c = SseClient::connect(&app.url("/crm-events"), &[]).await;
    c.next(T).await.unwrap();
    assert!(
        c.wait_raw(Duration::from_secs(5), |raw| raw
            .matches(": keepalive\n\n")
            .count()
            >= 2)
            .await
    );
}

#[tokio::test]
async fn leases_count_clients_and_a_disconnect_frees_its_lease() {
    let redis = RedisServer::start().unwrap();
    let app = App::start(&redis, &[("keepalive_seconds", "1")]).await;
    let mut a = SseClient::connect(&app.url("/crm-events"), &[]).await;
    let mut b = SseClient::connect(&app.url("/crm-events"), &[]).await;
    a.next(T).await.unwrap();
    b.next(T).await.unwrap();
    wait_metric(&app, "crm_events_sse_clients ", 2.0).await;
    drop(a);
    wait_metric(&app, "crm_events_sse_clients ", 1.0).await;
    drop(b);
    wait_metric(&app, "crm_events_sse_clients ", 0.0).await;
    let deadline = tokio::time::Instant::now() + T;
    while app.host.live_instances() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stream instances did not end"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn max_clients_answers_503_with_retry_after() {
    let redis = RedisServer::start().unwrap();
    let app = App::start(&redis, &[("max_clients", "2")]).await;
    let _a = SseClient::connect(&app.url("/crm-events"), &[]).await;
    let _b = SseClient::connect(&app.url("/crm-events"), &[]).await;
    let resp = client().get(app.url("/crm-events")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(resp.headers()["retry-after"], "5");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "too_many_clients");
    assert_eq!(body["max_clients"], 2);
}

#[tokio::test]
async fn max_stream_seconds_ends_the_response_cleanly() {
    let redis = RedisServer::start().unwrap();
    let app = App::start(&redis, &[("max_stream_seconds", "1")]).await;
    let started = std::time::Instant::now();
    let mut c = SseClient::connect(&app.url("/crm-events"), &[]).await;
    c.next(T).await.unwrap();
    // The stream ends by itself: the next read returns the end, not a timeout.
    assert!(c.next(Duration::from_secs(10)).await.is_none());
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        c.raw().contains(": stream time limit reached"),
        "{}",
        c.raw()
    );
}

#[tokio::test]
async fn cors_is_off_by_default_and_explicit_when_set() {
    let redis = RedisServer::start().unwrap();
    let closed = App::start(&redis, &[]).await;
    let resp = client()
        .request(reqwest::Method::OPTIONS, closed.url("/crm-events"))
        .header("origin", "https://ops.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    assert!(resp.headers().get("access-control-allow-origin").is_none());

    let open = App::start(&redis, &[("cors_allowed_origins", "https://ops.example")]).await;
    let resp = client()
        .request(reqwest::Method::OPTIONS, open.url("/crm-events"))
        .header("origin", "https://ops.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://ops.example"
    );
    assert!(resp.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("last-event-id"));
    let c = SseClient::connect(
        &open.url("/crm-events"),
        &[("origin", "https://ops.example")],
    )
    .await;
    assert_eq!(
        c.headers["access-control-allow-origin"],
        "https://ops.example"
    );
    let other = client()
        .get(open.url("/crm-events?since=bad"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn fifty_clients_each_receive_all_1000_events_in_order() {
    let redis = RedisServer::start().unwrap();
    let kafka = Kafka::start(TOPIC, 3);
    let app = App::start(&redis, &[]).await;
    let _sidecar = Sidecar::start(&redis.url(), &kafka.brokers(), TOPIC, &[]);
    let mut clients = Vec::new();
    for _ in 0..50 {
        let mut c = SseClient::connect(&app.url("/crm-events"), &[]).await;
        c.next(T).await.unwrap();
        clients.push(c);
    }
    kafka.send_events(1000, 3, 0);
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move { c.domain_events(1000, Duration::from_secs(90)).await })
        })
        .collect();
    let mut reference: Option<Vec<String>> = None;
    for t in tasks {
        let got = t.await.unwrap();
        let ids: Vec<String> = got.iter().map(|(id, _)| id.clone()).collect();
        let mut sorted = ids.clone();
        sorted.sort_by_key(|id| {
            stream_id(id)
                .parse::<crm_events_contracts::stream_id::StreamId>()
                .unwrap()
        });
        sorted.dedup();
        assert_eq!(sorted, ids, "ids strictly increasing");
        match &reference {
            None => reference = Some(ids),
            Some(r) => assert_eq!(
                r, &ids,
                "every client sees the same events in the same order"
            ),
        }
    }
    wait_metric(&app, "crm_events_messages_total ", 50_000.0).await;
}

#[tokio::test]
async fn a_redis_outage_ends_the_stream_cleanly_and_resume_is_exact_after() {
    let mut redis = RedisServer::start_persistent().unwrap();
    let mut conn = redis.connection().unwrap();
    let app = App::start(&redis, &[]).await;
    let mut c = SseClient::connect(&app.url("/crm-events"), &[]).await;
    c.next(T).await.unwrap();
    let first = add(&mut conn, "*", 0, "t1", "JobCreated");
    assert_eq!(stream_id(&c.domain_events(1, T).await[0].0), first);

    redis.stop();
    // The stream ends by itself (no hang), with a comment saying why.
    assert!(
        c.next(T).await.is_none(),
        "the stream should end when Redis goes away"
    );
    assert!(c.raw().contains("reconnect to resume"), "{}", c.raw());
    let resp = client().get(app.url("/crm-events")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(resp.headers()["retry-after"], "5");

    redis.restart().unwrap();
    let mut conn = redis.connection().unwrap();
    let second = add(&mut conn, "*", 1, "t1", "JobCreated");
    let mut c = SseClient::connect(&app.url("/crm-events"), &[("last-event-id", &first)]).await;
    let got = c.domain_events(1, T).await;
    assert_eq!(
        stream_id(&got[0].0),
        second,
        "the event written during the reconnect is not lost"
    );
}

/// The whole path with a non-default key prefix on both sides: events flow, the app
/// is ready, the metrics see the sidecar, and no key outside the prefix is written.
#[tokio::test]
async fn a_custom_key_prefix_is_used_end_to_end_and_nothing_escapes_it() {
    const PREFIX: &str = "acme-crm";
    let redis = RedisServer::start().unwrap();
    let kafka = Kafka::start(TOPIC, 3);
    let app = App::start(&redis, &[("key_prefix", PREFIX)]).await;
    let _sidecar = Sidecar::start(
        &redis.url(),
        &kafka.brokers(),
        TOPIC,
        &[("KEY_PREFIX", PREFIX), ("HEARTBEAT_TTL_SECONDS", "3")],
    );
    let mut c = SseClient::connect(&app.url("/crm-events"), &[]).await;
    assert_eq!(c.next_json(T).await.unwrap().1["kind"], "connected");
    kafka.send_events(30, 3, 0);
    assert_eq!(c.domain_events(30, T).await.len(), 30);
    drop(c);

    let ready = client().get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200, "{:?}", ready.text().await);
    wait_metric(&app, "crm_events_sidecar_events_written_total ", 30.0).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query(&mut redis.connection().unwrap())
        .unwrap();
    let outside: Vec<&String> = keys
        .iter()
        .filter(|k| !k.starts_with(&format!("{PREFIX}:")))
        .collect();
    assert!(outside.is_empty(), "keys outside {PREFIX}: {outside:?}");
    let custom = Keys::new(PREFIX);
    for key in [
        custom.stream(),
        custom.offsets(),
        custom.heartbeat(),
        custom.http_requests(),
    ] {
        assert!(keys.contains(&key), "{key} missing from {keys:?}");
    }
}

/// `?tail=N` starts N entries back (the recent past for a page that just opened);
/// a reconnect's `Last-Event-ID` wins over it.
#[tokio::test]
async fn tail_starts_n_entries_back() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis.connection().unwrap();
    let ids = add_many(&mut conn, 10);
    let app = App::start(&redis, &[]).await;
    let mut c = SseClient::connect(&app.url("/crm-events?tail=3"), &[]).await;
    let got: Vec<String> = c.domain_event_ids(3, T).await;
    let got: Vec<&str> = got.iter().map(|id| stream_id(id)).collect();
    assert_eq!(got, ids[7..]);
    let more = add(&mut conn, "*", 10, "t1", "JobCreated");
    assert_eq!(stream_id(&c.domain_events(1, T).await[0].0), more);
    let mut all = SseClient::connect(&app.url("/crm-events?tail=50"), &[]).await;
    assert_eq!(
        stream_id(&all.domain_events(11, T).await[0].0),
        ids[0],
        "fewer entries than asked: all of them"
    );
    let mut resumed = SseClient::connect(
        &app.url("/crm-events?tail=3"),
        &[("last-event-id", &ids[8])],
    )
    .await;
    assert_eq!(stream_id(&resumed.domain_events(1, T).await[0].0), ids[9]);
    let bad = client()
        .get(app.url("/crm-events?tail=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
}

/// Appends an event whose JSON carries `pad` bytes of padding.
fn add_padded(conn: &mut redis::Connection, offset: i64, pad: usize) -> String {
    let value = format!(
        r#"{{"Type":"JobUpdated","TenantId":"t1","JobId":{offset},"Note":"{}"}}"#,
        "x".repeat(pad)
    );
    common::stream::append(conn, "*", offset, None, &value)
}

/// The complete SSE frames (each ended by a blank line) at the start of `text`, and
/// the bytes they take.
fn complete_frames(text: &str) -> (Vec<&str>, usize) {
    let end = text.rfind("\n\n").map_or(0, |i| i + 2);
    let frames = text[..end]
        .split("\n\n")
        .filter(|f| !f.is_empty())
        .collect();
    (frames, end)
}

/// A frame's `id:`.
fn frame_id(frame: &str) -> Option<&str> {
    frame.lines().find_map(|l| l.strip_prefix("id: "))
}

/// The stream ids of the domain events among `frames`.
fn domain_ids(frames: &[&str]) -> Vec<String> {
    frames
        .iter()
        .filter(|f| f.contains(r#""kind":"domain_event""#))
        .filter_map(|f| frame_id(f))
        .map(|id| stream_id(id).to_string())
        .collect()
}

/// The ids a lean reader collected, and its stream, still open.
type LeanRead = (Vec<String>, Box<dyn std::any::Any + Send>);

/// A reader that keeps only ids (a few MiB per stream would be too much to keep
/// as text): opens the stream, then collects `n` domain event ids in a task.
async fn lean_reader(url: String, n: usize) -> tokio::task::JoinHandle<LeanRead> {
    use futures::StreamExt;
    let resp = reqwest::Client::new().get(&url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    tokio::spawn(async move {
        let mut body = resp.bytes_stream();
        let (mut pending, mut ids) = (String::new(), Vec::new());
        while ids.len() < n {
            let chunk = tokio::time::timeout(Duration::from_secs(120), body.next())
                .await
                .expect("the reader is not starved")
                .expect("the stream goes on")
                .unwrap();
            pending.push_str(&String::from_utf8_lossy(&chunk));
            let (frames, used) = complete_frames(&pending);
            ids.extend(domain_ids(&frames));
            pending.drain(..used);
        }
        (ids, Box::new(body) as Box<dyn std::any::Any + Send>)
    })
}

/// A stream request from a client that then never reads, with a receive buffer
/// of a few KiB so the server's writes back up quickly.
async fn stuck_client(base: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let addr: std::net::SocketAddr = base.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream
        .write_all(b"GET /crm-events HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    stream
}

/// Reads a stuck client's response to its end; returns the ids of the complete
/// events in its (chunked) body, the `connected` one first.
async fn drain_ids(mut stream: tokio::net::TcpStream) -> Vec<String> {
    use tokio::io::AsyncReadExt;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut raw))
        .await
        .expect("the server ends the response")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (_head, mut rest) = text.split_once("\r\n\r\n").expect("a response head");
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
        if size == 0 {
            break;
        }
        body.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
    // Only events whose blank line arrived count: a parser drops a cut-off one.
    let (frames, _) = complete_frames(&body);
    frames
        .iter()
        .filter_map(|f| frame_id(f))
        .map(str::to_string)
        .collect()
}

/// A stream reads at most once per `linger_ms`: events that arrive right after a
/// batch wait for the rest of it and go out together, while the first event after
/// a quiet spell goes at once.
#[tokio::test]
async fn linger_gathers_what_follows_a_batch_but_never_delays_the_first() {
    let linger = Duration::from_millis(1000);
    let redis = RedisServer::start().unwrap();
    let mut conn = redis.connection().unwrap();
    let app = App::start(&redis, &[("linger_ms", "1000")]).await;
    let mut c = SseClient::connect(&app.url("/crm-events"), &[]).await;
    assert_eq!(c.next_json(T).await.unwrap().1["kind"], "connected");

    let sent = Instant::now();
    let first = add(&mut conn, "*", 1, "t1", "JobCreated");
    assert_eq!(c.domain_stream_ids(1, T).await, [first]);
    let quiet_latency = sent.elapsed();
    let next: Vec<String> = (2..4)
        .map(|i| add(&mut conn, "*", i, "t1", "JobCreated"))
        .collect();
    assert_eq!(c.domain_stream_ids(2, T).await, next);
    let gathered = sent.elapsed();
    // The batch of `first` was read after it was added: the next read waits until
    // a whole linger after that, so the two that followed arrive after it.
    assert!(
        gathered >= linger,
        "the followers waited out the linger: {gathered:?}"
    );
    assert!(
        quiet_latency < linger - Duration::from_millis(200),
        "the first event after a quiet spell waited: {quiet_latency:?}"
    );
}

/// 100 clients that stop reading beside 100 that read: the readers get every
/// event, each stuck stream ends after `send_timeout_seconds` once the socket's
/// and the host's buffers are full (its instance freed, counted in
/// `crm_events_sse_slow_clients_total`), and a stuck client that comes back with
/// its last id gets exactly the rest.
#[tokio::test]
async fn clients_that_stop_reading_are_ended_and_delay_no_one() {
    // 16 KiB events, 8 MiB per stream: more than a socket buffers (Linux's
    // tcp_wmem allows 4 MiB) plus the host's and the component's one batch each.
    const EVENTS: usize = 500;
    let redis = RedisServer::start().unwrap();
    let mut conn = redis.connection().unwrap();
    let vars = [
        ("send_timeout_seconds", "2"),
        ("read_count", "20"),
        ("max_streams_per_address", "0"),
    ];
    let app = App::start(&redis, &vars).await;
    let mut stuck = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..100 {
        stuck.push(stuck_client(&app.base).await);
        readers.push(lean_reader(app.url("/crm-events"), EVENTS).await);
    }
    app.wait_live_instances(200, T).await;
    let ids: Vec<String> = (0..EVENTS as i64)
        .map(|i| add_padded(&mut conn, i, 16 * 1024))
        .collect();
    let mut open = Vec::new();
    for reader in readers {
        let (got, stream) = reader.await.unwrap();
        assert_eq!(got, ids, "a reader got every event, in order");
        open.push(stream);
    }
    // Every stuck stream ends (only the readers stay live): each fills the socket's
    // and the host's buffers, then waits out its send timeout. Under CI's full load
    // 100 of them take longer than T to get there; then every one must be counted.
    app.wait_live_instances(100, 3 * T).await;
    wait_metric(&app, "crm_events_sse_slow_clients_total ", 100.0).await;

    let seen = drain_ids(stuck.pop().unwrap()).await;
    let from = seen.last().expect("at least the connected event").clone();
    let taken = ids
        .iter()
        .position(|i| i == stream_id(&from))
        .map_or(0, |p| p + 1);
    assert!(
        taken < EVENTS,
        "a stuck client cannot have taken everything"
    );
    let mut resumed =
        SseClient::connect(&app.url("/crm-events"), &[("last-event-id", &from)]).await;
    let rest = resumed.domain_stream_ids(EVENTS - taken, T).await;
    assert_eq!(rest, ids[taken..], "the resume continues exactly");
}

/// A field of Redis's `INFO <section>` (`cmdstat_xread` → `calls=…,usec=…`).
fn info_field(conn: &mut redis::Connection, section: &str, field: &str) -> String {
    let info: String = redis::cmd("INFO").arg(section).query(conn).unwrap();
    let prefix = format!("{field}:");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_default()
        .to_string()
}

/// Redis's count of `XREAD` calls since the last `CONFIG RESETSTAT`.
fn xread_calls(conn: &mut redis::Connection) -> u64 {
    let stat = info_field(conn, "commandstats", "cmdstat_xread");
    let calls = stat
        .strip_prefix("calls=")
        .and_then(|s| s.split(',').next());
    calls.map_or(0, |n| n.parse().unwrap())
}

/// What Redis saw of 20 streams: the `XREAD` calls it answered while each stream
/// took 10 batches of 5 events (each batch delivered to every stream before the
/// next), and its client connections while they were open. Every stream got every
/// event, in order; a client that resumes from before what the host's shared read
/// holds (the history written before it started) gets that history from Redis.
async fn redis_work_for_twenty_streams(shared: bool) -> (u64, u64) {
    const STREAMS: usize = 20;
    let redis = RedisServer::start().unwrap();
    let mut conn = redis.connection().unwrap();
    let history = add_many(&mut conn, 3);
    let app = App::start_tuned(&redis, &[("linger_ms", "0")], |c| c.shared_redis = shared).await;
    let url = app.url("/crm-events");
    let mut clients = Vec::new();
    for _ in 0..STREAMS {
        let mut c = SseClient::connect(&url, &[]).await;
        assert_eq!(c.next_json(T).await.unwrap().1["kind"], "connected");
        clients.push(c);
    }
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut conn)
        .unwrap();
    let mut written = Vec::new();
    for batch in 0..10 {
        let ids: Vec<String> = (0..5)
            .map(|i| add(&mut conn, "*", batch * 5 + i, "t1", "JobCreated"))
            .collect();
        for c in &mut clients {
            assert_eq!(c.domain_stream_ids(5, T).await, ids, "shared: {shared}");
        }
        written.extend(ids);
    }
    let calls = xread_calls(&mut conn);
    let connections = info_field(&mut conn, "clients", "connected_clients");
    let mut late = SseClient::connect(&url, &[("last-event-id", &history[0])]).await;
    let mut want = history[1..].to_vec();
    want.extend(written);
    assert_eq!(late.domain_stream_ids(want.len(), T).await, want);
    (calls, connections.trim().parse().unwrap())
}

#[tokio::test]
async fn streams_share_one_connection_and_one_read_of_redis_and_miss_nothing() {
    let (own_reads, own_connections) = redis_work_for_twenty_streams(false).await;
    let (reads, connections) = redis_work_for_twenty_streams(true).await;
    eprintln!("XREAD calls {own_reads} → {reads}, connections {own_connections} → {connections}");
    // One read per stream per batch without sharing; about one per batch with it
    // (the host's tail also reads once per quiet second).
    assert!(
        own_reads >= 200,
        "one XREAD per stream per batch: {own_reads}"
    );
    assert!(
        reads <= 40,
        "one shared XREAD per batch: {reads} (own: {own_reads})"
    );
    // A connection per stream without sharing; the host's one, its tail's and the
    // test's own with it.
    assert!(
        own_connections > 20,
        "a connection per stream: {own_connections}"
    );
    assert!(connections <= 4, "shared connections: {connections}");
}
