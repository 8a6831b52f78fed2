//! `host inspect` against a real host's admin listener: the table shows
//! what the host did (connections accepted and open), `--json` passes the
//! document through, and an address nobody listens on is one line of error.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{HOST, Host, Output, bounded, describe, run_bounded};

/// How long `host inspect` may take: two fetches 200 ms apart, each bounded
/// by its own 3 s timeouts.
const INSPECT_LIMIT: Duration = Duration::from_secs(30);

/// Runs `host inspect ARGS` to completion (bounded).
fn inspect(args: &[&str]) -> Output {
    let mut cmd = Command::new(HOST);
    cmd.arg("inspect").args(args).env_remove("RUST_LOG").env("NO_COLOR", "1");
    run_bounded(cmd, INSPECT_LIMIT).expect("running host inspect")
}

/// Runs `host inspect ARGS` and returns its stdout; panics unless it
/// succeeded.
fn inspect_ok(args: &[&str]) -> String {
    let out = inspect(args);
    assert!(out.status.success(), "host inspect {args:?} ended with {}; stderr:\n{}", describe(out.status), out.stderr);
    out.stdout
}

/// A host running echo with an admin listener; returns it and the admin
/// address from its `admin listening on http://ADDR/` line.
fn host_with_admin() -> (Host, SocketAddr) {
    let host = Host::command("echo").args(["--admin", "127.0.0.1:0"]).spawn();
    let addr = host.admin_addr();
    (host, addr)
}

/// Sends `count` lines on `stream` and reads each back.
fn echo_lines(stream: &mut TcpStream, tag: usize, count: usize) {
    for i in 0..count {
        let message = format!("connection {tag} message {i}\n");
        stream.write_all(message.as_bytes()).unwrap();
        let mut back = vec![0; message.len()];
        stream.read_exact(&mut back).unwrap();
        assert_eq!(back, message.as_bytes(), "connection {tag} got something else back");
    }
}

/// The `--json` document, parsed.
fn status(admin: &str) -> serde_json::Value {
    let text = inspect_ok(&["--admin", admin, "--json"]);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("--json printed something that is not JSON ({e}):\n{text}"))
}

/// The cell of `column` in the table row whose first cell is `name`. Cells
/// may hold a space (`3.4 MiB`) and are two spaces apart at least; numbers
/// are aligned right, so a cell ends where its column's heading ends.
fn cell(table: &str, name: &str, column: &str) -> String {
    let header = table.lines().find(|l| l.starts_with("NAME ")).unwrap_or_else(|| panic!("no header in:\n{table}"));
    let at = header.find(&format!(" {column}")).unwrap_or_else(|| panic!("no column {column} in {header:?}")) + 1;
    let end = header[..at].chars().count() + column.chars().count();
    let row: Vec<char> = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row for {name} in:\n{table}"))
        .chars()
        .collect();
    assert!(
        row.len() >= end && row.get(end).is_none_or(|c| *c == ' ') && row[end - 1] != ' ',
        "the {column} cell of {name} does not end under its heading; the table is not aligned:\n{table}"
    );
    let before: String = row[..end].iter().collect();
    before.rsplit("  ").next().unwrap_or_default().trim().to_string()
}

#[test]
fn the_table_counts_the_connections_of_the_echo_guest() {
    bounded(Duration::from_secs(120), || {
        let (host, admin) = host_with_admin();
        let admin = admin.to_string();
        let mut conns: Vec<TcpStream> = (0..3).map(|_| host.connect()).collect();
        for (tag, stream) in conns.iter_mut().enumerate() {
            echo_lines(stream, tag, 5);
        }
        // Close one; wait until the host has seen it go (the document, not a
        // sleep, says when).
        drop(conns.remove(0));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let doc = status(&admin);
            let echo = doc["guests"].as_array().and_then(|g| g.iter().find(|g| g["name"] == "echo")).cloned();
            let open = echo.as_ref().and_then(|g| g["connections"]["open"].as_u64());
            if open == Some(2) {
                break;
            }
            assert!(Instant::now() < deadline, "the host still counts {open:?} open connections, expected 2:\n{doc:#}");
            thread::sleep(Duration::from_millis(20));
        }

        let table = inspect_ok(&["--admin", &admin, "--interval-ms", "200"]);
        let first = table.lines().next().unwrap_or_default();
        assert!(
            first.contains(&format!("pid {}", host.pid())) && first.contains("1 worker"),
            "the first line names neither the pid nor the workers:\n{table}"
        );
        assert!(
            table.lines().any(|l| l.starts_with("loop 0:") && l.contains("wakeups/s") && l.contains("busy")),
            "no per-loop line with rates:\n{table}"
        );
        let header: Vec<&str> =
            table.lines().find(|l| l.starts_with("NAME")).map(|l| l.split_whitespace().collect()).unwrap_or_default();
        assert_eq!(
            header,
            [
                "NAME", "VERSION", "UP", "OPEN", "ACCEPTED", "REFUSED", "EVENTS/S", "IN/S", "OUT/S", "P50", "P99",
                "TRAPS", "RESTARTS", "RELOADS", "MEM", "HIGH"
            ],
            "the table's header:\n{table}"
        );
        assert_eq!(cell(&table, "echo", "ACCEPTED"), "3", "accepted connections:\n{table}");
        assert_eq!(cell(&table, "echo", "OPEN"), "2", "open connections:\n{table}");
        assert_eq!(cell(&table, "echo", "UP"), "yes", "the guest is up:\n{table}");
        assert_eq!(cell(&table, "echo", "TRAPS"), "0", "traps:\n{table}");
        // No bytes moved during the 200 ms between the two samples.
        assert_eq!(cell(&table, "echo", "IN/S"), "0 B", "bytes in per second:\n{table}");
        let mem = cell(&table, "echo", "MEM");
        assert!(mem.ends_with("KiB") || mem.ends_with("MiB"), "guest memory {mem:?} in humane units:\n{table}");
        drop(conns);
        host.assert_no_errors();
    });
}

#[test]
fn an_address_nobody_listens_on_is_one_line_naming_it() {
    bounded(Duration::from_secs(60), || {
        // A port that was free a moment ago and is closed now.
        let addr = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().to_string()
        };
        let out = inspect(&["--admin", &addr]);
        assert!(!out.status.success(), "host inspect succeeded against {addr}:\n{}", out.stdout);
        assert_eq!(out.status.code(), Some(1), "host inspect ended with {}", describe(out.status));
        let lines = out.stderr_lines();
        assert_eq!(lines.len(), 1, "expected exactly one stderr line, got:\n{}", out.stderr);
        assert!(lines[0].starts_with("error: "), "{:?}", lines[0]);
        assert!(lines[0].contains(&addr), "{:?} does not name {addr}", lines[0]);
        assert!(lines[0].contains("--admin"), "{:?} does not say how to start the listener", lines[0]);
        assert!(out.stdout.is_empty(), "nothing on stdout expected, got {:?}", out.stdout);
    });
}

#[test]
fn json_prints_the_status_document() {
    bounded(Duration::from_secs(120), || {
        let (host, admin) = host_with_admin();
        let mut stream = host.connect();
        echo_lines(&mut stream, 0, 1);
        let doc = status(&admin.to_string());
        assert_eq!(doc["schema"], 1, "schema:\n{doc:#}");
        assert_eq!(doc["pid"].as_u64(), Some(u64::from(host.pid())), "pid:\n{doc:#}");
        let names: Vec<&str> =
            doc["guests"].as_array().map(|g| g.iter().filter_map(|g| g["name"].as_str()).collect()).unwrap_or_default();
        assert_eq!(names, ["echo"], "guests:\n{doc:#}");
        host.assert_no_errors();
    });
}
