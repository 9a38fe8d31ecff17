//! Soak: an hour at a steady rate, with clients that drop and resume at random.
//!
//! The pipeline of `bench sse` (mock Kafka → release sidecar → Redis → the `sse`
//! component on the release host), `--rate` events/s for `--minutes`, and
//! `--clients` SSE clients, each of which drops its connection after a random time
//! and resumes with `Last-Event-ID`, as `EventSource` does. Every `--sample-seconds`
//! it samples the resident memory of the host, the sidecar and redis-server. At the
//! end it checks that every client saw every event of every partition once and in
//! order across all its connections, counts the ERROR lines in the parts' logs, and
//! draws the memory graph (a PNG, `--graph`). It also says how far behind the clients
//! were when the producer stopped, how long they took to catch up, and the cores each
//! part used (the load side included: on 2 cores it competes with what it measures).

use crate::procs::{cpu_seconds, rss_bytes, until};
use crate::sse::{HostMode, Pipeline, Settings};
use anyhow::{Context, Result};
use eventsource_stream::{Event, Eventsource};
use futures::StreamExt;
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Partitions of the topic the pipeline relays.
const PARTITIONS: usize = 3;
/// How long clients have to catch up once the producer is done.
const CATCH_UP: Duration = Duration::from_secs(120);

/// Soak settings.
#[derive(clap::Args)]
pub struct Args {
    /// Length of the run, minutes.
    #[arg(long, default_value_t = 60)]
    minutes: u64,
    /// Events per second (round robin over the partitions).
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// SSE clients.
    #[arg(long, default_value_t = 500)]
    clients: usize,
    /// Longest a connection lasts before its client drops it and resumes, seconds
    /// (each lasts a uniformly random 1 s up to this).
    #[arg(long, default_value_t = 240)]
    max_connection_seconds: u64,
    /// Seconds between memory samples.
    #[arg(long, default_value_t = 60)]
    sample_seconds: u64,
    /// Minutes before memory should be flat: the Redis stream first fills up to
    /// `STREAM_MAXLEN` (100,000 entries: 8.3 minutes at 200/s).
    #[arg(long, default_value_t = 10)]
    warmup_minutes: u64,
    /// Where the memory graph goes.
    #[arg(long, default_value = "docs/soak.png")]
    graph: PathBuf,
    /// The producer's `linger.ms`. librdkafka's mock broker (in this process) keeps
    /// each partition's log as a list of message sets and walks it from the oldest
    /// for every fetch that finds data ("FIXME: Maintain an index"): with every event
    /// in a set of its own its cost grows with the log, and after ~7 minutes it took
    /// half a core here and the clients fell behind. Sets of a few events each keep
    /// it small; the soak measures completeness and memory, not latency.
    #[arg(long, default_value_t = 100)]
    producer_linger_ms: u32,
    /// Run the host with a Redis connection and a read per stream, as Spin does
    /// (`CRM_EVENTS_HOST_SHARED_REDIS=0`): the baseline for the shared host.
    #[arg(long)]
    own_reads: bool,
    /// A TrueType font for the graph's text (Debian: fonts-dejavu-core).
    #[arg(
        long,
        default_value = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    )]
    font: PathBuf,
}

/// What the producer and the clients share.
#[derive(Default)]
struct Shared {
    /// How many clients there are (at least 1).
    clients: u64,
    /// Clients whose first connection is open (production starts when all are).
    connected: AtomicUsize,
    /// Events produced, per partition.
    produced: [AtomicI64; PARTITIONS],
    /// Domain events all clients have taken so far (how far behind they are).
    taken: AtomicU64,
    /// Set when the producer is done; clients then read up to `produced` and stop.
    done: AtomicBool,
    done_at: OnceLock<Instant>,
    /// Events the clients were behind, in all, when the producer was done.
    behind_at_done: OnceLock<u64>,
    /// Milliseconds after the producer was done that the last client had everything.
    last_caught_up_ms: AtomicU64,
}

impl Shared {
    fn new(clients: usize) -> Self {
        Shared {
            clients: clients.max(1) as u64,
            ..Shared::default()
        }
    }

    fn finish(&self) {
        let _ = self.done_at.set(Instant::now());
        let _ = self.behind_at_done.set(self.behind());
        self.done.store(true, Ordering::SeqCst);
    }

    /// Events produced and not yet taken, summed over the clients.
    fn behind(&self) -> u64 {
        let owed = self.produced_total() as u64 * self.clients;
        owed.saturating_sub(self.taken.load(Ordering::SeqCst))
    }

    /// Events produced over all partitions.
    fn produced_total(&self) -> i64 {
        self.produced.iter().map(|n| n.load(Ordering::SeqCst)).sum()
    }

    /// Notes that a client has everything now.
    fn caught_up_now(&self) {
        if let Some(done) = self.done_at.get() {
            let ms = done.elapsed().as_millis() as u64;
            self.last_caught_up_ms.fetch_max(ms, Ordering::SeqCst);
        }
    }

    /// Whether the clients' time to catch up is over.
    fn out_of_time(&self) -> bool {
        self.done_at.get().is_some_and(|t| t.elapsed() > CATCH_UP)
    }
}

/// What one client saw over all its connections.
#[derive(Default, Debug)]
struct Client {
    /// Per partition, the offset it expects next.
    next: [i64; PARTITIONS],
    events: u64,
    connections: u64,
    /// Events it got twice (an offset below the expected one).
    duplicates: u64,
    /// Events it never got (skipped offsets).
    missing: u64,
    /// `gap` or `reset` events: history it asked for was gone.
    gaps: u64,
    /// Per partition: a `gap`/`reset` came and no event of the partition since (a
    /// skip there was told).
    told: [bool; PARTITIONS],
    /// Skipped events no `gap`/`reset` announced: silent loss.
    untold: u64,
    /// Connections refused or failed.
    refused: u64,
    /// Why, by status code (or "error" when the request failed).
    refused_by: BTreeMap<String, u64>,
    /// The id to resume from.
    last_id: Option<String>,
}

impl Client {
    /// Whether it has every event produced (once the producer is done).
    fn caught_up(&self, shared: &Shared) -> bool {
        shared.done.load(Ordering::SeqCst)
            && (0..PARTITIONS).all(|p| self.next[p] >= shared.produced[p].load(Ordering::SeqCst))
    }

    /// Takes one event: the resume id, and the domain event's place in its partition.
    fn take(&mut self, e: &Event) {
        if !e.id.is_empty() {
            self.last_id = Some(e.id.clone());
        }
        if e.event == "reset" || e.data.starts_with(r#"{"kind":"gap""#) {
            self.gaps += 1;
            self.told = [true; PARTITIONS];
        }
        let Some((p, offset)) = partition_offset(&e.data) else {
            return;
        };
        self.events += 1;
        if offset < self.next[p] {
            self.duplicates += 1;
            return;
        }
        let skipped = (offset - self.next[p]) as u64;
        self.missing += skipped;
        if !self.told[p] {
            self.untold += skipped;
        }
        self.told[p] = false;
        self.next[p] = offset + 1;
    }

    /// Whether it saw every event once, in order.
    fn complete(&self, shared: &Shared) -> bool {
        self.caught_up(shared) && self.duplicates == 0 && self.missing == 0 && self.gaps == 0
    }
}

/// The partition and offset of a domain event's data, found without a JSON tree
/// (the clients share the machine with what they measure).
fn partition_offset(data: &str) -> Option<(usize, i64)> {
    if !data.starts_with(r#"{"kind":"domain_event""#) {
        return None;
    }
    let number = |field: &str| -> Option<i64> {
        let at = data.find(field)? + field.len();
        let rest = &data[at..];
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    };
    let p = number(r#""partition":"#)? as usize;
    (p < PARTITIONS).then_some((p, number(r#""offset":"#)?))
}

/// One client: connections of random length, each resuming where the last ended,
/// until it has every event (or the catch-up time is over).
async fn run_client(url: String, shared: Arc<Shared>, max_hold: Duration, seed: u64) -> Client {
    let http = reqwest::Client::new();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut client = Client::default();
    while !client.caught_up(&shared) && !shared.out_of_time() {
        let hold = Duration::from_millis(rng.gen_range(1_000..=max_hold.as_millis() as u64));
        connection(&http, &url, hold, &shared, &mut client).await;
    }
    if client.caught_up(&shared) {
        shared.caught_up_now();
    }
    client
}

/// One connection, held for `hold` (or until the server ends it, or the client has
/// everything).
async fn connection(
    http: &reqwest::Client,
    url: &str,
    hold: Duration,
    shared: &Shared,
    client: &mut Client,
) {
    let mut req = http.get(url).header("accept", "text/event-stream");
    if let Some(id) = &client.last_id {
        req = req.header("last-event-id", id);
    }
    let resp = match req.send().await {
        Ok(r) if r.status() == 200 => r,
        other => {
            let why = other.map_or("error".to_string(), |r| r.status().as_u16().to_string());
            *client.refused_by.entry(why).or_default() += 1;
            client.refused += 1;
            // EventSource's retry delay, not a synchronisation.
            tokio::time::sleep(Duration::from_secs(1)).await;
            return;
        }
    };
    client.connections += 1;
    if client.connections == 1 {
        shared.connected.fetch_add(1, Ordering::SeqCst);
    }
    let mut events = resp.bytes_stream().eventsource();
    let end = Instant::now() + hold;
    while !client.caught_up(shared) && !shared.out_of_time() {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return; // Dropping the stream disconnects.
        }
        // Wake at least every second to see whether the run is over.
        match tokio::time::timeout(left.min(Duration::from_secs(1)), events.next()).await {
            Err(_) => continue,
            Ok(Some(Ok(e))) => {
                let before = client.events - client.duplicates;
                client.take(&e);
                let new = client.events - client.duplicates - before;
                shared.taken.fetch_add(new, Ordering::Relaxed);
            }
            Ok(_) => return, // The server ended the stream (or it broke).
        }
    }
}

/// Produces `rate` events/s for `length`, round robin over the partitions.
async fn produce(p: &Pipeline, shared: &Shared, rate: u64, length: Duration) {
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let end = Instant::now() + length;
    let mut i: u64 = 0;
    while Instant::now() < end {
        tick.tick().await;
        let partition = (i % PARTITIONS as u64) as usize;
        let value = format!(
            r#"{{"Type":"JobUpdated","TenantId":"tenant-{}","JobId":"job-{i}","Seq":{i}}}"#,
            i % 7
        );
        p.kafka.send(
            partition as i32,
            Some(b"JobUpdated"),
            Some(value.as_bytes()),
        );
        shared.produced[partition].fetch_add(1, Ordering::SeqCst);
        i += 1;
    }
    p.kafka.flush();
    shared.finish();
}

/// One memory sample, MiB.
#[derive(Clone, Copy)]
struct Sample {
    minute: f64,
    host: f64,
    sidecar: f64,
    redis: f64,
}

/// Reads one part's memory out of a sample.
type Part = fn(&Sample) -> f64;

/// The parts whose memory is sampled, by name.
const PARTS: [(&str, Part); 3] = [
    ("host (app)", |s| s.host),
    ("sidecar", |s| s.sidecar),
    ("redis-server", |s| s.redis),
];

/// The parts' memory now.
fn sample(started: Instant, pids: [u32; 3]) -> Result<Sample> {
    let mib = |pid: u32| -> Result<f64> { Ok(rss_bytes(pid)? as f64 / 1_048_576.0) };
    Ok(Sample {
        minute: started.elapsed().as_secs_f64() / 60.0,
        host: mib(pids[0])?,
        sidecar: mib(pids[1])?,
        redis: mib(pids[2])?,
    })
}

/// Samples memory every `every` until the producer is done.
async fn sample_memory(
    shared: Arc<Shared>,
    pids: [u32; 3],
    every: Duration,
) -> Result<Vec<Sample>> {
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        // The last sample is the last one under load.
        if shared.done.load(Ordering::SeqCst) {
            return Ok(samples);
        }
        let s = sample(started, pids)?;
        let produced = shared.produced_total();
        let behind = shared.behind() / shared.clients;
        eprintln!(
            "soak: minute {:.0}: {produced} events produced, clients {behind} behind on average; RSS host {:.1} MiB, sidecar {:.1} MiB, redis {:.1} MiB",
            s.minute, s.host, s.sidecar, s.redis
        );
        samples.push(s);
    }
}

pub async fn run(a: Args) -> Result<()> {
    let font = std::fs::read(&a.font).with_context(|| {
        format!(
            "the graph's font {} (apt-get install fonts-dejavu-core, or pass --font)",
            a.font.display()
        )
    })?;
    let logs = crm_events_harness::app::root().join("target/soak-logs");
    std::fs::create_dir_all(&logs)?;
    let mode = HostMode {
        shared_redis: !a.own_reads,
        ..HostMode::MAKE_RUN
    };
    let p = Pipeline::start(Settings {
        logs: Some(&logs),
        mode,
        producer_linger_ms: a.producer_linger_ms,
        ..Settings::new(a.clients + 100)
    })?;
    p.wait_ready().await?;
    let shared = Arc::new(Shared::new(a.clients));
    let max_hold = Duration::from_secs(a.max_connection_seconds.max(2));
    let clients: Vec<_> = (0..a.clients)
        .map(|i| {
            tokio::spawn(run_client(
                p.stream_url(),
                shared.clone(),
                max_hold,
                i as u64,
            ))
        })
        .collect();
    until(
        "every client's first connection",
        Duration::from_secs(120),
        || async { shared.connected.load(Ordering::SeqCst) == a.clients },
    )
    .await?;
    let pids = [p.host.0.id(), p.sidecar.0.id(), p.redis.pid()];
    let sampler = tokio::spawn(sample_memory(
        shared.clone(),
        pids,
        Duration::from_secs(a.sample_seconds),
    ));
    let cpu = CpuUse::start(pids)?;
    let length = Duration::from_secs(a.minutes * 60);
    produce(&p, &shared, a.rate, length).await;
    let cpu = cpu.cores()?;
    let samples = sampler.await??;
    let mut reports = Vec::with_capacity(a.clients);
    for c in clients {
        reports.push(c.await?);
    }
    report(&a, &shared, &samples, &reports, &logs)?;
    report_load(&a, &shared, cpu);
    draw(&a.graph, &samples, font)?;
    println!("\nGraph: {}", a.graph.display());
    Ok(())
}

/// CPU seconds of the host, the sidecar, redis-server and this process (the load
/// clients, the producer and the mock broker) since the production began.
struct CpuUse {
    pids: [u32; 4],
    started: Instant,
    at_start: [f64; 4],
}

impl CpuUse {
    fn start(parts: [u32; 3]) -> Result<Self> {
        let pids = [parts[0], parts[1], parts[2], std::process::id()];
        Ok(Self {
            pids,
            started: Instant::now(),
            at_start: Self::read(pids)?,
        })
    }

    fn read(pids: [u32; 4]) -> Result<[f64; 4]> {
        let mut seconds = [0.0; 4];
        for (s, pid) in seconds.iter_mut().zip(pids) {
            *s = cpu_seconds(pid)?;
        }
        Ok(seconds)
    }

    /// Cores each used on average: CPU seconds ÷ wall seconds.
    fn cores(&self) -> Result<[f64; 4]> {
        let now = Self::read(self.pids)?;
        let wall = self.started.elapsed().as_secs_f64();
        Ok(std::array::from_fn(|i| (now[i] - self.at_start[i]) / wall))
    }
}

/// How far behind the clients were when the producer stopped, how long they took
/// to catch up, and the cores each part used while events were produced.
fn report_load(a: &Args, shared: &Shared, cores: [f64; 4]) {
    let behind = shared.behind_at_done.get().copied().unwrap_or(0);
    let per_client = behind as f64 / shared.clients as f64;
    let catch_up = shared.last_caught_up_ms.load(Ordering::SeqCst) as f64 / 1000.0;
    println!(
        "\nHost: {}. When the producer stopped the clients were {behind} events behind in all \
         ({per_client:.1} each on average, {:.2} s of production); the last client had everything \
         {catch_up:.1} s later (the catch-up limit is {} s).",
        if a.own_reads {
            "a Redis connection and read per stream (own reads)"
        } else {
            "shared Redis"
        },
        per_client / a.rate.max(1) as f64,
        CATCH_UP.as_secs()
    );
    println!(
        "Cores used while producing: host {:.2}, sidecar {:.2}, redis-server {:.2}, this process (load clients, producer, mock broker) {:.2}; total {:.2}.",
        cores[0],
        cores[1],
        cores[2],
        cores[3],
        cores.iter().sum::<f64>()
    );
}

/// Prints the results as the Markdown docs/benchmarks.md quotes.
fn report(
    a: &Args,
    shared: &Shared,
    samples: &[Sample],
    clients: &[Client],
    logs: &Path,
) -> Result<()> {
    let produced = shared.produced_total();
    let complete = clients.iter().filter(|c| c.complete(shared)).count();
    let sum = |f: fn(&Client) -> u64| clients.iter().map(f).sum::<u64>();
    println!(
        "## Soak: {} min at {}/s, {} clients dropping and resuming at random (connections of 1–{} s)",
        a.minutes, a.rate, a.clients, a.max_connection_seconds
    );
    println!("| events produced | clients complete | deliveries | connections | duplicates | missing | of them untold | gap/reset | refused |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    println!(
        "| {produced} | {complete}/{} | {} | {} | {} | {} | {} | {} | {} |",
        clients.len(),
        sum(|c| c.events),
        sum(|c| c.connections),
        sum(|c| c.duplicates),
        sum(|c| c.missing),
        sum(|c| c.untold),
        sum(|c| c.gaps),
        sum(|c| c.refused),
    );
    let mut refused_by = BTreeMap::<&str, u64>::new();
    for (why, n) in clients.iter().flat_map(|c| &c.refused_by) {
        *refused_by.entry(why).or_default() += n;
    }
    println!("\nRefused connections by status: {refused_by:?}");
    println!(
        "\n| RSS, MiB | start | after {} min warm-up | end | max | spread after warm-up |",
        a.warmup_minutes
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    let settled: Vec<Sample> = samples
        .iter()
        .copied()
        .filter(|s| s.minute >= a.warmup_minutes as f64 - 0.01)
        .collect();
    for (name, f) in PARTS {
        print_memory_row(name, samples, &settled, f);
    }
    let (errors, first) = error_lines(logs)?;
    println!("\nERROR lines in the host's and the sidecar's logs: {errors}");
    for line in first {
        println!("    {line}");
    }
    Ok(())
}

/// One part's memory row; a cell with no sample (a run shorter than the warm-up) is "–".
fn print_memory_row(name: &str, all: &[Sample], settled: &[Sample], f: Part) {
    let cell = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.1}"));
    let max = settled.iter().map(f).reduce(f64::max);
    let min = settled.iter().map(f).reduce(f64::min);
    let spread = max.zip(min).map(|(max, min)| (max - min) / min * 100.0);
    println!(
        "| {name} | {} | {} | {} | {} | {} |",
        cell(all.first().map(f)),
        cell(settled.first().map(f)),
        cell(all.last().map(f)),
        cell(max),
        spread.map_or("–".to_string(), |s| format!("{s:.1}%")),
    );
}

/// The number of ERROR lines in the logs of `dir`, and the first few.
fn error_lines(dir: &Path) -> Result<(usize, Vec<String>)> {
    let mut count = 0;
    let mut first = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let text = std::fs::read_to_string(entry?.path())?;
        for line in text.lines().filter(|l| l.contains("ERROR")) {
            count += 1;
            if first.len() < 5 {
                first.push(line.to_string());
            }
        }
    }
    Ok((count, first))
}

/// Draws RSS over time, one line per part.
fn draw(path: &Path, samples: &[Sample], font: Vec<u8>) -> Result<()> {
    use plotters::prelude::*;
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| anyhow::anyhow!("the font is not a TrueType font"))?;
    let minutes = samples.last().map_or(1.0, |s| s.minute.max(1.0));
    let top = samples
        .iter()
        .map(|s| s.host.max(s.sidecar).max(s.redis))
        .fold(0.0, f64::max)
        * 1.2;
    let root = BitMapBackend::new(path, (1000, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("crm-events soak: resident memory", ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..minutes, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("minutes")
        .y_desc("RSS, MiB")
        .draw()?;
    for ((name, f), color) in PARTS.into_iter().zip([BLUE, RED, GREEN]) {
        chart
            .draw_series(LineSeries::new(
                samples.iter().map(|s| (s.minute, f(s))),
                color.stroke_width(2),
            ))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, data: &str) -> Event {
        Event {
            event: "message".into(),
            data: data.into(),
            id: id.into(),
            retry: None,
        }
    }

    fn domain(partition: usize, offset: i64) -> String {
        format!(
            r#"{{"kind":"domain_event","topic":"t","partition":{partition},"offset":{offset},"value":{{}}}}"#
        )
    }

    #[test]
    fn a_client_counts_what_it_missed_and_what_it_got_twice() {
        let mut c = Client::default();
        for (i, (p, o)) in [(0, 0), (1, 0), (0, 1), (0, 3), (0, 3), (1, 1)]
            .iter()
            .enumerate()
        {
            c.take(&event(&format!("{i}-0"), &domain(*p, *o)));
        }
        assert_eq!((c.events, c.missing, c.duplicates), (6, 1, 1));
        assert_eq!(c.untold, 1, "no gap announced the skip");
        assert_eq!(c.next, [4, 2, 0]);
        assert_eq!(c.last_id.as_deref(), Some("5-0"));
        c.take(&event("", r#"{"kind":"gap","requested":"1-0"}"#));
        assert_eq!(c.gaps, 1);
        assert_eq!(
            c.last_id.as_deref(),
            Some("5-0"),
            "an id-less event keeps the id"
        );
        // After the gap, skips in every partition are told ones.
        c.take(&event("6-0", &domain(0, 9)));
        c.take(&event("7-0", &domain(1, 5)));
        assert_eq!((c.missing, c.untold), (1 + 5 + 3, 1));
        c.take(&event("8-0", &domain(0, 11)));
        assert_eq!(c.untold, 2, "the next skip is untold again");
    }

    #[test]
    fn only_domain_events_have_a_place() {
        assert_eq!(partition_offset(&domain(2, 41)), Some((2, 41)));
        assert_eq!(
            partition_offset(r#"{"kind":"connected","partition":1}"#),
            None
        );
        assert_eq!(partition_offset(&domain(7, 1)), None);
    }
}
