//! The producer side against real parts: a throwaway PostgreSQL cluster, librdkafka's
//! mock cluster, a real redis-server, the real publisher and sidecar binaries and the
//! components on the host. Database commit → Kafka → Redis → SSE client, exactly
//! once, in order, through publisher kills, Kafka and Postgres outages and poison
//! rows; migrations and retention.

mod common;

use common::outbox::{insert, migrated_postgres, tenant, wait_published};
use common::publisher;
use common::sidecar::Sidecar;
use crm_events_harness::mock_kafka::Kafka;
use crm_events_harness::postgres::Postgres;
use crm_events_harness::redis_server::RedisServer;
use std::time::Duration;

const TOPIC: &str = "aetherlink.events";

#[tokio::test]
async fn migrations_apply_once_on_the_crms_own_tables_and_refuse_edits() {
    let pg = Postgres::start().unwrap();
    let mut client = pg.client().await.unwrap();
    // The CRM created its tables already (its own DDL, as in the issue).
    client
        .batch_execute(include_str!(
            "../../outbox/migrations/0001_outbox_tables.sql"
        ))
        .await
        .unwrap();
    let crm_row: i64 = client
        .query_one(
            "INSERT INTO outbox_events (tenant_id, type, payload, occurred_at, retry_count)
             VALUES ($1::text::uuid, 'JobCreated', '{}', now(), 5) RETURNING id",
            &[&tenant(1)],
        )
        .await
        .unwrap()
        .get(0);
    let applied = crm_events_outbox::migrate::apply(&mut client)
        .await
        .unwrap();
    assert_eq!(applied, [1, 2]);
    assert!(crm_events_outbox::migrate::apply(&mut client)
        .await
        .unwrap()
        .is_empty());
    // The earlier publisher's given-up row counts as failed.
    let failed: bool = client
        .query_one(
            "SELECT failed_at IS NOT NULL FROM outbox_events WHERE id = $1",
            &[&crm_row],
        )
        .await
        .unwrap()
        .get(0);
    assert!(failed);
    // The CRM's insert, which names none of the new columns, still works.
    client
        .execute(
            "INSERT INTO outbox_events (tenant_id, type, payload, occurred_at) VALUES ($1::text::uuid, 'T', '{}', now())",
            &[&tenant(2)],
        )
        .await
        .unwrap();
    // An applied migration that changed is refused, by name.
    client
        .execute(
            "UPDATE crm_events_schema_migrations SET checksum = 'x' WHERE version = 2",
            &[],
        )
        .await
        .unwrap();
    let e = crm_events_outbox::migrate::apply(&mut client)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("migration 2 (publisher) changed"),
        "{e}"
    );
}

/// Every part of the chain but the publishers, which each test starts itself.
struct Chain {
    pg: Postgres,
    redis: RedisServer,
    kafka: Kafka,
    sidecar: Sidecar,
    app: common::App,
}

impl Chain {
    async fn start() -> Chain {
        let pg = migrated_postgres().await;
        let redis = RedisServer::start().unwrap();
        let kafka = Kafka::start(TOPIC, 3);
        // The mock broker holds a waiting fetch to its end (Kafka answers at once).
        let sidecar = Sidecar::start(
            &redis.url(),
            &kafka.brokers(),
            TOPIC,
            &[
                ("KAFKA_PROP_FETCH_WAIT_MAX_MS", "5"),
                ("HEARTBEAT_TTL_SECONDS", "3"),
            ],
        );
        let app = common::App::start(&redis, &[]).await;
        Chain {
            pg,
            redis,
            kafka,
            sidecar,
            app,
        }
    }

    fn publisher(&self, extra: &[(&str, &str)]) -> Sidecar {
        publisher::start(&self.pg.url(), &self.kafka.brokers(), TOPIC, extra)
    }

    async fn client(&self) -> SseClient {
        let mut c = SseClient::connect(&self.app.url("/crm-events"), &[]).await;
        let (_, connected) = c
            .next_json(Duration::from_secs(10))
            .await
            .expect("connected");
        assert_eq!(connected["kind"], "connected");
        c
    }

    /// The stream's length in Redis.
    fn stream_len(&self) -> usize {
        let mut conn = self.redis.connection().unwrap();
        common::stream::len(&mut conn, &crm_events_contracts::keys::Keys::default())
    }
}

use crm_events_harness::sse_client::SseClient;

/// One outbox event as a client saw it.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    outbox_id: i64,
    tenant: String,
    seq: i64,
}

/// Reads domain events until `n` have arrived (panics after `timeout`).
async fn collect(c: &mut SseClient, n: usize, timeout: Duration) -> Vec<Seen> {
    c.domain_events(n, timeout)
        .await
        .into_iter()
        .map(|(_, e)| Seen {
            outbox_id: e["headers"]["outbox-id"].as_str().unwrap().parse().unwrap(),
            tenant: e["value"]["TenantId"].as_str().unwrap().to_string(),
            seq: e["value"]["Seq"].as_i64().unwrap_or(-1),
        })
        .collect()
}

/// Each outbox id exactly once, each tenant's `Seq` 1, 2, 3… in order.
fn assert_once_and_in_order(seen: &[Seen], ids: &[i64]) {
    let mut got: Vec<i64> = seen.iter().map(|s| s.outbox_id).collect();
    got.sort_unstable();
    let mut want = ids.to_vec();
    want.sort_unstable();
    assert_eq!(got.len(), want.len(), "events received");
    assert_eq!(got, want, "every outbox id exactly once");
    let mut next: std::collections::HashMap<&str, i64> = Default::default();
    for s in seen {
        let n = next.entry(&s.tenant).or_insert(1);
        assert_eq!(
            s.seq, *n,
            "tenant {} out of order at outbox id {}",
            s.tenant, s.outbox_id
        );
        *n += 1;
    }
}

/// `count` rows for `tenants` (round robin), in transactions of 1-4 rows, each
/// tenant's `Seq` counting from `first_seq`; returns the ids.
async fn write_rows(
    client: &mut tokio_postgres::Client,
    tenants: &[String],
    count: usize,
    first_seq: i64,
    pace: Duration,
) -> Vec<i64> {
    let mut seq: Vec<i64> = vec![first_seq; tenants.len()];
    let mut ids = Vec::with_capacity(count);
    let mut i = 0;
    while i < count {
        let size = (i % 4 + 1).min(count - i);
        let rows: Vec<(&str, &str, String)> = (i..i + size)
            .map(|k| {
                let t = k % tenants.len();
                seq[t] += 1;
                (
                    tenants[t].as_str(),
                    "JobUpdated",
                    format!(r#"{{"Seq":{},"JobId":"job-{k}"}}"#, seq[t] - 1),
                )
            })
            .collect();
        ids.extend(insert(client, &rows).await);
        i += size;
        if !pace.is_zero() {
            tokio::time::sleep(pace).await; // the writers' pace, not a synchronisation
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_rows_from_eight_writers_arrive_once_and_in_order_through_five_leader_kills() {
    let chain = Chain::start().await;
    let mut client = chain.client().await;
    let mut publishers = [chain.publisher(&[]), chain.publisher(&[])];
    publisher::leader(&[&publishers[0], &publishers[1]], Duration::from_secs(30)).await;

    let writers: Vec<_> = (0..8)
        .map(|w| {
            let url = chain.pg.url();
            tokio::spawn(async move {
                let (mut c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                let tenants = [tenant(2 * w), tenant(2 * w + 1)];
                write_rows(&mut c, &tenants, 1_250, 1, Duration::from_millis(2)).await
            })
        })
        .collect();

    // Five times: kill whichever publisher leads, mid-run, and start a new one, so
    // two always run.
    let db = chain.pg.client().await.unwrap();
    for k in 1..=5 {
        wait_published(&db, Duration::from_secs(60), |n| n >= k * 1_500).await;
        let i = publisher::leader(&[&publishers[0], &publishers[1]], Duration::from_secs(30)).await;
        publishers[i].kill();
        publishers[i] = chain.publisher(&[]);
    }
    let mut ids = Vec::new();
    for w in writers {
        ids.extend(w.await.unwrap());
    }
    assert_eq!(ids.len(), 10_000);
    wait_published(&db, Duration::from_secs(60), |n| n == 10_000).await;
    let seen = collect(&mut client, 10_000, Duration::from_secs(60)).await;
    assert_once_and_in_order(&seen, &ids);
    assert_eq!(
        chain.stream_len(),
        10_000,
        "the Redis stream holds each row once"
    );
    let dropped = chain
        .sidecar
        .metric("crm_events_sidecar_duplicates_dropped_total")
        .await
        .unwrap();
    eprintln!("re-sent records the sidecar dropped across 5 kills: {dropped}");
}

#[tokio::test]
async fn a_graceful_handover_publishes_nothing_twice() {
    let chain = Chain::start().await;
    let mut client = chain.client().await;
    let mut a = chain.publisher(&[]);
    publisher::leader(&[&a], Duration::from_secs(30)).await;
    let b = chain.publisher(&[]);
    let body = b.wait_ready(Duration::from_secs(30), |s, _| s == 200).await;
    assert_eq!(body["checks"]["role"], "standby");
    let url = chain.pg.url();
    let writer = tokio::spawn(async move {
        let (mut c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        write_rows(
            &mut c,
            &[tenant(1), tenant(2)],
            2_000,
            1,
            Duration::from_millis(1),
        )
        .await
    });
    let db = chain.pg.client().await.unwrap();
    wait_published(&db, Duration::from_secs(60), |n| n >= 500).await;
    // A rolling deploy: the leader is asked to stop, finishes and hands over.
    a.terminate();
    assert!(a.exit_status(Duration::from_secs(15)).await.success());
    publisher::leader(&[&b], Duration::from_secs(30)).await;
    let ids = writer.await.unwrap();
    wait_published(&db, Duration::from_secs(60), |n| n == 2_000).await;
    let seen = collect(&mut client, 2_000, Duration::from_secs(60)).await;
    assert_once_and_in_order(&seen, &ids);
    let dropped = chain
        .sidecar
        .metric("crm_events_sidecar_duplicates_dropped_total")
        .await;
    assert_eq!(dropped, Some(0.0), "nothing reached Kafka twice");
}

#[tokio::test]
async fn rows_sent_again_after_their_ack_reach_the_stream_once() {
    let chain = Chain::start().await;
    let mut client = chain.client().await;
    let _p = chain.publisher(&[]);
    let mut db = chain.pg.client().await.unwrap();
    let ids = write_rows(&mut db, &[tenant(1)], 50, 1, Duration::ZERO).await;
    let first = collect(&mut client, 50, Duration::from_secs(30)).await;
    assert_once_and_in_order(&first, &ids);
    // Seen is not yet marked (the mark follows Kafka's acknowledgement): wait for it,
    // else un-marking below could precede the mark and nothing would go out again.
    wait_published(&db, Duration::from_secs(30), |n| n == 50).await;
    // The crash window: Kafka acknowledged these rows but the publisher died before
    // marking them, so they are pending again and go out a second time.
    let again = db
        .execute(
            "UPDATE outbox_events SET published_at = NULL WHERE id = ANY($1)",
            &[&&ids[10..30]],
        )
        .await
        .unwrap();
    assert_eq!(again, 20);
    db.execute("SELECT pg_notify('crm_events_outbox', '')", &[])
        .await
        .unwrap();
    wait_published(&db, Duration::from_secs(30), |n| n == 50).await;
    let dropped = "crm_events_sidecar_duplicates_dropped_total";
    let t = Duration::from_secs(30);
    chain.sidecar.wait_metric(dropped, 20.0, t).await;
    assert_eq!(chain.stream_len(), 50);
    // The client sees nothing more: a new row is the next event it gets.
    let next = write_rows(&mut db, &[tenant(1)], 1, 51, Duration::ZERO).await;
    let after = collect(&mut client, 1, Duration::from_secs(30)).await;
    assert_eq!(after[0].outbox_id, next[0]);
}

#[tokio::test]
async fn kafka_unavailable_for_a_while_loses_nothing() {
    let chain = Chain::start().await;
    let mut client = chain.client().await;
    let p = chain.publisher(&[]);
    let mut db = chain.pg.client().await.unwrap();
    let mut ids = write_rows(&mut db, &[tenant(1), tenant(2)], 300, 1, Duration::ZERO).await;
    wait_published(&db, Duration::from_secs(30), |n| n == 300).await;
    let mut seen = collect(&mut client, 300, Duration::from_secs(60)).await;
    chain.kafka.cluster.broker_down(1).unwrap();
    ids.extend(write_rows(&mut db, &[tenant(1), tenant(2)], 300, 151, Duration::ZERO).await);
    // While Kafka is away the rows wait in the outbox and readiness says why.
    let body = p.wait_ready(Duration::from_secs(30), |s, _| s == 503).await;
    assert_ne!(body["checks"]["kafka"], "ok");
    assert_eq!(common::outbox::published(&db).await, 300);
    chain.kafka.cluster.broker_up(1).unwrap();
    wait_published(&db, Duration::from_secs(60), |n| n == 600).await;
    seen.extend(collect(&mut client, 300, Duration::from_secs(60)).await);
    assert_once_and_in_order(&seen, &ids);
    p.wait_ready(Duration::from_secs(30), |s, _| s == 200).await;
}

#[tokio::test]
async fn a_postgres_restart_is_waited_out() {
    let mut chain = Chain::start().await;
    let mut client = chain.client().await;
    let p = chain.publisher(&[]);
    let mut db = chain.pg.client().await.unwrap();
    let mut ids = write_rows(&mut db, &[tenant(1)], 200, 1, Duration::ZERO).await;
    wait_published(&db, Duration::from_secs(30), |n| n == 200).await;
    chain.pg.stop();
    let body = p.wait_ready(Duration::from_secs(30), |s, _| s == 503).await;
    assert_ne!(body["checks"]["postgres"], "ok");
    chain.pg.restart().unwrap();
    let mut db = chain.pg.client().await.unwrap();
    ids.extend(write_rows(&mut db, &[tenant(1)], 200, 201, Duration::ZERO).await);
    wait_published(&db, Duration::from_secs(60), |n| n == 400).await;
    let seen = collect(&mut client, 400, Duration::from_secs(60)).await;
    assert_once_and_in_order(&seen, &ids);
    p.wait_ready(Duration::from_secs(30), |s, b| {
        s == 200 && b["checks"]["role"] == "leader"
    })
    .await;
}

#[tokio::test]
async fn a_poison_row_ends_failed_while_the_rest_flow_and_can_be_requeued() {
    let chain = Chain::start().await;
    let mut client = chain.client().await;
    let p = chain.publisher(&[
        ("OUTBOX_MAX_MESSAGE_BYTES", "4096"),
        ("OUTBOX_RETRY_BACKOFF_MS", "50"),
    ]);
    let mut db = chain.pg.client().await.unwrap();
    let (a, b) = (tenant(1), tenant(2));
    let huge = format!(r#"{{"Seq":2,"Blob":"{}"}}"#, "x".repeat(8000));
    let ids = insert(
        &mut db,
        &[
            (&a, "JobCreated", r#"{"Seq":1}"#.into()),
            (&a, "JobUpdated", huge),
            (&b, "JobCreated", r#"{"Seq":1}"#.into()),
            (&a, "JobUpdated", r#"{"Seq":3}"#.into()),
            (&b, "JobUpdated", r#"{"Seq":2}"#.into()),
        ],
    )
    .await;
    let poison = ids[1];
    let seen = collect(&mut client, 4, Duration::from_secs(60)).await;
    let order: Vec<(String, i64)> = seen.iter().map(|s| (s.tenant.clone(), s.seq)).collect();
    let of = |t: &str| {
        order
            .iter()
            .filter(|(x, _)| x == t)
            .map(|(_, s)| *s)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        of(&a),
        [1, 3],
        "tenant a's later row waited for the poison row, then flowed"
    );
    assert_eq!(of(&b), [1, 2]);
    // A client can see an event before the publisher has marked its row (Kafka's
    // acknowledgement comes first, the mark after): wait for the four marks.
    wait_published(&db, Duration::from_secs(20), |n| n == 4).await;
    let row = db
        .query_one(
            "SELECT retry_count, last_error, failed_at IS NOT NULL, published_at IS NULL,
                    (SELECT published_at FROM outbox_events WHERE id = $2) >= failed_at
               FROM outbox_events WHERE id = $1",
            &[&poison, &ids[3]],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 5);
    assert!(
        row.get::<_, String>(1).contains("OUTBOX_MAX_MESSAGE_BYTES"),
        "{}",
        row.get::<_, String>(1)
    );
    assert!(row.get::<_, bool>(2) && row.get::<_, bool>(3));
    assert!(
        row.get::<_, bool>(4),
        "the later row was published only after the poison row failed"
    );
    let t = Duration::from_secs(20);
    p.wait_metric("crm_events_outbox_failed_rows", 1.0, t).await;
    assert_eq!(p.metric("crm_events_outbox_failed_total").await, Some(1.0));
    assert_eq!(
        p.metric(r#"crm_events_outbox_errors_total{kind="row"}"#)
            .await,
        Some(5.0)
    );

    // Operators list failed rows and put them back (here it fails again: too large).
    let listed = publisher::command(&chain.pg.url(), &["failed", "list"], &[]);
    let listed: serde_json::Value = serde_json::from_str(listed.trim()).unwrap();
    assert_eq!(
        (listed["id"].as_i64(), listed["retry_count"].as_i64()),
        (Some(poison), Some(5))
    );
    let out = publisher::command(
        &chain.pg.url(),
        &["failed", "requeue", "--id", &poison.to_string()],
        &[],
    );
    assert_eq!(out.trim(), r#"{"requeued":1}"#);
    // The re-queued row is tried again (and fails again: it is still too large).
    p.wait_metric("crm_events_outbox_failed_total", 2.0, t)
        .await;
}

#[tokio::test]
async fn retention_deletes_only_old_published_rows_and_expired_keys() {
    let pg = migrated_postgres().await;
    let db = pg.client().await.unwrap();
    db.batch_execute(&format!(
        "INSERT INTO outbox_events (tenant_id, type, payload, occurred_at, published_at, failed_at)
         SELECT '{t}', 'Old', '{{}}', now() - interval '30 days', now() - interval '10 days', NULL FROM generate_series(1, 5);
         INSERT INTO outbox_events (tenant_id, type, payload, occurred_at, published_at)
         SELECT '{t}', 'Recent', '{{}}', now() - interval '1 day', now() - interval '1 day' FROM generate_series(1, 3);
         INSERT INTO outbox_events (tenant_id, type, payload, occurred_at)
         VALUES ('{t}', 'Pending', '{{}}', now() - interval '30 days');
         INSERT INTO outbox_events (tenant_id, type, payload, occurred_at, failed_at, retry_count)
         VALUES ('{t}', 'Failed', '{{}}', now() - interval '30 days', now() - interval '29 days', 5);
         INSERT INTO idempotency_keys (tenant_id, key, request_path, request_method, status_code, expires_at)
         SELECT '{t}', 'old-' || g, '/crm-events', 'POST', 202, now() - interval '1 hour' FROM generate_series(1, 3) g;
         INSERT INTO idempotency_keys (tenant_id, key, request_path, request_method, status_code, expires_at)
         VALUES ('{t}', 'live', '/crm-events', 'POST', 202, now() + interval '1 hour');",
        t = tenant(1)
    ))
    .await
    .unwrap();
    // Batches of 2: the loop goes on until nothing old is left.
    let out = publisher::command(
        &pg.url(),
        &["retention"],
        &[
            ("OUTBOX_RETENTION_DAYS", "7"),
            ("OUTBOX_RETENTION_BATCH", "2"),
        ],
    );
    assert_eq!(out.trim(), r#"{"idempotency_keys":3,"outbox_events":5}"#);
    let left: Vec<String> = db
        .query("SELECT type FROM outbox_events ORDER BY type", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, ["Failed", "Pending", "Recent", "Recent", "Recent"]);
    let keys: Vec<String> = db
        .query("SELECT key FROM idempotency_keys", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(keys, ["live"]);
}

#[tokio::test]
async fn a_post_reaches_a_stream_client_through_the_whole_chain() {
    let chain = Chain::start().await;
    let app = common::App::start(
        &chain.redis,
        &[
            ("postgres_host", &chain.pg.host_port()),
            ("postgres_sslmode", "disable"),
            ("auth_mode", "none"),
            ("publish_token", "t0ken"),
        ],
    )
    .await;
    let mut client = chain.client().await;
    let p = chain.publisher(&[]);
    let resp = common::client()
        .post(app.url("/crm-events"))
        .header("authorization", "Bearer t0ken")
        .header("idempotency-key", "e2e-1")
        .header("content-type", "application/json")
        .body(serde_json::json!({"type": "ContactCreated", "tenant_id": tenant(7), "payload": {"Seq": 1, "ContactId": "c-1", "Name": "Ada"}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let receipt = resp.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .map(str::to_string);
    assert_eq!(receipt.map(|r| r.len()), Some(36), "a UUID receipt");
    let (_, e) = client
        .domain_events(1, Duration::from_secs(30))
        .await
        .remove(0);
    // The operator's stream carries the row id (the tenant's cut does not).
    let row_id = e["headers"]["outbox-id"].as_str().unwrap_or_default();
    assert!(row_id.parse::<i64>().is_ok(), "outbox-id {row_id:?}");
    assert_eq!(e["key"], tenant(7), "keyed by tenant");
    assert_eq!(e["value"]["Type"], "ContactCreated");
    assert_eq!(e["value"]["TenantId"], tenant(7));
    assert_eq!(e["value"]["Name"], "Ada");
    assert!(e["value"]["Ts"].as_str().unwrap().ends_with('Z'));
    let metrics = common::get_text(&format!("{}/metrics", p.http)).await;
    for family in [
        "crm_events_outbox_published_total 1",
        "crm_events_outbox_leader 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == family),
            "{family} in\n{metrics}"
        );
    }
    assert!(metrics.contains("crm_events_outbox_publish_latency_seconds_count 1"));
}
