//! Relay throughput: the sidecar (release binary) draining a backlog from the mock
//! broker into Redis, against raw pipelined `XADD` of the same envelopes into the
//! same Redis, one pipeline in flight at a time as the relay has one batch in flight.

use crate::procs::{spawn, until};
use anyhow::Result;
use crm_events_contracts::envelope::{Envelope, RawRecord};
use crm_events_contracts::keys::{Keys, ENVELOPE_FIELD};
use crm_events_host::mock_kafka::Kafka;
use crm_events_host::redis_server::RedisServer;
use std::time::{Duration, Instant};

const TOPIC: &str = "aetherlink.events";

/// Relay benchmark settings.
#[derive(clap::Args)]
pub struct Args {
    /// Events in the backlog.
    #[arg(long, default_value_t = 300_000)]
    events: usize,
    /// The sidecar's BATCH_MAX, and the baseline's pipeline size.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// The stream length kept (both sides trim to it).
    #[arg(long, default_value_t = 100_000)]
    maxlen: u64,
}

/// A realistic CRM event value (~250 bytes).
pub fn crm_value(i: usize) -> String {
    let kinds = ["JobCreated", "JobUpdated", "ContactUpdated", "AccountUpdated", "JobDeleted"];
    format!(
        r#"{{"Type":"{}","TenantId":"tenant-{}","JobId":"job-{i:08}","Title":"Replace boiler at site {}","Status":"Scheduled","AssignedTo":"tech-{}","Priority":"high","Ts":"2026-11-23T10:00:00.000Z","Source":"crm-api","Version":3}}"#,
        kinds[i % kinds.len()],
        i % 7,
        i % 997,
        i % 31
    )
}

pub async fn run(a: Args) -> Result<()> {
    let redis = RedisServer::start()?;
    let kafka = Kafka::start(TOPIC, 3);
    let keys = Keys::default();
    let values: Vec<String> = (0..a.events).map(crm_value).collect();

    let t = Instant::now();
    for (i, v) in values.iter().enumerate() {
        let kind = v.split('"').nth(3).unwrap_or("JobCreated");
        kafka.send((i % 3) as i32, Some(kind.as_bytes()), Some(v.as_bytes()));
    }
    kafka.flush();
    eprintln!("produced {} events in {:?}", a.events, t.elapsed());

    // The ceiling: the same envelopes, pipelined XADD, MAXLEN ~ like a lean writer.
    let envelopes: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            Envelope::from_record(
                RawRecord {
                    topic: TOPIC,
                    partition: (i % 3) as i32,
                    offset: (i / 3) as i64,
                    timestamp: Some(1_795_000_000_000),
                    key: Some(b"JobCreated"),
                    value: Some(v.as_bytes()),
                },
                [],
                1 << 20,
            )
            .to_json()
        })
        .collect();
    let client = redis::Client::open(redis.url())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let t = Instant::now();
    for chunk in envelopes.chunks(a.batch) {
        let mut pipe = redis::pipe();
        for e in chunk {
            pipe.cmd("XADD")
                .arg(keys.stream())
                .arg("MAXLEN")
                .arg("~")
                .arg(a.maxlen)
                .arg("*")
                .arg(ENVELOPE_FIELD)
                .arg(e)
                .ignore();
        }
        let () = pipe.query_async(&mut conn).await?;
    }
    let raw_secs = t.elapsed().as_secs_f64();
    let raw_rate = a.events as f64 / raw_secs;
    let () = redis::cmd("FLUSHALL").query_async(&mut conn).await?;

    // The relay: the release sidecar drains the backlog.
    let _sidecar = spawn(
        "crm-events-sidecar",
        &[],
        &[
            ("REDIS_URL", redis.url()),
            ("KAFKA_BROKERS", kafka.brokers()),
            ("KAFKA_TOPIC", TOPIC.to_string()),
            ("BATCH_MAX", a.batch.to_string()),
            ("STREAM_MAXLEN", a.maxlen.to_string()),
            ("HTTP_LISTEN", "127.0.0.1:0".to_string()),
        ],
    )?;
    let written = |mut conn: redis::aio::MultiplexedConnection| async move {
        let marks: Vec<i64> = redis::cmd("HVALS")
            .arg(Keys::default().offsets())
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        marks.iter().map(|m| m + 1).sum::<i64>() as usize
    };
    until("the relay's first batch", Duration::from_secs(60), || {
        let c = conn.clone();
        async move { written(c).await > 0 }
    })
    .await?;
    let t = Instant::now();
    let first = written(conn.clone()).await;
    until("the relay to drain the backlog", Duration::from_secs(600), || {
        let c = conn.clone();
        let n = a.events;
        async move { written(c).await >= n }
    })
    .await?;
    let relay_secs = t.elapsed().as_secs_f64();
    let relay_rate = (a.events - first) as f64 / relay_secs;

    println!("| measure | events | seconds | events/s |");
    println!("| --- | ---: | ---: | ---: |");
    println!("| raw pipelined XADD (ceiling) | {} | {raw_secs:.2} | {raw_rate:.0} |", a.events);
    println!(
        "| sidecar Kafka → Redis | {} | {relay_secs:.2} | {relay_rate:.0} |",
        a.events - first
    );
    println!("\nrelay / ceiling = {:.0}%", 100.0 * relay_rate / raw_rate);
    Ok(())
}
