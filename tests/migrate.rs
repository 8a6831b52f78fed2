//! Hot reload in migrate mode: the old version hands its state, its
//! connections and its timers to the new one; the peers notice nothing.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use crate::support::{self, Host, Signal, bounded};

/// A copy of the guest's module at a path the test can replace.
fn deployed(guest: &str, name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("migrate-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("counter.wasm");
    std::fs::copy(support::guest(guest), &path).unwrap();
    path
}

fn next_count(reader: &mut BufReader<TcpStream>) -> u64 {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    line.trim().strip_prefix("count ").unwrap_or_else(|| panic!("not a count: {line:?}")).parse().unwrap()
}

#[test]
fn a_counter_keeps_counting_across_reloads_and_its_connections_never_notice() {
    bounded(Duration::from_secs(120), || {
        let module = deployed("counter", "keeps-counting");
        let host = Host::command_for(&module).args(["--reload-mode", "migrate"]).spawn();
        let conn = host.connect();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut writer = conn;
        let mut expected = 0;
        for reload in 1..=5 {
            for _ in 0..10 {
                writer.write_all(b"tick\n").unwrap();
                expected += 1;
                assert_eq!(next_count(&mut reader), expected);
            }
            // Half a line before the reload, the rest after: it counts once.
            writer.write_all(b"ti").unwrap();
            host.signal(Signal::HUP);
            let lines = host.wait_for_log_count("connections migrated", reload, Duration::from_secs(60));
            assert!(lines[reload - 1].contains("1 connections migrated"), "{}", lines[reload - 1]);
            writer.write_all(b"ck\n").unwrap();
            expected += 1;
            assert_eq!(next_count(&mut reader), expected, "after reload {reload}");
        }
        assert_eq!(host.count_log("drain"), 0, "migrate mode never drains");
        host.assert_no_errors();
    });
}

#[test]
fn a_guest_that_cannot_migrate_is_drained_instead() {
    bounded(Duration::from_secs(120), || {
        // echo has no snapshot: the reload falls back to drain mode.
        let module = deployed("echo", "falls-back");
        let host = Host::command_for(&module).args(["--reload-mode", "migrate"]).spawn();
        let mut old = host.connect();
        host.signal(Signal::HUP);
        let line = host.wait_for_log("reloaded", Duration::from_secs(60));
        assert!(line.contains("1 connections draining"), "{line}");
        old.write_all(b"still here\n").unwrap();
        let mut back = [0u8; 11];
        std::io::Read::read_exact(&mut old, &mut back).unwrap();
        assert_eq!(&back, b"still here\n");
        drop(old);
        host.wait_for_log("drained", Duration::from_secs(30));
    });
}
