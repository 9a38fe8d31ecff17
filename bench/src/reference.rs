//! A reference in the same run: the same workload against crm-events (Kafka →
//! sidecar → Redis → `sse` component on the release host) and against Nchan (nginx
//! with the Nchan module, memory store, fed by its HTTP publisher), with the same
//! client code, clients, payload and rate, and the ratios crm-events ÷ Nchan.
//!
//! Per workload and server: p50/p99 latency from the send to the client, events
//! delivered per second, and CPU seconds per delivered event of the server side
//! (`/proc/<pid>/stat`: the host, Redis and the sidecar; every `nginx` process),
//! and the app's memory per stream (private pages of the host, of nginx's master
//! and workers: RSS would count the components' shared memory image per instance). nginx and the module are Debian's
//! (`nginx`, `libnginx-mod-nchan`), unpacked by `scripts/setup.sh --bench`.

use crate::procs::{cpu_seconds, cpu_seconds_of, pids_of, private_bytes, until, Proc};
use crate::sse::{now_us, percentile, sent_us, HostMode, Pipeline, Settings};
use anyhow::{bail, Context, Result};
use crm_events_contracts::envelope::{Audience, Envelope, RawRecord};
use crm_events_harness::redis_server::free_port;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Reference benchmark settings.
#[derive(clap::Args)]
pub struct Args {
    /// Workloads: `<clients>x<events per second>` (every client reads every tenant:
    /// the operator's view), or `<tenants>t<clients per tenant>x<events per second>`
    /// (each client reads its own tenant, the rate spread over the tenants; Nchan
    /// with a channel per tenant).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "100x1000,1000x100,100t10x1000,1000t5x1000"
    )]
    workloads: Vec<String>,
    /// Seconds each workload runs.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// More crm-events runs (with `TCP_NODELAY`), one at each of these `linger_ms`
    /// values: a sweep (`0,10,20,50`). The default, 0, sets the default's 5 beside no
    /// linger at all.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    lingers: Vec<u64>,
    /// Which hosts run at the default linger: `shared` (as `make run`), `own-reads`
    /// (a read and a connection per stream), `as-spin` (that, and Nagle on). A read
    /// per stream takes two descriptors per stream: past ~9,000 streams only `shared`
    /// fits a 20,000-descriptor limit.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "shared,own-reads,as-spin"
    )]
    hosts: Vec<String>,
    /// Skip the linger sweep (only the `--hosts` runs).
    #[arg(long)]
    no_lingers: bool,
}

/// How crm-events runs at the default `linger_ms`: the `--hosts` name, the host's
/// mode, and the label. The first is the one the ratios use; the second is the same
/// host with a read per stream, the baseline of the shared reads in the same run.
const VARIANTS: [(&str, HostMode, &str); 3] = [
    (
        "shared",
        HostMode::MAKE_RUN,
        "crm-events (host: TCP_NODELAY, shared reads)",
    ),
    (
        "own-reads",
        HostMode {
            nodelay: true,
            shared_redis: false,
        },
        "crm-events (host: TCP_NODELAY, a read per stream)",
    ),
    (
        "as-spin",
        HostMode {
            nodelay: false,
            shared_redis: false,
        },
        "crm-events (host as Spin: Nagle on, a read per stream)",
    ),
];

/// The chosen fixed variants, then one per swept `linger_ms` (as `make run` runs the
/// host): the mode, the linger (`None`: the default), the label.
fn variants(a: &Args) -> Result<Vec<(HostMode, Option<u64>, String)>> {
    let mut chosen = Vec::new();
    for name in &a.hosts {
        let Some((_, mode, label)) = VARIANTS.iter().find(|(n, ..)| n == name) else {
            bail!("--hosts takes shared, own-reads and as-spin, not {name:?}");
        };
        chosen.push((*mode, None, label.to_string()));
    }
    let lingers = if a.no_lingers {
        &[][..]
    } else {
        &a.lingers[..]
    };
    chosen.extend(lingers.iter().map(|&ms| {
        let label = format!("crm-events (TCP_NODELAY, shared reads, linger_ms={ms})");
        (HostMode::MAKE_RUN, Some(ms), label)
    }));
    Ok(chosen)
}

/// One workload.
#[derive(Clone, Copy)]
struct Workload {
    /// Every client, over all tenants.
    clients: usize,
    rate: u64,
    /// Tenants, each read by `clients / tenants` of the clients (0: every client
    /// reads every tenant's events).
    tenants: usize,
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.tenants {
            0 => write!(f, "{}×{}/s", self.clients, self.rate),
            t => write!(f, "{t} tenants × {} × {}/s", self.clients / t, self.rate),
        }
    }
}

impl Workload {
    /// The tenant of event `i`, as its number.
    fn tenant_of(&self, i: usize) -> usize {
        i % self.tenants.max(7)
    }

    /// The events client `c` expects: its tenant's, `(first, step, count)` of `n`.
    fn share(&self, c: usize, n: usize) -> (usize, usize, usize) {
        match self.tenants {
            0 => (0, 1, n),
            t => {
                let k = c % t;
                (k, t, n / t + usize::from(k < n % t))
            }
        }
    }
}

/// What one server did with one workload.
struct Outcome {
    complete: usize,
    p50_ms: f64,
    p99_ms: f64,
    per_second: f64,
    cpu_us_per_event: f64,
    /// The CPU per delivered event of each server process, in the order given.
    cpu_split: Vec<f64>,
    kib_per_stream: f64,
    /// CPU per delivered event of this process: the clients, the publishing side
    /// (for crm-events the producer and librdkafka's mock broker, for Nchan the HTTP
    /// publisher). It shares the 2 cores with the server it measures.
    load_us_per_event: f64,
}

pub async fn run(a: Args) -> Result<()> {
    let workloads = a
        .workloads
        .iter()
        .map(|w| parse_workload(w))
        .collect::<Result<Vec<_>>>()?;
    let most = workloads.iter().map(|w| w.clients).max().unwrap_or(0);
    let nginx = Nchan::start()?;
    println!(
        "## crm-events ÷ Nchan, same clients, payload, rate ({} s each)",
        a.seconds
    );
    println!("| workload | server | complete | p50 ms | p99 ms | delivered/s | CPU µs/event | private KiB/stream |");
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for w in &workloads {
        let mut ours = Vec::new();
        for (mode, linger, label) in variants(&a)? {
            let variables: Vec<String> = linger
                .map(|ms| format!("linger_ms={ms}"))
                .into_iter()
                .collect();
            let p = Pipeline::start(Settings {
                mode,
                variables,
                ..Settings::new(most + 100)
            })?;
            p.wait_ready().await?;
            let o = run_crm_events(&p, *w, a.seconds).await?;
            print_row(*w, &label, &o);
            print_split(*w, &o);
            ours.push((label, o));
        }
        let theirs = run_nchan(&nginx, *w, a.seconds).await?;
        print_row(*w, "Nchan", &theirs);
        print_split(*w, &theirs);
        let (label, first) = &ours[0];
        print_ratio(*w, label, first, &theirs);
    }
    Ok(())
}

/// crm-events (the first variant, `label`) ÷ Nchan. Nchan's memory per stream can
/// read under 1 KiB (a larger workload before it left its pages in place): no ratio
/// then.
fn print_ratio(w: Workload, label: &str, o: &Outcome, theirs: &Outcome) {
    let memory = if theirs.kib_per_stream < 1.0 {
        "n/a".to_string()
    } else {
        format!("**{:.1}**", o.kib_per_stream / theirs.kib_per_stream)
    };
    println!(
        "| {w} | **ratio** ({label} ÷ Nchan) | | | **{:.2}** | **{:.2}** | **{:.2}** | {memory} |",
        o.p99_ms / theirs.p99_ms,
        o.per_second / theirs.per_second,
        o.cpu_us_per_event / theirs.cpu_us_per_event,
    );
}

/// Where crm-events' CPU went: the host, Redis and the sidecar
/// ([`Pipeline::server_pids`]'s order).
fn print_split(w: Workload, o: &Outcome) {
    let load = o.load_us_per_event;
    if let [host, redis, sidecar] = o.cpu_split[..] {
        println!(
            "| {w} | ↳ CPU µs/event: host {host:.2}, Redis {redis:.2}, sidecar {sidecar:.2}; load side {load:.2} | | | | | | |"
        );
    } else {
        println!("| {w} | ↳ CPU µs/event: load side {load:.2} | | | | | | |");
    }
}

fn parse_workload(w: &str) -> Result<Workload> {
    let (c, r) = w
        .split_once('x')
        .context("a workload is <clients>x<rate> or <tenants>t<clients per tenant>x<rate>")?;
    let (tenants, per) = match c.split_once('t') {
        Some((t, per)) => (t.parse()?, per.parse::<usize>()?),
        None => (0, c.parse()?),
    };
    Ok(Workload {
        clients: per * tenants.max(1),
        rate: r.parse()?,
        tenants,
    })
}

fn print_row(w: Workload, label: &str, o: &Outcome) {
    println!(
        "| {w} | {label} | {}/{} | {:.1} | {:.1} | {:.0} | {:.2} | {:.0} |",
        o.complete,
        w.clients,
        o.p50_ms,
        o.p99_ms,
        o.per_second,
        o.cpu_us_per_event,
        o.kib_per_stream
    );
}

/// The event the client receives: the envelope the sidecar would make of the
/// value, so both servers carry the same bytes.
fn payload(w: Workload, i: usize) -> (String, String) {
    let value = format!(
        r#"{{"Type":"JobUpdated","TenantId":"tenant-{}","JobId":"job-{i}","Status":"InProgress","SentUs":{}}}"#,
        w.tenant_of(i),
        now_us()
    );
    let envelope = Envelope::from_record(
        RawRecord {
            topic: "aetherlink.events",
            partition: 0,
            offset: i as i64,
            timestamp: Some(now_us() / 1000),
            key: Some(b"JobUpdated"),
            value: Some(value.as_bytes()),
        },
        [],
        0,
        Audience::Operator,
    )
    .to_json();
    (value, envelope)
}

async fn run_crm_events(p: &Pipeline, w: Workload, seconds: u64) -> Result<Outcome> {
    let pids = p.server_pids();
    let cpu = || {
        pids.iter()
            .map(|pid| cpu_seconds(*pid).unwrap_or(0.0))
            .collect::<Vec<f64>>()
    };
    let private = || private_bytes(pids[0]).unwrap_or(0);
    let publish = |i: usize| {
        let (value, _) = payload(w, i);
        // One partition: Kafka orders within a partition, Nchan within its one
        // channel, so both can be held to the same order.
        p.kafka.send(0, Some(b"JobUpdated"), Some(value.as_bytes()));
        async {}
    };
    let base = p.stream_url();
    let url = |k: usize| match w.tenants {
        0 => base.clone(),
        _ => format!("{base}?tenant=tenant-{k}"),
    };
    measure(url, w, seconds, cpu, private, publish).await
}

async fn run_nchan(n: &Nchan, w: Workload, seconds: u64) -> Result<Outcome> {
    let http = reqwest::Client::new();
    // One channel for the operator's view, one per tenant otherwise.
    let channel = |k: usize| match w.tenants {
        0 => "bench".to_string(),
        _ => format!("tenant-{k}"),
    };
    let publish = |i: usize| {
        let (_, envelope) = payload(w, i);
        let url = format!("{}/pub/{}", n.base, channel(w.tenant_of(i)));
        let req = http.post(url).body(envelope).send();
        async move {
            let _ = req.await;
        }
    };
    measure(
        |k| format!("{}/sub/{}", n.base, channel(k)),
        w,
        seconds,
        || vec![cpu_seconds_of("nginx")],
        nginx_private,
        publish,
    )
    .await
}

/// Connects the clients, publishes `rate × seconds` events at `rate`, and reads
/// what the clients saw and what the server spent.
async fn measure<F, Fut>(
    url: impl Fn(usize) -> String,
    w: Workload,
    seconds: u64,
    cpu: impl Fn() -> Vec<f64>,
    private: impl Fn() -> u64,
    publish: F,
) -> Result<Outcome>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let n = (w.rate * seconds) as usize;
    let private_before = private();
    let mut clients = Vec::with_capacity(w.clients);
    for c in 0..w.clients {
        let (first, step, count) = w.share(c, n);
        let tenant = if w.tenants == 0 { 0 } else { first };
        clients.push(lean_client(&url(tenant), count, first, step).await?);
    }
    let kib_per_stream =
        private().saturating_sub(private_before) as f64 / w.clients as f64 / 1024.0;
    let load = || cpu_seconds(std::process::id()).unwrap_or(0.0);
    let (cpu_before, load_before, started) = (cpu(), load(), Instant::now());
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / w.rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in 0..n {
        tick.tick().await;
        publish(i).await;
    }
    let mut latencies = Vec::new();
    let mut complete = 0;
    for c in clients {
        let (ok, lat) = c.await?;
        complete += usize::from(ok);
        latencies.extend(lat);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let spent: Vec<f64> = cpu().iter().zip(&cpu_before).map(|(a, b)| a - b).collect();
    let load_spent = load() - load_before;
    latencies.sort_unstable();
    let delivered = latencies.len();
    Ok(Outcome {
        complete,
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
        per_second: delivered as f64 / elapsed,
        cpu_us_per_event: spent.iter().sum::<f64>() * 1e6 / delivered.max(1) as f64,
        cpu_split: spent
            .iter()
            .map(|s| s * 1e6 / delivered.max(1) as f64)
            .collect(),
        kib_per_stream,
        load_us_per_event: load_spent * 1e6 / delivered.max(1) as f64,
    })
}

/// Opens a stream and reads `n` events in a task: whether they came complete and
/// in order (the `job-<i>` sequence `first`, `first + step`, …), and each one's
/// latency in µs. Keeps no text: thousands of clients share the machine with the
/// servers they measure.
async fn lean_client(
    url: &str,
    n: usize,
    first: usize,
    step: usize,
) -> Result<tokio::task::JoinHandle<(bool, Vec<i64>)>> {
    let resp = reqwest::Client::new()
        .get(url)
        .header("accept", "text/event-stream")
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("{url}: {}", resp.status());
    }
    Ok(tokio::spawn(async move {
        let mut events = resp.bytes_stream().eventsource();
        let (mut lat, mut next, mut ordered) = (Vec::with_capacity(n), first, true);
        while lat.len() < n {
            let Ok(Some(Ok(e))) =
                tokio::time::timeout(Duration::from_secs(30), events.next()).await
            else {
                break;
            };
            let Some(sent) = sent_us(&e.data) else {
                continue;
            };
            ordered &= job_number(&e.data) == Some(next);
            next += step;
            lat.push(now_us() - sent);
        }
        (ordered && lat.len() == n, lat)
    }))
}

/// The `i` of `"JobId":"job-<i>"` in an event's data.
fn job_number(data: &str) -> Option<usize> {
    let at = data.find("job-")? + 4;
    let digits = &data[at..];
    let end = digits.find(|c: char| !c.is_ascii_digit())?;
    digits[..end].parse().ok()
}

/// Memory nginx holds alone (private pages): the master and its workers (every
/// `nginx` process, as its CPU is counted).
fn nginx_private() -> u64 {
    pids_of("nginx")
        .into_iter()
        .filter_map(|pid| private_bytes(pid).ok())
        .sum()
}

/// nginx with Nchan on a loopback port, in a directory of its own.
struct Nchan {
    proc: Proc,
    base: String,
    /// `nginx -s stop` with these arguments stops the master and its workers (a
    /// SIGKILL of the master alone would leave the workers running).
    stop: Vec<std::ffi::OsString>,
    binary: PathBuf,
    _dir: TempDir,
}

impl Drop for Nchan {
    fn drop(&mut self) {
        let _ = std::process::Command::new(&self.binary)
            .args(&self.stop)
            .args(["-s", "stop"])
            .status();
        let _ = self.proc.0.wait();
    }
}

/// Where `scripts/setup.sh --bench` unpacks nginx and the module.
fn nginx_root() -> PathBuf {
    crm_events_harness::app::root().join("target/tools/nginx")
}

impl Nchan {
    fn start() -> Result<Self> {
        let root = nginx_root();
        let binary = root.join("usr/sbin/nginx");
        let module = root.join("usr/lib/nginx/modules/ngx_nchan_module.so");
        if !binary.exists() || !module.exists() {
            bail!("nginx and Nchan are missing: run scripts/setup.sh --bench (make bench does)");
        }
        let dir = TempDir::new("crm-events-nchan")?;
        let port = free_port()?;
        let conf = dir.0.join("nginx.conf");
        std::fs::write(&conf, nginx_conf(&dir.0, &module, port))?;
        let args: Vec<std::ffi::OsString> = vec![
            "-p".into(),
            dir.0.clone().into(),
            "-c".into(),
            conf.into(),
            "-e".into(),
            dir.0.join("error.log").into(),
        ];
        let child = std::process::Command::new(&binary)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .context("starting nginx")?;
        let nchan = Self {
            proc: Proc(child),
            base: format!("http://127.0.0.1:{port}"),
            stop: args,
            binary,
            _dir: dir,
        };
        nchan.wait_ready()?;
        Ok(nchan)
    }

    fn wait_ready(&self) -> Result<()> {
        let url = format!("{}/ready", self.base);
        let rt = tokio::runtime::Handle::current();
        tokio::task::block_in_place(|| {
            rt.block_on(until("nginx", Duration::from_secs(30), || async {
                reqwest::get(&url)
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }))
        })
    }
}

/// Nchan's memory store; subscribers get only messages published after they
/// connect, as crm-events' clients without a resume position do.
fn nginx_conf(dir: &std::path::Path, module: &std::path::Path, port: u16) -> String {
    let d = dir.display();
    let user = if is_root() { "user root root;\n" } else { "" };
    format!(
        r#"daemon off;
{user}worker_processes 2;
pid {d}/nginx.pid;
load_module {module};
events {{ worker_connections 20000; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location = /ready {{ return 200 "ok"; }}
    location ~ ^/pub/([a-z0-9-]+)$ {{ nchan_publisher; nchan_channel_id $1; nchan_message_buffer_length 100; }}
    location ~ ^/sub/([a-z0-9-]+)$ {{ nchan_subscriber eventsource; nchan_channel_id $1; nchan_subscriber_first_message newest; }}
  }}
}}
"#,
        module = module.display()
    )
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().nth(1))
            == Some("0")
    })
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
