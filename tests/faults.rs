//! A guest that traps is torn down with a clear log line, its connections
//! are closed, and the host keeps running. (Restarts, limits and hostile
//! guests beside others are the sandbox issue's tests.)

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::support::{Host, alone, bounded};

/// Sends `command` on a fresh connection and returns how long the host took
/// to close it (read returns end-of-stream or a reset).
fn trip(host: &Host, command: &[u8]) -> Duration {
    let mut conn = host.connect();
    conn.write_all(b"still alive?\n").unwrap();
    let mut back = [0u8; 13];
    conn.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"still alive?\n");
    let start = Instant::now();
    conn.write_all(command).unwrap();
    let mut rest = Vec::new();
    let _ = conn.read_to_end(&mut rest);
    assert!(rest.is_empty(), "no reply expected after {command:?}, got {rest:?}");
    start.elapsed()
}

#[test]
fn a_panic_is_logged_with_callback_trap_and_wasm_backtrace_and_the_host_lives_on() {
    bounded(Duration::from_secs(60), || {
        let mut host = Host::start("faulty");
        let mut bystander = host.connect();
        trip(&host, b"panic\n");
        let line = host.wait_for_log("trapped in on-data", Duration::from_secs(10));
        assert!(line.contains("guest `faulty`"), "{line}");
        // The backtrace's last frame is the export that was called.
        host.wait_for_log("callbacks@0.1.0#on-data", Duration::from_secs(10));
        let logs = host.logs();
        assert!(logs.contains("unreachable"), "the trap is named:\n{logs}");
        assert!(logs.contains("wasm backtrace"), "with a wasm backtrace:\n{logs}");
        assert!(logs.contains("asked to panic"), "the guest's panic message reaches the log:\n{logs}");
        // The guest's other connections are closed too...
        let mut buf = [0u8; 1];
        assert_eq!(bystander.read(&mut buf).unwrap_or(0), 0, "bystander connection closed");
        // ...and the host process is still serving its loop.
        host.assert_running();
    });
}

#[test]
fn a_runaway_callback_is_stopped_at_its_deadline() {
    let _alone = alone();
    bounded(Duration::from_secs(60), || {
        let mut host = Host::command("faulty").args(["--callback-deadline-ms", "100"]).spawn();
        let took = trip(&host, b"spin\n");
        let line = host.wait_for_log("trapped in on-data", Duration::from_secs(10));
        assert!(line.contains("deadline exceeded"), "{line}");
        assert!(took >= Duration::from_millis(100), "stopped after {took:?}, before its deadline");
        assert!(took < Duration::from_millis(1_000), "stopped only after {took:?}");
        host.assert_running();
    });
}

#[test]
fn a_memory_bomb_hits_the_cap_and_is_stopped() {
    bounded(Duration::from_secs(60), || {
        // A generous deadline, so it is the memory cap that stops it.
        let mut host = Host::command("faulty").args(["--callback-deadline-ms", "5000"]).spawn();
        trip(&host, b"grow\n");
        let line = host.wait_for_log("trapped in on-data", Duration::from_secs(10));
        assert!(line.contains("guest `faulty`"), "{line}");
        assert!(line.contains("memory limit reached"), "{line}");
        host.assert_running();
    });
}

#[test]
fn guest_stdout_goes_to_the_log_without_starting_threads() {
    bounded(Duration::from_secs(60), || {
        let host = Host::start("faulty");
        let before = host.threads();
        let mut conn = host.connect();
        conn.write_all(b"print hello from inside\nping\n").unwrap();
        let mut back = [0u8; 5];
        conn.read_exact(&mut back).unwrap();
        let line = host.wait_for_log("hello from inside", Duration::from_secs(10));
        assert!(line.contains("faulty"), "tagged with the guest's name: {line}");
        let after = host.threads();
        assert_eq!(after.threads.len(), before.threads.len(), "writing to stdout started a thread");
    });
}
