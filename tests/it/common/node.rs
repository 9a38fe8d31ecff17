//! Node.js scripts of `tests/browser` (playwright-core, the API validators, the
//! TypeScript client) as children of a test: each prints a step, the test answers
//! with one line, and `OK` or `FAIL <why>` ends the conversation.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The directory of the scripts and their npm packages.
pub fn browser_dir() -> PathBuf {
    super::root().join("tests/browser")
}

/// Runs `tests/browser/<script>` with `env`; `answer` replies to each step it prints
/// (`None`: a line to log, not a step). Panics with the script's reason on `FAIL`.
pub fn converse(
    script: &str,
    env: &[(&str, String)],
    mut answer: impl FnMut(&str) -> Option<String>,
) {
    let dir = browser_dir();
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "the npm packages of tests/browser are not installed: npm ci --prefix tests/browser (make test does)"
    );
    let mut node = Command::new(node_binary(&dir));
    node.arg(dir.join(script))
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    for (k, v) in env {
        node.env(k, v);
    }
    let mut node = node.spawn().expect("node");
    let mut to_node = node.stdin.take().unwrap();
    let from_node = BufReader::new(node.stdout.take().unwrap());
    let mut verdict = None;
    for line in from_node.lines() {
        let line = line.unwrap();
        if line == "OK" || line.starts_with("FAIL") {
            verdict = Some(line);
            break;
        }
        match answer(&line) {
            Some(reply) => writeln!(to_node, "{reply}").unwrap(),
            None => eprintln!("{script}: {line}"),
        }
    }
    let _ = node.wait();
    match verdict.as_deref() {
        Some("OK") => {}
        Some(fail) => panic!("{script}: {fail}"),
        None => panic!("{script} ended without a verdict"),
    }
}

/// Node.js for playwright-core (20 or newer): the one `scripts/setup.sh` installs
/// into `tests/browser` when the machine's is older, else the machine's.
pub fn node_binary(browser_dir: &Path) -> PathBuf {
    let local = browser_dir.join("node_modules/.bin/node");
    let node = if local.exists() { local } else { "node".into() };
    let version = Command::new(&node).arg("--version").output().expect(
        "Node.js is required for the browser and API tests (scripts/setup.sh --test installs it)",
    );
    let version = String::from_utf8_lossy(&version.stdout);
    let major: u32 = version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(
        major >= 20,
        "{} is Node.js {version}; the scripts need 20 or newer (scripts/setup.sh --test installs one)",
        node.display()
    );
    node
}
