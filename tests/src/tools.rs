//! External tools some tests need. A tool the suite depends on (promtool: CI installs
//! it) fails the test loudly when missing; a tool that is genuinely optional here
//! (the Docker compose plugin: no Docker engine on these machines) is reported as
//! skipped, by the test's name, on standard error and in
//! `target/skipped-checks.txt`, which `make test` prints at the end.

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// `promtool`: the one `scripts/setup.sh` unpacks into `target/tools/bin`, else the
/// one on `PATH`.
fn promtool_path() -> std::path::PathBuf {
    let unpacked = crate::app::root().join("target/tools/bin/promtool");
    if unpacked.exists() {
        unpacked
    } else {
        "promtool".into()
    }
}

/// Runs `promtool` with `args` and `stdin`; panics when it is missing or disagrees.
pub fn promtool(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(promtool_path())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is required (`scripts/setup.sh` unpacks it into target/tools/bin; `make test` runs it)");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool output");
    assert!(
        out.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Whether `docker compose` is usable here.
pub fn docker_compose_available() -> bool {
    Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Records that `check` was skipped because `reason`: on stderr and in
/// `target/skipped-checks.txt`.
pub fn report_skipped(check: &str, reason: &str) {
    let line = format!("SKIPPED {check}: {reason}\n");
    eprint!("{line}");
    let path = crate::app::root().join("target/skipped-checks.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}
