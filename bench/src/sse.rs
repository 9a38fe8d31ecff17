//! SSE latency and fan-out, end to end: mock Kafka → release sidecar → Redis →
//! `sse` component on the release test host (a child process, so its memory is its
//! own) → SSE clients in this process.

use crate::procs::{private_bytes, prompt_fetch, rss_bytes, spawn_logged, until, Log, Proc};
use anyhow::{Context, Result};
use crm_events_harness::app;
use crm_events_harness::mock_kafka::Kafka;
use crm_events_harness::redis_server::{free_port, RedisServer};
use crm_events_harness::sse_client::SseClient;
use std::time::Duration;

const TOPIC: &str = "aetherlink.events";

/// SSE benchmark settings.
#[derive(clap::Args)]
pub struct Args {
    /// Clients in the latency run.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Events per second in the latency run.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Length of the latency run, seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Client counts of the fan-out runs.
    #[arg(long, value_delimiter = ',', default_value = "100,250,500,1000")]
    fanout: Vec<usize>,
    /// Events per fan-out run (sent at 100/s).
    #[arg(long, default_value_t = 300)]
    fanout_events: usize,
}

pub fn now_us() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as i64
}

/// Produces `n` events at `rate`/s, each stamped with its send time.
async fn produce(kafka: &Kafka, n: usize, rate: u64) {
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in 0..n {
        tick.tick().await;
        let value = format!(
            r#"{{"Type":"JobUpdated","TenantId":"tenant-{}","JobId":"job-{i}","Status":"InProgress","SentUs":{}}}"#,
            i % 7,
            now_us()
        );
        kafka.send((i % 3) as i32, Some(b"JobUpdated"), Some(value.as_bytes()));
    }
    kafka.flush();
}

/// Connects `n` clients and waits for each one's `connected` event.
async fn connect(url: &str, n: usize) -> Vec<SseClient> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        let mut c = SseClient::connect(url, &[]).await;
        c.next(Duration::from_secs(30))
            .await
            .expect("connected event");
        clients.push(c);
    }
    clients
}

/// Per client: whether it got all `n` events in order, and per event the latency
/// (µs) from the send and the part of it spent before Redis had the event (its stream
/// id is Redis's clock, ms).
async fn receive(clients: Vec<SseClient>, n: usize) -> Vec<(bool, Vec<(i64, i64)>)> {
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(n);
                let mut last = String::new();
                let mut ordered = true;
                while lat.len() < n {
                    let Some(e) = c.next(Duration::from_secs(30)).await else {
                        break;
                    };
                    // The client stays light (no JSON tree): it shares the 2 cores
                    // with the app it measures.
                    let Some(sent) = sent_us(&e.data) else {
                        continue;
                    };
                    // Ids carry the stream's epoch: order by the stream id part.
                    let parse = |s: &str| {
                        crm_events_harness::sse_client::stream_id(s)
                            .parse::<crm_events_contracts::stream_id::StreamId>()
                            .ok()
                    };
                    ordered &= last.is_empty() || parse(&e.id) > parse(&last);
                    last = e.id.clone();
                    let redis_us =
                        e.id.split('-')
                            .next()
                            .and_then(|ms| ms.parse::<i64>().ok())
                            .unwrap_or(0)
                            * 1000;
                    lat.push((now_us() - sent, redis_us - sent));
                }
                (ordered && lat.len() == n, lat)
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("client task"));
    }
    out
}

/// The `SentUs` stamp of a domain event's data, found without parsing the JSON.
pub fn sent_us(data: &str) -> Option<i64> {
    if !data.starts_with(r#"{"kind":"domain_event""#) {
        return None;
    }
    let at = data.find(r#""SentUs":"#)? + r#""SentUs":"#.len();
    let digits: &str = &data[at..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

pub fn percentile(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// The pipeline under test: Redis, the broker, the release sidecar and host.
pub struct Pipeline {
    // Dropped in this order: the app and the sidecar stop before their Kafka and
    // Redis go (no error noise between runs).
    pub host: Proc,
    pub sidecar: Proc,
    pub kafka: Kafka,
    pub redis: RedisServer,
    sidecar_port: u16,
    base: String,
    http: reqwest::Client,
}

pub async fn run(a: Args) -> Result<()> {
    let max_instances = a.fanout.iter().copied().max().unwrap_or(0).max(a.clients) + 100;
    let p = Pipeline::start(Settings::new(max_instances))?;
    p.wait_ready().await?;
    latency_run(&p, &a).await?;
    println!(
        "\n## Fan-out: {} events at 100/s to every client",
        a.fanout_events
    );
    println!("| clients | got every event in order | app RSS MiB | RSS per client KiB | private per client KiB | p99 ms |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    for &clients in &a.fanout {
        fanout_run(&p, clients, a.fanout_events).await?;
    }
    drop(p.redis);
    Ok(())
}

/// How the host runs: as `make run` runs it, or as close to Spin 4 as it goes.
#[derive(Clone, Copy, Debug)]
pub struct HostMode {
    /// `TCP_NODELAY` on accepted sockets (`make run` sets it; Spin 4 does not).
    pub nodelay: bool,
    /// One Redis connection and one `XREAD` per stream for every client (Spin has a
    /// connection and a read per client).
    pub shared_redis: bool,
}

impl HostMode {
    /// As `make run` runs the host.
    pub const MAKE_RUN: HostMode = HostMode {
        nodelay: true,
        shared_redis: true,
    };

    /// The host's environment for this mode.
    fn env(self) -> [(&'static str, String); 2] {
        let flag = |on: bool| if on { "1" } else { "0" }.to_string();
        [
            ("CRM_EVENTS_HOST_TCP_NODELAY", flag(self.nodelay)),
            ("CRM_EVENTS_HOST_SHARED_REDIS", flag(self.shared_redis)),
        ]
    }
}

/// How a [`Pipeline`] starts.
pub struct Settings<'a> {
    /// The host's `--max-instances`.
    pub max_instances: usize,
    /// Where the parts' logs go (`<dir>/<part>.log`); inherited when `None`.
    pub logs: Option<&'a std::path::Path>,
    pub mode: HostMode,
    /// More app variables (`name=value`).
    pub variables: Vec<String>,
    /// The producer's `linger.ms`: 0 sends each event at once (the latency runs).
    pub producer_linger_ms: u32,
}

impl Settings<'_> {
    /// The host as `make run` runs it, each event produced at once.
    pub fn new(max_instances: usize) -> Self {
        Settings {
            max_instances,
            logs: None,
            mode: HostMode::MAKE_RUN,
            variables: Vec::new(),
            producer_linger_ms: 0,
        }
    }
}

impl Pipeline {
    /// Starts every part.
    pub fn start(settings: Settings) -> Result<Self> {
        let Settings {
            max_instances,
            logs,
            mode,
            variables,
            producer_linger_ms,
        } = settings;
        let redis = RedisServer::start()?;
        // Every stream holds a Redis connection: the default maxclients (10,000)
        // would refuse the 10,000th stream beside the sidecar's and the probes'.
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxclients")
            .arg("18000")
            .query::<()>(&mut redis.connection()?)?;
        let kafka = Kafka::start_with_linger(TOPIC, 3, producer_linger_ms);
        let sidecar_port = free_port()?;
        let sidecar = crate::procs::sidecar_logged(
            &redis,
            &kafka,
            sidecar_port,
            &[prompt_fetch()],
            &Log::in_dir(logs, "sidecar"),
        )?;
        let port = free_port()?;
        let (manifest, cache) = (app::manifest_path(), app::cache_dir());
        let (listen, redis_host) = (
            format!("127.0.0.1:{port}"),
            format!("redis_host={}", redis.host_port()),
        );
        let max_instances = max_instances.to_string();
        let mut args = vec![
            "--manifest",
            manifest.to_str().context("path")?,
            "--listen",
            &listen,
            "--variable",
            &redis_host,
            "--variable",
            "max_clients=0",
            // The pipeline's own latency; `bench auth` measures what auth adds.
            // Every client is on 127.0.0.1: no per-address limits here.
            "--variable",
            "auth_mode=none",
            "--variable",
            "max_streams_per_address=0",
            "--variable",
            "max_connects_per_minute=0",
            // No connection caps either: the bench is the only client.
            "--max-connections",
            "0",
            "--max-connections-per-address",
            "0",
            "--max-instances",
            &max_instances,
            "--cache-dir",
            cache.to_str().context("path")?,
        ];
        args.extend(variables.iter().flat_map(|v| ["--variable", v.as_str()]));
        let host = spawn_logged(
            "crm-events-host",
            &args,
            &mode.env(),
            &Log::in_dir(logs, "host"),
        )?;
        Ok(Self {
            redis,
            kafka,
            sidecar,
            host,
            sidecar_port,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        })
    }

    async fn get_ok(&self, url: String) -> bool {
        self.http
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    /// Waits for the app to answer and the sidecar to have its partitions.
    pub async fn wait_ready(&self) -> Result<()> {
        until("the app", Duration::from_secs(120), || {
            self.get_ok(format!("{}/healthz", self.base))
        })
        .await?;
        until("the sidecar's assignment", Duration::from_secs(60), || {
            self.get_ok(format!("http://127.0.0.1:{}/readyz", self.sidecar_port))
        })
        .await
    }

    /// Waits until no stream of an earlier run is open.
    async fn wait_no_streams(&self) -> Result<()> {
        until(
            "streams of the last run to close",
            Duration::from_secs(60),
            || async {
                let Ok(r) = self.http.get(format!("{}/metrics", self.base)).send().await else {
                    return false;
                };
                r.text()
                    .await
                    .is_ok_and(|t| t.lines().any(|l| l == "crm_events_sse_clients 0"))
            },
        )
        .await
    }

    /// The pids of the server side: host, Redis, sidecar.
    pub fn server_pids(&self) -> [u32; 3] {
        [self.host.0.id(), self.redis.pid(), self.sidecar.0.id()]
    }

    pub fn stream_url(&self) -> String {
        format!("{}/crm-events", self.base)
    }
}

/// Latency at a fixed rate, split at the Redis write.
async fn latency_run(p: &Pipeline, a: &Args) -> Result<()> {
    let n = (a.rate * a.seconds) as usize;
    let clients = connect(&p.stream_url(), a.clients).await;
    let receiving = tokio::spawn(receive(clients, n));
    produce(&p.kafka, n, a.rate).await;
    let results = receiving.await.context("receivers")?;
    let complete = results.iter().filter(|(ok, _)| *ok).count();
    let pairs: Vec<(i64, i64)> = results.into_iter().flat_map(|(_, l)| l).collect();
    let sorted = |f: fn(&(i64, i64)) -> i64| {
        let mut v: Vec<i64> = pairs.iter().map(f).collect();
        v.sort_unstable();
        v
    };
    let all = sorted(|p| p.0);
    let to_redis = sorted(|p| p.1);
    let from_redis = sorted(|p| p.0 - p.1);
    println!(
        "## Latency: Kafka produce → SSE client, {} clients, {} events/s for {} s (sidecar defaults; fetch.wait.max.ms=1 for the mock broker)",
        a.clients, a.rate, a.seconds
    );
    println!("| clients complete | events received | p50 ms | p99 ms | max ms |");
    println!("| ---: | ---: | ---: | ---: | ---: |");
    println!(
        "| {complete}/{} | {} | {:.1} | {:.1} | {:.1} |",
        a.clients,
        all.len(),
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        percentile(&all, 1.0)
    );
    println!("\n| where the time goes (1 ms resolution) | p50 ms | p99 ms |");
    println!("| --- | ---: | ---: |");
    println!(
        "| produce → in Redis (broker, sidecar) | {:.1} | {:.1} |",
        percentile(&to_redis, 0.5),
        percentile(&to_redis, 0.99)
    );
    println!(
        "| in Redis → SSE client (XREAD wake-up, component, HTTP, client) | {:.1} | {:.1} |",
        percentile(&from_redis, 0.5),
        percentile(&from_redis, 0.99)
    );
    Ok(())
}

/// Fan-out: whether `clients` clients each get every event, and what each costs.
async fn fanout_run(p: &Pipeline, clients: usize, events: usize) -> Result<()> {
    p.wait_no_streams().await?;
    let pid = p.host.0.id();
    let (before, private_before) = (rss_bytes(pid)?, private_bytes(pid)?);
    let connected = connect(&p.stream_url(), clients).await;
    let (after, private_after) = (rss_bytes(pid)?, private_bytes(pid)?);
    let receiving = tokio::spawn(receive(connected, events));
    produce(&p.kafka, events, 100).await;
    let results = receiving.await.context("receivers")?;
    let complete = results.iter().filter(|(ok, _)| *ok).count();
    let mut lat: Vec<i64> = results
        .into_iter()
        .flat_map(|(_, l)| l)
        .map(|p| p.0)
        .collect();
    lat.sort_unstable();
    let per_client = |a: u64, b: u64| a.saturating_sub(b) as f64 / clients as f64 / 1024.0;
    println!(
        "| {clients} | {complete}/{clients} | {:.0} | {:.0} | {:.0} | {:.1} |",
        after as f64 / 1048576.0,
        per_client(after, before),
        per_client(private_after, private_before),
        percentile(&lat, 0.99)
    );
    Ok(())
}
