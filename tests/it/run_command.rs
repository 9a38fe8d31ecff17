//! `make run`'s script in demo mode: it starts Redis, a throwaway PostgreSQL, the
//! sidecar with its embedded broker, the outbox publisher, the demo CRM writing into
//! the outbox and the app; events reach an SSE client through the whole chain;
//! the README's own `curl` commands (watch the stream, publish an event) work as
//! written against it; Ctrl-C stops everything it started.

mod common;

use crm_events_harness::redis_server::free_port;
use crm_events_harness::signal;
use crm_events_harness::sse_client::SseClient;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Kills run.sh's whole process group when the test ends early, so a failure
/// leaves no redis-server, postgres or sidecar behind.
struct Group(u32);

impl Drop for Group {
    fn drop(&mut self) {
        signal::to_group(self.0, "KILL");
    }
}

#[tokio::test]
async fn run_script_serves_demo_events_and_stops_cleanly() {
    let ports: Vec<u16> = (0..5).map(|_| free_port().unwrap()).collect();
    let (port, sidecar_port, redis_port, pg_port, publisher_port) =
        (ports[0], ports[1], ports[2], ports[3], ports[4]);
    let auth_dir = std::env::temp_dir().join(format!("crm-events-run-auth-{port}"));
    let mut child = Command::new("bash")
        .arg(common::root().join("scripts/run.sh"))
        .env("PORT", port.to_string())
        .env("SIDECAR_PORT", sidecar_port.to_string())
        .env("REDIS_PORT", redis_port.to_string())
        .env("PG_PORT", pg_port.to_string())
        .env("PUBLISHER_PORT", publisher_port.to_string())
        .env("DEMO_RATE", "50")
        // The tests' build; `make run` starts the release one.
        .env("BIN", "target/debug")
        .env("AUTH_DIR", &auth_dir)
        .env_remove("KAFKA_BROKERS")
        .env_remove("REDIS_URL")
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("run.sh");
    let _group = Group(child.id());

    let ready = format!("http://127.0.0.1:{port}/readyz");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(r) = reqwest::get(&ready).await {
            if r.status().is_success() {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the app never became ready");
        assert!(child.try_wait().unwrap().is_none(), "run.sh exited early");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Access control is on: without the printed token the stream is refused, with
    // it the demo events flow.
    let url = format!("http://127.0.0.1:{port}/crm-events");
    let refused = reqwest::get(&url).await.unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    let token = std::fs::read_to_string(auth_dir.join("token")).expect("run.sh wrote a token");
    let bearer = format!("Bearer {}", token.trim());
    let mut c = SseClient::connect(&url, &[("authorization", &bearer)]).await;
    let events = c.domain_events(5, Duration::from_secs(30)).await;
    let tenants = crm_events_contracts::demo::TENANTS;
    for (_, e) in &events {
        let tenant = e["value"]["TenantId"].as_str().unwrap();
        assert!(tenants.iter().any(|(id, _)| *id == tenant), "{e}");
        assert!(e["value"]["Type"].is_string());
        // They came through the outbox: each carries its row id.
        assert!(
            e["headers"]["outbox-id"]
                .as_str()
                .unwrap()
                .parse::<i64>()
                .is_ok(),
            "{e}"
        );
    }
    drop(c);
    follow_the_readme(port, &auth_dir);

    // Ctrl-C: the script stops what it started and exits.
    assert!(signal::to_process(child.id(), "INT"));
    let interrupted = Instant::now();
    let deadline = interrupted + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "run.sh did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Read by scripts/stress-stop.sh, which runs this test under load.
    eprintln!("run.sh stopped in {} ms", interrupted.elapsed().as_millis());
    for p in ports {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", p)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "port {p} still served after the stop"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let _ = std::fs::remove_dir_all(&auth_dir);
}

/// The README's commands, as a new user types them after `make run` (only the port
/// and the token's directory differ): each stream command streams (`curl -N` is cut
/// after 3 s), and the publish command is accepted once, replayed the second time,
/// and its event is on the stream.
fn follow_the_readme(port: u16, auth_dir: &std::path::Path) {
    let readme = std::fs::read_to_string(common::root().join("README.md")).unwrap();
    let localize = |cmd: &str| {
        cmd.replace("127.0.0.1:3000", &format!("127.0.0.1:{port}"))
            .replace("target/run-auth", &auth_dir.display().to_string())
            .replace("curl -N ", "curl -sS -N --max-time 3 ")
    };
    let watch = commands(&sh_block(&readme, "## Watch the stream"));
    let publish = commands(&sh_block(&readme, "## Publish an event"));
    assert!(
        watch.len() >= 3 && watch[0].starts_with("AUTH="),
        "{watch:?}"
    );
    assert_eq!(publish.len(), 1, "{publish:?}");
    let auth = localize(&watch[0]);
    for cmd in &watch[1..] {
        let out = shell(&auth, &localize(cmd));
        assert!(out.contains(r#""kind":"connected""#), "{cmd}: {out}");
    }
    let tail = shell(&auth, &localize(&watch[2]));
    assert!(
        tail.contains(r#""kind":"domain_event""#),
        "{}: {tail}",
        watch[2]
    );
    let first = shell(&auth, &localize(&publish[0]));
    assert!(
        first.contains(" 202 ") && first.contains(r#""status":"accepted""#),
        "{first}"
    );
    let again = shell(&auth, &localize(&publish[0]));
    assert!(
        again.to_lowercase().contains("idempotent-replayed: true"),
        "{again}"
    );
    let acme = format!(
        "curl -sS -N --max-time 5 -H \"$AUTH\" 'http://127.0.0.1:{port}/crm-events?tail=200&type=JobCreated&tenant={}'",
        crm_events_contracts::demo::TENANTS[0].0
    );
    let stream = shell(&auth, &acme);
    assert!(
        stream.contains("job-4711"),
        "the published event is on the stream: {stream}"
    );
}

/// The first ```sh block after `heading`.
fn sh_block(readme: &str, heading: &str) -> String {
    let after = readme
        .split(heading)
        .nth(1)
        .unwrap_or_else(|| panic!("README has {heading}"));
    let block = after.split("```sh\n").nth(1).expect("an sh block");
    block.split("```").next().unwrap().to_string()
}

/// The commands of a block: `\\`-continued lines and quoted newlines joined, output
/// lines left out.
fn commands(block: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut open = false;
    for line in block.lines() {
        if open {
            let last = out.last_mut().unwrap();
            last.push('\n');
            last.push_str(line);
        } else if line.starts_with("curl ") || line.starts_with("AUTH=") {
            out.push(line.to_string());
        } else {
            continue;
        }
        let last = out.last().unwrap();
        open = last.ends_with('\\') || last.matches('\'').count() % 2 == 1;
    }
    out
}

/// Runs `setup` then `cmd` in bash from the repository's root; its output (a cut
/// stream's timeout is not a failure).
fn shell(setup: &str, cmd: &str) -> String {
    let out = Command::new("bash")
        .args(["-c", &format!("{setup}\n{cmd}")])
        .current_dir(common::root())
        .output()
        .expect("bash");
    let code = out.status.code().unwrap_or(-1);
    assert!(
        code == 0 || code == 28,
        "{cmd}: exit {code}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
