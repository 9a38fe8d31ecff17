//! What access control costs: two release hosts on one Redis, one with `auth_mode=none`
//! and one with JWT verification and a tenant scope, measured in the same run.
//!
//! * Connection setup: request sent → `connected` event received, sequential
//!   connects, p50/p99.
//! * Delivery: `clients` streams each receiving `events` events written to the Redis
//!   stream in one burst; events delivered per second. With auth on every client's
//!   token is scoped to the tenant all events belong to, so both sides deliver the
//!   same events and the scope filter runs on every one.
//! * Refusals (auth on): the host's CPU per request for a good stream's opening, a bad
//!   token (verified, refused `401`, counted) and a request from an address over its
//!   failed-authentication limit (`429` before any verification): a flood of bad
//!   tokens must cost less than good streams.

use crate::procs::{cpu_seconds, spawn, until, Proc};
use anyhow::{Context, Result};
use crm_events_contracts::keys::{Keys, ENVELOPE_FIELD};
use crm_events_harness::app;
use crm_events_harness::redis_server::{free_port, RedisServer};
use crm_events_harness::sse_client::SseClient;
use crm_events_harness::tokens;
use jsonwebtoken::Algorithm;
use std::time::{Duration, Instant};

/// Auth benchmark settings.
#[derive(clap::Args)]
pub struct Args {
    /// Sequential connects measured per side.
    #[arg(long, default_value_t = 300)]
    connects: usize,
    /// Streams in the delivery run.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Events per delivery run.
    #[arg(long, default_value_t = 2000)]
    events: usize,
    /// Delivery runs per side (alternating, to spread drift over both).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

/// One host under test.
struct Side {
    name: &'static str,
    _host: Proc,
    url: String,
    headers: Vec<(&'static str, String)>,
}

pub async fn run(a: Args) -> Result<()> {
    let redis = RedisServer::start()?;
    let sides = [start_side(&redis, false)?, start_side(&redis, true)?];
    for side in &sides {
        until(side.name, Duration::from_secs(120), || async {
            reqwest::get(format!(
                "{}/healthz",
                side.url.trim_end_matches("/crm-events")
            ))
            .await
            .is_ok_and(|r| r.status().is_success())
        })
        .await?;
    }
    println!("## Access control: auth off vs JWT + tenant scope, same run");
    println!("| measure | auth off | auth on (EdDSA, scoped) | on / off |");
    println!("| --- | ---: | ---: | ---: |");
    let mut setup = Vec::new();
    for side in &sides {
        setup.push(setup_latency(side, a.connects).await?);
    }
    println!(
        "| connection setup p50 ms | {:.2} | {:.2} | {:.2} |",
        setup[0].0,
        setup[1].0,
        setup[1].0 / setup[0].0
    );
    println!(
        "| connection setup p99 ms | {:.2} | {:.2} | {:.2} |",
        setup[0].1,
        setup[1].1,
        setup[1].1 / setup[0].1
    );
    let mut rates = [Vec::new(), Vec::new()];
    let mut conn = redis.connection()?;
    for round in 0..a.rounds {
        // Alternate which side goes first.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            rates[i].push(delivery(&sides[i], &mut conn, a.clients, a.events).await?);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|x, y| x.total_cmp(y));
        v[v.len() / 2]
    };
    let (off, on) = (median(&mut rates[0]), median(&mut rates[1]));
    println!(
        "| events delivered/s (median of {}) | {off:.0} | {on:.0} | {:.2} |",
        a.rounds,
        on / off
    );
    refusal_costs(&sides[1], a.connects).await
}

/// The auth-on host's CPU per request: good stream openings, bad tokens (each from an
/// address of its own, so each is verified) and an address over its limit.
async fn refusal_costs(side: &Side, n: usize) -> Result<()> {
    let pid = side._host.0.id();
    let http = reqwest::Client::new();
    let good = side.headers[0].1.clone();
    let bad = format!("{}x", good.trim_end_matches(|c: char| c != '.'));
    let per_request = |before: f64, after: f64| (after - before) / n as f64 * 1e6;
    let before = cpu_seconds(pid)?;
    for _ in 0..n {
        let mut c = SseClient::connect(&side.url, &[("authorization", good.as_str())]).await;
        c.next(Duration::from_secs(10))
            .await
            .context("connected event")?;
    }
    let opened = per_request(before, cpu_seconds(pid)?);
    let attempt = |forwarded: String| {
        http.get(&side.url)
            .header("authorization", &bad)
            .header("x-forwarded-for", forwarded)
            .send()
    };
    let before = cpu_seconds(pid)?;
    for i in 0..n {
        let status = attempt(format!("10.{}.{}.1", i / 250, i % 250))
            .await?
            .status();
        anyhow::ensure!(status == 401, "a bad token answered {status}");
    }
    let verified = per_request(before, cpu_seconds(pid)?);
    attempt("192.0.2.1".into()).await?;
    let before = cpu_seconds(pid)?;
    for _ in 0..n {
        let status = attempt("192.0.2.1".into()).await?.status();
        anyhow::ensure!(status == 429, "an address over its limit answered {status}");
    }
    let limited = per_request(before, cpu_seconds(pid)?);
    println!("| host CPU µs per good stream opening (auth on) | | {opened:.0} | |");
    println!(
        "| host CPU µs per bad token (verified, 401) | | {verified:.0} | {:.2} of a good opening |",
        verified / opened
    );
    println!("| host CPU µs per attempt over the limit (429) | | {limited:.0} | {:.2} of a good opening |", limited / opened);
    Ok(())
}

fn start_side(redis: &RedisServer, auth: bool) -> Result<Side> {
    let port = free_port()?;
    let mut args = vec![
        "--manifest".to_string(),
        app::manifest_path().to_str().context("path")?.to_string(),
        "--listen".to_string(),
        format!("127.0.0.1:{port}"),
        "--cache-dir".to_string(),
        app::cache_dir().to_str().context("path")?.to_string(),
        "--max-instances".to_string(),
        "5000".to_string(),
        // The bench is the only client, all on 127.0.0.1: no connection caps.
        "--max-connections".to_string(),
        "0".to_string(),
        "--max-connections-per-address".to_string(),
        "0".to_string(),
    ];
    let mut vars = vec![
        format!("redis_host={}", redis.host_port()),
        "max_clients=0".to_string(),
        "max_streams_per_subject=0".to_string(),
        "max_streams_per_address=0".to_string(),
        "max_connects_per_minute=0".to_string(),
        // One failure an address: the refusal measure sends each bad token from
        // an address of its own (verified) or from one over its limit (429).
        "max_auth_failures_per_minute=1".to_string(),
        "trusted_proxies=127.0.0.1".to_string(),
    ];
    let mut headers = Vec::new();
    if auth {
        vars.extend(
            tokens::auth_vars(&[Algorithm::EdDSA])
                .into_iter()
                .map(|(k, v)| format!("{k}={v}")),
        );
        headers.push((
            "authorization",
            format!("Bearer {}", tokens::token("bench", &["tenant-1"])),
        ));
    } else {
        vars.push("auth_mode=none".to_string());
    }
    for v in vars {
        args.push("--variable".to_string());
        args.push(v);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Ok(Side {
        name: if auth {
            "the auth-on host"
        } else {
            "the auth-off host"
        },
        _host: spawn("crm-events-host", &args, &[])?,
        url: format!("http://127.0.0.1:{port}/crm-events"),
        headers,
    })
}

/// `(p50, p99)` ms from sending the request to the `connected` event.
async fn setup_latency(side: &Side, n: usize) -> Result<(f64, f64)> {
    let headers: Vec<(&str, &str)> = side.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let mut c = SseClient::connect(&side.url, &headers).await;
        c.next(Duration::from_secs(10))
            .await
            .context("connected event")?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(|x, y| x.total_cmp(y));
    let at = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
    Ok((at(0.5), at(0.99)))
}

/// Events delivered per second to `clients` streams of `side`.
async fn delivery(
    side: &Side,
    conn: &mut redis::Connection,
    clients: usize,
    events: usize,
) -> Result<f64> {
    let headers: Vec<(&str, &str)> = side.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut streams = Vec::with_capacity(clients);
    for _ in 0..clients {
        let mut c = SseClient::connect(&side.url, &headers).await;
        c.next(Duration::from_secs(10))
            .await
            .context("connected event")?;
        streams.push(c);
    }
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                c.domain_events(events, Duration::from_secs(120))
                    .await
                    .len()
            })
        })
        .collect();
    let t = Instant::now();
    let stream = Keys::default().stream();
    for chunk in (0..events).collect::<Vec<_>>().chunks(500) {
        let mut pipe = redis::pipe();
        for i in chunk {
            let value = format!(
                r#"{{"kind":"domain_event","topic":"aetherlink.events","partition":0,"offset":{i},"timestamp":1795000000000,"key":"JobUpdated","value":{{"Type":"JobUpdated","TenantId":"tenant-1","JobId":"job-{i}","Title":"Replace boiler at site {i}","Status":"Scheduled","AssignedTo":"tech-7","Priority":"high"}}}}"#
            );
            pipe.cmd("XADD")
                .arg(&stream)
                .arg("*")
                .arg(ENVELOPE_FIELD)
                .arg(value)
                .ignore();
        }
        let () = pipe.query(conn)?;
    }
    let mut delivered = 0;
    for task in tasks {
        delivered += task.await?;
    }
    Ok(delivered as f64 / t.elapsed().as_secs_f64())
}
