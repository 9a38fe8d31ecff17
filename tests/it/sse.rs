//! `/crm-events` through the real `sse` component on the test host, against a real
//! Redis, and end to end with the sidecar and the mock Kafka broker.

mod common;

use common::sidecar::Sidecar;
use common::{client, App};
use crm_events_contracts::envelope::{Envelope, RawRecord};
use crm_events_contracts::keys::{Keys, ENVELOPE_FIELD};
use crm_events_harness::mock_kafka::Kafka;
use crm_events_harness::redis_server::RedisServer;
use crm_events_harness::sse_client::{stream_id, SseClient};
use serde_json::Value;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);
const TOPIC: &str = "aetherlink.events";

/// Appends an envelope to the stream as the sidecar would; returns the entry id.
fn add(conn: &mut redis::Connection, id: &str, offset: i64, tenant: &str, kind: &str) -> String {
    let value = format!(r#"{{"Type":"{kind}","TenantId":"{tenant}","JobId":{offset}}}"#);
    let env = Envelope::from_record(
        RawRecord {
            topic: TOPIC,
            partition: 0,
            offset,
            timestamp: Some(1_730_592_000_000),
            key: Some(kind.as_bytes()),
            value: Some(value.as_bytes()),
        },
        [],
        0,
    );
    redis::cmd("XADD")
        .arg(Keys::default().stream())
        .arg(id)
        .arg(ENVELOPE_FIELD)
        .arg(env.to_json())
        .query(conn)
        .unwrap()
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
        if metric(app, prefix).await == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{prefix} never became {want}"
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
    let mut c = SseClient::connect(
        &app.url("/crm-events?tenant=t1&type=JobCreated,JobDeleted"),
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
async fn the_instance_cap_holds_one_instance_per_stream_like_spin() {
    let redis = RedisServer::start().unwrap();
    let app = App::start_with(&redis, &[], 2).await;
    let _a = SseClient::connect(&app.url("/crm-events"), &[]).await;
    let _b = SseClient::connect(&app.url("/crm-events"), &[]).await;
    assert_eq!(app.host.live_instances(), 2);
    let resp = client().get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(
        resp.status().as_u16(),
        500,
        "Spin fails requests beyond its instance cap"
    );
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
