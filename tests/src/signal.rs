//! Signals to the processes the tests start (`kill(1)`): one way to stop, pause or
//! interrupt a process or a whole process group, for every test.

use std::process::Command;

/// Sends `signal` (`"TERM"`, `"INT"`, `"STOP"`, …) to process `pid`; whether it
/// was delivered.
pub fn to_process(pid: u32, signal: &str) -> bool {
    send(signal, &pid.to_string())
}

/// Sends `signal` to every process of the group `pgid`; whether it was delivered.
pub fn to_group(pgid: u32, signal: &str) -> bool {
    send(signal, &format!("-{pgid}"))
}

fn send(signal: &str, target: &str) -> bool {
    Command::new("kill")
        .args([&format!("-{signal}"), "--", target])
        .status()
        .is_ok_and(|s| s.success())
}
