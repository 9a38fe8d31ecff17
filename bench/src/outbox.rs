//! The producer side: outbox → Kafka throughput of the release publisher against a
//! same-run ceiling (raw idempotent produce of the same records by the same producer
//! settings, no database), and commit → SSE client latency through the whole chain
//! (Postgres → publisher → Kafka → sidecar → Redis → `sse` component → client).

use crate::procs::{
    cpu_seconds, cpu_seconds_of, prompt_fetch, publisher, sidecar, spawn, until, Proc,
};
use anyhow::{Context, Result};
use crm_events_contracts::outbox::{KeyBy, Row, OUTBOX_ID_HEADER};
use crm_events_harness::mock_kafka::Kafka;
use crm_events_harness::postgres::Postgres;
use crm_events_harness::redis_server::{free_port, RedisServer};
use crm_events_harness::sse_client::SseClient;
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const TOPIC: &str = "aetherlink.events";

/// Outbox benchmark settings.
#[derive(clap::Args)]
pub struct Args {
    /// Rows in the backlog of each throughput run.
    #[arg(long, default_value_t = 100_000)]
    rows: usize,
    /// OUTBOX_BATCH_SIZE of the throughput runs (100 is the default).
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    batches: Vec<u64>,
    /// OUTBOX_MARK_SESSIONS of the throughput runs (1 is the default).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    mark_sessions: Vec<u64>,
    /// Rows per second in the latency run, each its own transaction.
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// Length of the latency run, seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

pub async fn run(a: Args) -> Result<()> {
    throughput(&a).await?;
    latency(&a).await
}

/// The backlog: `n` realistic rows over 16 tenants, in one statement.
async fn fill(pg: &Postgres, n: usize) -> Result<()> {
    let db = pg.client().await?;
    db.execute("TRUNCATE outbox_events", &[]).await?;
    db.execute(
        "INSERT INTO outbox_events (tenant_id, type, payload, occurred_at)
         SELECT ('00000000-0000-4000-8000-' || lpad((g % 16)::text, 12, '0'))::uuid,
                (ARRAY['JobCreated','JobUpdated','ContactUpdated','AccountUpdated','JobDeleted'])[g % 5 + 1],
                jsonb_build_object('JobId', 'job-' || lpad(g::text, 8, '0'),
                    'Title', 'Replace boiler at site ' || (g % 997), 'Status', 'Scheduled',
                    'AssignedTo', 'tech-' || (g % 31), 'Priority', 'high', 'Source', 'crm-api', 'Version', 3),
                now()
           FROM generate_series(1, $1::int) g",
        &[&(n as i32)],
    )
    .await?;
    db.execute("VACUUM ANALYZE outbox_events", &[]).await?;
    Ok(())
}

/// The rows as the publisher reads them, for the ceiling.
async fn rows(pg: &Postgres) -> Result<Vec<Row>> {
    let db = pg.client().await?;
    let claimed = db
        .query(
            "SELECT id, tenant_id::text, type, payload::text, (extract(epoch FROM occurred_at) * 1000)::bigint
               FROM outbox_events ORDER BY id",
            &[],
        )
        .await?;
    Ok(claimed
        .iter()
        .map(|r| Row {
            id: r.get(0),
            tenant_id: r.get(1),
            event_type: r.get(2),
            payload: r.get(3),
            occurred_at_ms: r.get(4),
        })
        .collect())
}

/// Raw idempotent produce of the rows' records (same settings as the publisher):
/// everything sent at once, then every acknowledgement awaited. Rows/s.
async fn ceiling(kafka: &Kafka, rows: &[Row]) -> Result<f64> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", kafka.brokers());
    for (k, v) in crm_events_outbox::producer::properties() {
        config.set(k, v);
    }
    let producer: FutureProducer = config.create()?;
    let records: Vec<_> = rows.iter().map(|r| r.record(&KeyBy::Tenant)).collect();
    let started = Instant::now();
    let mut acks = Vec::with_capacity(records.len());
    for r in &records {
        let headers = OwnedHeaders::new().insert(Header {
            key: OUTBOX_ID_HEADER,
            value: Some(r.outbox_id.as_str()),
        });
        let record = FutureRecord::to(TOPIC)
            .key(r.key.as_str())
            .payload(r.value.as_str())
            .headers(headers);
        acks.push(
            producer
                .send_result(record)
                .map_err(|(e, _)| anyhow::anyhow!("{e}"))?,
        );
    }
    for ack in acks {
        ack.await?.map_err(|(e, _)| anyhow::anyhow!("{e}"))?;
    }
    Ok(rows.len() as f64 / started.elapsed().as_secs_f64())
}

/// Rows the publisher on `port` has published, by its own metrics (polling the
/// database instead would load Postgres, which is what the run measures).
async fn published(http: &reqwest::Client, port: u16) -> u64 {
    let Ok(r) = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
    else {
        return 0;
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("crm_events_outbox_published_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// What draining the backlog took.
struct Drain {
    rate: f64,
    /// CPU µs per row in the publisher process.
    publisher_us: f64,
    /// CPU µs per row in Postgres (every backend: claims, marks, autovacuum).
    postgres_us: f64,
}

/// The release publisher draining the backlog with `batch` rows per claim and
/// `marks` marking sessions, from its first published row to the last.
async fn drain(pg: &Postgres, kafka: &Kafka, n: usize, batch: u64, marks: u64) -> Result<Drain> {
    let settings = [
        ("OUTBOX_BATCH_SIZE", batch.to_string()),
        ("OUTBOX_MARK_SESSIONS", marks.to_string()),
    ];
    let port = free_port()?;
    let p = publisher(pg, kafka, port, &settings)?;
    let http = reqwest::Client::new();
    until(
        "the first published row",
        Duration::from_secs(60),
        || async { published(&http, port).await > 0 },
    )
    .await?;
    let started = Instant::now();
    let cpu = (cpu_seconds(p.0.id())?, cpu_seconds_of("postgres"));
    until("every row published", Duration::from_secs(600), || async {
        published(&http, port).await >= n as u64
    })
    .await?;
    let secs = started.elapsed().as_secs_f64();
    let per_row = |seconds: f64| seconds * 1e6 / n as f64;
    Ok(Drain {
        rate: n as f64 / secs,
        publisher_us: per_row(cpu_seconds(p.0.id())? - cpu.0),
        postgres_us: per_row(cpu_seconds_of("postgres") - cpu.1),
    })
}

async fn throughput(a: &Args) -> Result<()> {
    let pg = Postgres::start()?;
    crm_events_outbox::migrate::apply(&mut pg.client().await?).await?;
    let kafka = Kafka::start(TOPIC, 24);
    fill(&pg, a.rows).await?;
    let all = rows(&pg).await?;
    let ceiling = ceiling(&kafka, &all).await?;
    let size: usize = all
        .iter()
        .map(|r| r.record(&KeyBy::Tenant).value.len())
        .sum();
    println!(
        "## Outbox → Kafka: {} rows (~{} bytes each), release publisher vs raw idempotent produce",
        a.rows,
        size / all.len().max(1)
    );
    println!("| run | rows/s | ÷ ceiling | publisher CPU µs/row | Postgres CPU µs/row |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    println!(
        "| ceiling: raw idempotent produce, same records and settings | {ceiling:.0} | 100 % | | |"
    );
    for &batch in &a.batches {
        for &marks in &a.mark_sessions {
            fill(&pg, a.rows).await?;
            let d = drain(&pg, &kafka, a.rows, batch, marks).await?;
            println!(
                "| publisher, OUTBOX_BATCH_SIZE={batch}, OUTBOX_MARK_SESSIONS={marks} | {:.0} | {:.0} % | {:.1} | {:.1} |",
                d.rate,
                100.0 * d.rate / ceiling,
                d.publisher_us,
                d.postgres_us
            );
        }
    }
    Ok(())
}

/// The whole chain for the latency run.
struct Chain {
    pg: Postgres,
    _redis: RedisServer,
    _kafka: Kafka,
    _procs: Vec<Proc>,
    stream: String,
}

impl Chain {
    async fn start() -> Result<Self> {
        let pg = Postgres::start()?;
        crm_events_outbox::migrate::apply(&mut pg.client().await?).await?;
        let redis = RedisServer::start()?;
        let kafka = Kafka::start(TOPIC, 3);
        let (sidecar_port, app_port, publisher_port) = (free_port()?, free_port()?, free_port()?);
        let sidecar = sidecar(&redis, &kafka, sidecar_port, &[prompt_fetch()])?;
        let publisher = publisher(&pg, &kafka, publisher_port, &[])?;
        let manifest = crm_events_harness::app::manifest_path();
        let cache = crm_events_harness::app::cache_dir();
        let host = spawn(
            "crm-events-host",
            &[
                "--manifest",
                manifest.to_str().context("path")?,
                "--listen",
                &format!("127.0.0.1:{app_port}"),
                "--variable",
                &format!("redis_host={}", redis.host_port()),
                "--variable",
                "auth_mode=none",
                "--cache-dir",
                cache.to_str().context("path")?,
            ],
            &[],
        )?;
        let http = reqwest::Client::new();
        for port in [sidecar_port, publisher_port, app_port] {
            until("readiness", Duration::from_secs(120), || async {
                http.get(format!("http://127.0.0.1:{port}/readyz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            })
            .await?;
        }
        Ok(Self {
            pg,
            _redis: redis,
            _kafka: kafka,
            _procs: vec![sidecar, publisher, host],
            stream: format!("http://127.0.0.1:{app_port}/crm-events"),
        })
    }
}

/// Commit → SSE client: rows committed one per transaction at `rate`, each one's
/// latency from the moment its COMMIT returned to the client's receipt.
async fn latency(a: &Args) -> Result<()> {
    let chain = Chain::start().await?;
    let n = (a.rate * a.seconds) as usize;
    let mut client = SseClient::connect(&chain.stream, &[]).await;
    client
        .next(Duration::from_secs(30))
        .await
        .context("connected")?;
    // The receipts are matched with the commits afterwards (an event may arrive
    // before its writer has noted the commit time).
    let receiving = tokio::spawn(async move {
        let mut received = Vec::with_capacity(n);
        while received.len() < n {
            let Some((_, e)) = client.next_json(Duration::from_secs(30)).await else {
                break;
            };
            let at = Instant::now();
            if let Some(id) = e["headers"]["outbox-id"]
                .as_str()
                .and_then(|i| i.parse::<i64>().ok())
            {
                received.push((id, at));
            }
        }
        received
    });
    let committed = write_paced(&chain.pg, n, a.rate).await?;
    let received = receiving.await?;
    let mut lat: Vec<i64> = received
        .iter()
        .filter_map(|(id, at)| Some(at.duration_since(*committed.get(id)?).as_micros() as i64))
        .collect();
    lat.sort_unstable();
    let p = |q: f64| {
        lat.get(((lat.len() as f64 - 1.0) * q).round() as usize)
            .map_or(f64::NAN, |v| *v as f64 / 1000.0)
    };
    println!(
        "\n## Commit → SSE client: {} rows/s for {} s, one transaction each (publisher defaults; fetch.wait.max.ms=1 for the mock broker)",
        a.rate, a.seconds
    );
    println!("| received | p50 ms | p90 ms | p99 ms | max ms |");
    println!("| ---: | ---: | ---: | ---: | ---: |");
    println!(
        "| {}/{n} | {:.1} | {:.1} | {:.1} | {:.1} |",
        lat.len(),
        p(0.5),
        p(0.9),
        p(0.99),
        p(1.0)
    );
    Ok(())
}

/// Inserts `n` rows at `rate`/s, one transaction each; returns when each committed.
async fn write_paced(pg: &Postgres, n: usize, rate: u64) -> Result<HashMap<i64, Instant>> {
    let mut committed = HashMap::with_capacity(n);
    let mut db = pg.client().await?;
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in 0..n {
        tick.tick().await;
        let tx = db.transaction().await?;
        let id: i64 = tx
            .query_one(
                "INSERT INTO outbox_events (tenant_id, type, payload, occurred_at)
                 VALUES (('00000000-0000-4000-8000-' || lpad(($1::int % 16)::text, 12, '0'))::uuid,
                         'JobUpdated', jsonb_build_object('JobId', 'job-' || $1::int, 'Status', 'InProgress'), now())
                 RETURNING id",
                &[&(i as i32)],
            )
            .await?
            .get(0);
        tx.commit().await?;
        committed.insert(id, Instant::now());
    }
    Ok(committed)
}
