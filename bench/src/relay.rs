//! Relay throughput: the sidecar (release binary) draining a backlog from the mock
//! broker into Redis, against raw pipelined `XADD` of the same envelopes into the
//! same Redis, one pipeline in flight at a time as the relay has one batch in flight.

use crate::procs::{until, Proc};
use anyhow::Result;
use crm_events_contracts::envelope::{Audience, Envelope, RawRecord};
use crm_events_contracts::keys::{Keys, ENVELOPE_FIELD};
use crm_events_harness::mock_kafka::Kafka;
use crm_events_harness::redis_server::RedisServer;
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
    /// Partitions of the topic. librdkafka's mock broker keeps at most 5 MB per
    /// partition, so the backlog is spread wide enough that nothing is dropped.
    #[arg(long, default_value_t = 24)]
    partitions: i32,
    /// The stream length kept (both sides trim to it).
    #[arg(long, default_value_t = 100_000)]
    maxlen: u64,
}

/// A realistic CRM event value (~250 bytes).
pub fn crm_value(i: usize) -> String {
    let kinds = [
        "JobCreated",
        "JobUpdated",
        "ContactUpdated",
        "AccountUpdated",
        "JobDeleted",
    ];
    format!(
        r#"{{"Type":"{}","TenantId":"tenant-{}","JobId":"job-{i:08}","Title":"Replace boiler at site {}","Status":"Scheduled","AssignedTo":"tech-{}","Priority":"high","Ts":"2026-11-23T10:00:00.000Z","Source":"crm-api","Version":3}}"#,
        kinds[i % kinds.len()],
        i % 7,
        i % 997,
        i % 31
    )
}

/// What one relay run measured.
struct Measured {
    raw_secs: f64,
    raw_rate: f64,
    relay_events: usize,
    relay_secs: f64,
    relay_rate: f64,
    consume_rate: f64,
}

pub async fn run(a: Args) -> Result<()> {
    let redis = RedisServer::start()?;
    let kafka = Kafka::start(TOPIC, a.partitions);
    let values: Vec<String> = (0..a.events).map(crm_value).collect();
    produce_backlog(&kafka, &values, a.partitions as usize);

    let client = redis::Client::open(redis.url())?;
    // No response timeout: the final check reads the whole stream in one reply.
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let envelopes = envelopes(&values, a.partitions as usize);
    let raw_secs = raw_xadd(&mut conn, &envelopes, &a).await?;
    let () = redis::cmd("FLUSHALL")
        .arg("ASYNC")
        .query_async(&mut conn)
        .await?;
    // What Kafka alone gives: a bare StreamConsumer draining the same backlog.
    let consume_rate = consume_only(&kafka.brokers(), a.events).await?;

    let metrics_port = crm_events_harness::redis_server::free_port()?;
    let sidecar = spawn_sidecar(&redis, &kafka, &a, metrics_port)?;
    let (first, relay_secs) = drain(&conn, a.events).await?;
    verify_stream(&mut conn, &a).await?;
    let m = Measured {
        raw_secs,
        raw_rate: a.events as f64 / raw_secs,
        relay_events: a.events - first,
        relay_secs,
        relay_rate: (a.events - first) as f64 / relay_secs,
        consume_rate,
    };
    report_sidecar(metrics_port, sidecar.0.id(), redis.pid()).await?;
    print_table(&m, a.events);
    Ok(())
}

/// Produces the backlog, round-robin over the partitions.
fn produce_backlog(kafka: &Kafka, values: &[String], parts: usize) {
    let t = Instant::now();
    for (i, v) in values.iter().enumerate() {
        let kind = v.split('"').nth(3).unwrap_or("JobCreated");
        kafka.send(
            (i % parts) as i32,
            Some(kind.as_bytes()),
            Some(v.as_bytes()),
        );
    }
    kafka.flush();
    eprintln!("produced {} events in {:?}", values.len(), t.elapsed());
}

/// The envelopes the sidecar would write for the backlog.
fn envelopes(values: &[String], parts: usize) -> Vec<String> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            Envelope::from_record(
                RawRecord {
                    topic: TOPIC,
                    partition: (i % parts) as i32,
                    offset: (i / parts) as i64,
                    timestamp: Some(1_795_000_000_000),
                    key: Some(b"JobCreated"),
                    value: Some(v.as_bytes()),
                },
                [],
                1 << 20,
                Audience::Operator,
            )
            .to_json()
        })
        .collect()
}

/// The ceiling: the same envelopes, pipelined `XADD … MAXLEN ~` like a lean writer,
/// one pipeline in flight; returns the seconds it took.
async fn raw_xadd(
    conn: &mut redis::aio::MultiplexedConnection,
    envelopes: &[String],
    a: &Args,
) -> Result<f64> {
    let stream = Keys::default().stream();
    let t = Instant::now();
    for chunk in envelopes.chunks(a.batch) {
        let mut pipe = redis::pipe();
        for e in chunk {
            pipe.cmd("XADD")
                .arg(&stream)
                .arg("MAXLEN")
                .arg("~")
                .arg(a.maxlen)
                .arg("*")
                .arg(ENVELOPE_FIELD)
                .arg(e)
                .ignore();
        }
        let () = pipe.query_async(conn).await?;
    }
    Ok(t.elapsed().as_secs_f64())
}

fn spawn_sidecar(redis: &RedisServer, kafka: &Kafka, a: &Args, metrics_port: u16) -> Result<Proc> {
    let settings = [
        ("BATCH_MAX", a.batch.to_string()),
        ("STREAM_MAXLEN", a.maxlen.to_string()),
    ];
    crate::procs::sidecar(redis, kafka, metrics_port, &settings)
}

/// Events the sidecar has written, by its watermarks.
async fn written(mut conn: redis::aio::MultiplexedConnection) -> usize {
    let marks: Vec<i64> = redis::cmd("HVALS")
        .arg(Keys::default().offsets())
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    marks.iter().map(|m| m + 1).sum::<i64>() as usize
}

/// Waits for the sidecar's first batch, then times the rest of the backlog;
/// returns `(events written before the clock started, seconds)`.
async fn drain(conn: &redis::aio::MultiplexedConnection, events: usize) -> Result<(usize, f64)> {
    until("the relay's first batch", Duration::from_secs(60), || {
        let c = conn.clone();
        async move { written(c).await > 0 }
    })
    .await?;
    let t = Instant::now();
    let first = written(conn.clone()).await;
    until(
        "the relay to drain the backlog",
        Duration::from_secs(600),
        || {
            let c = conn.clone();
            async move { written(c).await >= events }
        },
    )
    .await?;
    Ok((first, t.elapsed().as_secs_f64()))
}

/// The run only counts if every event was added once and the retained stream is
/// contiguous per partition.
async fn verify_stream(conn: &mut redis::aio::MultiplexedConnection, a: &Args) -> Result<()> {
    let stream = Keys::default().stream();
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(&stream)
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await?;
    let mut last = vec![None::<i64>; a.partitions as usize];
    for (id, fields) in &entries {
        let e: serde_json::Value = serde_json::from_str(&fields[0].1)?;
        let p = e["partition"].as_u64().unwrap_or(0) as usize;
        let o = e["offset"].as_i64().unwrap_or(-1);
        if let Some(prev) = last[p] {
            anyhow::ensure!(
                o == prev + 1,
                "entry {id}: partition {p} offset {o} after {prev}"
            );
        }
        last[p] = Some(o);
    }
    let info: redis::Value = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(&stream)
        .query_async(conn)
        .await?;
    let added = entries_added(&info);
    anyhow::ensure!(
        added == a.events as i64,
        "the relay added {added} entries, not {}",
        a.events
    );
    eprintln!(
        "checked: {} entries added, the {} retained contiguous per partition",
        a.events,
        entries.len()
    );
    Ok(())
}

/// Where the sidecar's time went: inside Redis writes, and CPU of both processes.
async fn report_sidecar(metrics_port: u16, sidecar_pid: u32, redis_pid: u32) -> Result<()> {
    let metrics = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await?
        .text()
        .await?;
    let sample = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    let write_secs = sample("crm_events_sidecar_redis_write_seconds_sum");
    let batches = sample("crm_events_sidecar_redis_write_seconds_count");
    eprintln!("time inside Redis writes: {write_secs:.2} s over {batches} batches");
    eprintln!(
        "sidecar CPU: {:.2} s; redis-server CPU: {:.2} s",
        cpu_seconds(sidecar_pid),
        cpu_seconds(redis_pid)
    );
    Ok(())
}

fn print_table(m: &Measured, events: usize) {
    println!("| measure | events | seconds | events/s |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| raw pipelined XADD (ceiling) | {events} | {:.2} | {:.0} |",
        m.raw_secs, m.raw_rate
    );
    println!(
        "| sidecar Kafka → Redis | {} | {:.2} | {:.0} |",
        m.relay_events, m.relay_secs, m.relay_rate
    );
    println!(
        "| Kafka consume only, no Redis (the broker's pace) | {events} | | {:.0} |",
        m.consume_rate
    );
    println!(
        "\nrelay / ceiling = {:.0}%",
        100.0 * m.relay_rate / m.raw_rate
    );
    println!(
        "relay / consume-only = {:.0}%",
        100.0 * m.relay_rate / m.consume_rate
    );
}

/// `entries-added` of an `XINFO STREAM` reply.
fn entries_added(info: &redis::Value) -> i64 {
    let redis::Value::Array(items) = info else {
        return -1;
    };
    items
        .chunks(2)
        .find(|kv| matches!(&kv[0], redis::Value::BulkString(k) if k == b"entries-added"))
        .and_then(|kv| match kv.get(1) {
            Some(redis::Value::Int(n)) => Some(*n),
            _ => None,
        })
        .unwrap_or(-1)
}

/// Events/s of a consumer that only receives (a group of its own, from earliest).
async fn consume_only(brokers: &str, events: usize) -> Result<f64> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "bench-consume-only")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("statistics.interval.ms", "5000")
        .create()?;
    consumer.subscribe(&[TOPIC])?;
    consumer.recv().await?;
    let t = Instant::now();
    for _ in 1..events {
        consumer.recv().await?;
    }
    Ok((events - 1) as f64 / t.elapsed().as_secs_f64())
}

/// User + system CPU time of a process, seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}
