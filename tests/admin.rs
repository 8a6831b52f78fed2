//! The admin listener (`--admin`): metrics move exactly as a scripted
//! workload says, a trap is counted by kind, `/status.json` fits its schema
//! (docs/status.schema.json), `/metrics` is Prometheus text, the listener is
//! loopback-only unless told otherwise, and guest log lines carry the
//! guest's name and version. And it holds against its clients: a `Host`
//! that could be DNS rebinding is refused, slow clients cannot keep a
//! scraper waiting, a flood is closed beyond the cap, and a client dripping
//! its request is cut at the deadline.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::support::{Host, alone, bounded, run_bounded, workspace_root};
use serde_json::Value;
use wasmloop::admin::{MAX_CLIENTS, REQUEST_DEADLINE};

/// GET `path`: (status, content type, body).
fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    request(addr, "GET", path)
}

fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    request_to(addr, &addr.to_string(), method, path)
}

/// A request with `host` as its `Host` header.
fn request_to(addr: SocketAddr, host: &str, method: &str, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to the admin listener");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read the admin answer to its end");
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no head in {raw:?}"));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("status in {head:?}"));
    let content_type = head.lines().find_map(|l| l.strip_prefix("Content-Type: ")).unwrap_or_default().to_string();
    (status, content_type, body.to_string())
}

fn status(addr: SocketAddr) -> Value {
    let (code, content_type, body) = get(addr, "/status.json");
    assert_eq!(code, 200, "{body}");
    assert_eq!(content_type, "application/json");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/status.json is not JSON ({e}): {body}"))
}

/// Polls `/status.json` until `done` holds for the first guest; panics
/// with the last document after `timeout`.
fn wait_for(addr: SocketAddr, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let doc = status(addr);
        if done(&doc["guests"][0]) {
            return doc;
        }
        assert!(Instant::now() < deadline, "not reached within {timeout:?}: {doc:#}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The value of the Prometheus sample `series` (name and labels as written).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn metrics_count_exactly_what_a_scripted_workload_did() {
    bounded(Duration::from_secs(120), || {
        let host = Host::command("echo").args(["--admin", "127.0.0.1:0"]).spawn();
        let admin = host.admin_addr();
        const CONNECTIONS: u64 = 7;
        const MESSAGES: u64 = 5;
        const SIZE: usize = 100;
        let before = status(admin);
        let before_loop = &before["loops"][0];
        for c in 0..CONNECTIONS {
            let mut conn = host.connect();
            for m in 0..MESSAGES {
                let message = vec![b'a' + (c * MESSAGES + m) as u8 % 26; SIZE];
                conn.write_all(&message).unwrap();
                let mut back = vec![0; SIZE];
                conn.read_exact(&mut back).unwrap();
                assert_eq!(back, message);
            }
        }
        // Closed by us; the host has counted once it has seen every close.
        let doc = wait_for(admin, Duration::from_secs(10), |g| {
            g["connections"]["open"] == 0 && g["events"]["on-close"] == CONNECTIONS
        });
        let g = &doc["guests"][0];
        assert_eq!(g["name"], "echo");
        assert_eq!(g["up"], true);
        assert_eq!(g["connections"]["accepted"], CONNECTIONS);
        assert_eq!(g["connections"]["refused"], 0);
        let bytes = CONNECTIONS * MESSAGES * SIZE as u64;
        assert_eq!(g["bytes"]["in"], bytes, "{g:#}");
        assert_eq!(g["bytes"]["out"], bytes, "{g:#}");
        let events = &g["events"];
        assert_eq!(events["init"], 1);
        assert_eq!(events["on-accept"], CONNECTIONS);
        assert_eq!(events["on-eof"], CONNECTIONS);
        // Each message was echoed before the next was sent: at least one
        // `on-data` each (loopback delivers 100 bytes whole, but TCP may split).
        let on_data = events["on-data"].as_u64().unwrap();
        assert!((CONNECTIONS * MESSAGES..=bytes).contains(&on_data), "on-data {on_data}");
        // The latency histogram saw every callback.
        let calls: u64 = events.as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
        assert_eq!(g["latency"]["count"], calls);
        let latency = &g["latency"];
        let (p50, p99, max) =
            (latency["p50"].as_f64().unwrap(), latency["p99"].as_f64().unwrap(), latency["max"].as_f64().unwrap());
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max && max < 1.0, "{latency:#}");
        assert!(g["traps"].as_object().unwrap().values().all(|v| v == 0), "{g:#}");
        let memory = &g["memory"];
        assert!(memory["bytes"].as_u64().unwrap() >= 64 * 1024, "a guest has at least one wasm page: {memory:#}");
        assert!(memory["high_water_bytes"].as_u64() >= memory["bytes"].as_u64());
        assert_eq!(memory["limit_bytes"], 64 << 20);

        // The loop woke for each accept and message at least (events may
        // share a wakeup), and its time adds up.
        let l = &doc["loops"][0];
        let woke = l["wakeups"].as_u64().unwrap() - before_loop["wakeups"].as_u64().unwrap();
        let events_seen = l["events"].as_u64().unwrap() - before_loop["events"].as_u64().unwrap();
        assert!(events_seen >= CONNECTIONS * (MESSAGES + 1), "{l:#}");
        assert!(woke >= CONNECTIONS && woke <= events_seen, "{woke} wakeups for {events_seen} events");
        assert_eq!(l["events_per_wakeup"]["sum"].as_f64().unwrap() as u64, l["events"].as_u64().unwrap());
        let (busy, waiting, guest) = (
            l["busy_seconds"].as_f64().unwrap(),
            l["waiting_seconds"].as_f64().unwrap(),
            l["guest_seconds"].as_f64().unwrap(),
        );
        assert!(0.0 < guest && guest <= busy, "{l:#}");
        assert!(busy + waiting <= doc["uptime_seconds"].as_f64().unwrap(), "{doc:#}");

        // The same numbers in the Prometheus text.
        let (code, content_type, text) = get(admin, "/metrics");
        assert_eq!(code, 200);
        assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
        assert!(text.ends_with("# EOF\n"));
        let version = g["version"].as_str().unwrap();
        assert_eq!(sample(&text, &format!(r#"wasmloop_guest_info{{guest="echo",version="{version}"}}"#)), 1.0);
        assert_eq!(sample(&text, r#"wasmloop_guest_connections_accepted_total{guest="echo"}"#), CONNECTIONS as f64);
        assert_eq!(sample(&text, r#"wasmloop_guest_received_bytes_total{guest="echo"}"#), bytes as f64);
        assert_eq!(sample(&text, r#"wasmloop_guest_sent_bytes_total{guest="echo"}"#), bytes as f64);
        assert_eq!(sample(&text, r#"wasmloop_guest_events_total{guest="echo",event="on-accept"}"#), CONNECTIONS as f64);
        let count = sample(&text, r#"wasmloop_guest_callback_duration_seconds_count{guest="echo"}"#);
        assert!(count >= calls as f64);
        let inf = sample(&text, r#"wasmloop_guest_callback_duration_seconds_bucket{le="+Inf",guest="echo"}"#);
        assert_eq!(inf, count, "the +Inf bucket holds every observation");
        assert!(sample(&text, r#"wasmloop_loop_wakeups_total{worker="0"}"#) >= woke as f64);
    });
}

#[test]
fn a_trap_is_counted_by_kind_and_the_restart_after_it() {
    bounded(Duration::from_secs(120), || {
        let host = Host::command("faulty").args(["--admin", "127.0.0.1:0"]).spawn();
        let admin = host.admin_addr();
        let mut conn = host.connect();
        conn.write_all(b"panic\n").unwrap();
        let mut rest = Vec::new();
        let _ = conn.read_to_end(&mut rest);
        // Restarted after the backoff (100 ms): up again, one restart.
        let doc = wait_for(admin, Duration::from_secs(10), |g| g["restarts"] == 1 && g["up"] == true);
        let traps = &doc["guests"][0]["traps"];
        assert_eq!(traps["unreachable"], 1, "a Rust panic is an `unreachable` trap: {traps:#}");
        let total: u64 = traps.as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
        assert_eq!(total, 1, "{traps:#}");
        assert_eq!(doc["guests"][0]["events"]["init"], 2, "init ran again in the new instance");

        // Growing past the memory limit is a `memory_limit` fault, and the
        // high-water mark remembers how far it got.
        let mut conn = host.connect();
        conn.write_all(b"grow\n").unwrap();
        let _ = conn.read_to_end(&mut rest);
        let doc = wait_for(admin, Duration::from_secs(10), |g| g["restarts"] == 2 && g["up"] == true);
        let g = &doc["guests"][0];
        assert_eq!(g["traps"]["memory_limit"], 1, "{g:#}");
        let memory = &g["memory"];
        let high = memory["high_water_bytes"].as_u64().unwrap();
        assert!(high > 32 << 20 && high <= 64 << 20, "grew toward the 64 MiB limit: {memory:#}");
        assert!(memory["bytes"].as_u64().unwrap() < high, "the new instance starts small: {memory:#}");
    });
}

#[test]
fn status_json_fits_its_published_schema() {
    bounded(Duration::from_secs(120), || {
        let host = Host::command("echo").args(["--admin", "127.0.0.1:0", "--workers", "2"]).spawn();
        let admin = host.admin_addr();
        let mut conn = host.connect();
        conn.write_all(b"x").unwrap();
        conn.read_exact(&mut [0]).unwrap();
        let schema_path = workspace_root().join("docs/status.schema.json");
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(&schema_path).unwrap()).unwrap();
        let validator = jsonschema::validator_for(&schema).expect("the schema is a valid JSON Schema");
        let doc = status(admin);
        let errors: Vec<String> =
            validator.iter_errors(&doc).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        assert!(errors.is_empty(), "/status.json does not fit the schema:\n{}\n{doc:#}", errors.join("\n"));
        // One guest summed over both workers, one entry per loop.
        assert_eq!(doc["workers"], 2);
        assert_eq!(doc["loops"].as_array().unwrap().len(), 2);
        assert_eq!(doc["guests"].as_array().unwrap().len(), 1);
        assert_eq!(doc["guests"][0]["events"]["init"], 2, "one init per worker");
        // The schema is strict: a document with a field missing fails it.
        let mut broken = doc.clone();
        broken["guests"][0]["connections"].as_object_mut().unwrap().remove("open");
        assert!(!validator.is_valid(&broken), "the schema must catch a missing field");
    });
}

#[test]
fn the_admin_listener_serves_get_only_and_is_loopback_only_unless_public() {
    bounded(Duration::from_secs(60), || {
        let host = Host::command("echo").args(["--admin", "127.0.0.1:0"]).spawn();
        let admin = host.admin_addr();
        let (code, content_type, page) = get(admin, "/");
        assert_eq!(code, 200);
        assert_eq!(content_type, "text/html; charset=utf-8");
        assert!(page.contains("status.json"), "the page polls the JSON endpoint");
        assert_eq!(get(admin, "/nothing").0, 404);
        assert_eq!(request(admin, "POST", "/metrics").0, 405);
        assert_eq!(request(admin, "HEAD", "/metrics").2, "", "HEAD has no body");

        // Not on a public address by mistake: one line, exit 1, before
        // any guest is loaded.
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_host"));
        cmd.args(["run", "no-such.wasm", "--listen", "127.0.0.1:0", "--admin", "0.0.0.0:0"]);
        let out = run_bounded(cmd, Duration::from_secs(20)).unwrap();
        assert_eq!(out.status.code(), Some(1));
        let lines = out.stderr_lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("--admin 0.0.0.0:0: not a loopback address"), "{lines:?}");
        // --admin-public allows it.
        let host = Host::command("echo").args(["--admin", "0.0.0.0:0", "--admin-public"]).spawn();
        let port = host.admin_addr().port();
        assert_eq!(get(SocketAddr::from(([127, 0, 0, 1], port)), "/status.json").0, 200);
    });
}

#[test]
fn guest_log_lines_carry_the_guest_name_and_version_and_traps_their_backtrace() {
    bounded(Duration::from_secs(60), || {
        let host = Host::command("faulty").args(["--admin", "127.0.0.1:0", "--log-format", "json"]).spawn();
        let admin = host.admin_addr();
        let version = status(admin)["guests"][0]["version"].as_str().unwrap().to_string();
        assert_eq!(version.len(), 12, "a SHA-256 prefix: {version}");
        let mut conn = host.connect();
        conn.write_all(b"print hello from the guest\n").unwrap();
        let line = host.wait_for_log("hello from the guest", Duration::from_secs(10));
        let entry: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert_eq!(entry["fields"]["guest"], "faulty", "{entry:#}");
        assert_eq!(entry["fields"]["version"], version.as_str(), "{entry:#}");
        assert_eq!(entry["fields"]["stream"], "stdout", "{entry:#}");

        conn.write_all(b"panic\n").unwrap();
        let line = host.wait_for_log("trapped in on-data", Duration::from_secs(10));
        let entry: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(entry["level"], "ERROR");
        assert_eq!(entry["fields"]["guest"], "faulty");
        assert_eq!(entry["fields"]["version"], version.as_str());
        assert_eq!(entry["fields"]["kind"], "unreachable");
        let message = entry["fields"]["message"].as_str().unwrap();
        assert!(message.contains("wasm backtrace"), "{message}");
        assert!(message.contains("callbacks@0.1.0#on-data"), "the frame of the export called: {message}");
    });
}

#[test]
fn a_host_header_that_is_not_an_ip_address_or_localhost_is_refused_against_dns_rebinding() {
    bounded(Duration::from_secs(60), || {
        let host = Host::command("echo").args(["--admin", "127.0.0.1:0"]).spawn();
        let admin = host.admin_addr();
        let port = admin.port();
        // A page of evil.example that pointed its name at 127.0.0.1: the
        // browser sends the page's name.
        for bad in [format!("evil.example:{port}"), "evil.example".into(), format!("localhost.evil.example:{port}")] {
            let (code, _, body) = request_to(admin, &bad, "GET", "/status.json");
            assert_eq!(code, 421, "Host: {bad}: {body}");
            assert!(body.contains("Host"), "the body says why: {body}");
            assert!(!body.contains("guests"), "nothing of the status leaks: {body}");
        }
        for good in [admin.to_string(), "127.0.0.1".into(), format!("localhost:{port}"), "localhost".into()] {
            let (code, _, body) = request_to(admin, &good, "GET", "/status.json");
            assert_eq!(code, 200, "Host: {good}: {body}");
        }
    });
}

/// A connection to `addr` that sent half a request head and then nothing.
fn half_request(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to the admin listener");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ").unwrap();
    s
}

/// How long until the host ends `s` (end-of-stream or a reset); panics if
/// it is still open after `limit`.
fn closed_within(s: &mut TcpStream, limit: Duration) -> Duration {
    let start = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return start.elapsed(),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return start.elapsed(),
            Err(e) => panic!("still open after {:?} ({e})", start.elapsed()),
        }
    }
}

/// Whether the host ends `s` (end-of-stream or a reset) by `deadline`.
fn closed_by(mut s: &TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn slow_clients_up_to_the_cap_do_not_keep_metrics_from_answering_and_more_are_closed_at_once() {
    let _alone = alone();
    bounded(Duration::from_secs(60), || {
        let host = Host::command("echo").args(["--admin", "127.0.0.1:0"]).spawn();
        let admin = host.admin_addr();
        // Every slot but one held by a client that stopped mid-head.
        let mut slow: Vec<TcpStream> = (0..MAX_CLIENTS - 1).map(|_| half_request(admin)).collect();
        let start = Instant::now();
        let (code, _, text) = get(admin, "/metrics");
        let took = start.elapsed();
        assert_eq!(code, 200, "{text}");
        assert!(text.ends_with("# EOF\n"));
        // Not after a slow client's deadline: beside them, not behind them.
        assert!(took < REQUEST_DEADLINE / 2, "/metrics took {took:?} with {} slow clients", slow.len());

        // With every slot held, more connections are closed at once, not
        // left waiting in the backlog. (One of them may take the slot the
        // /metrics client is just giving back.)
        let start = Instant::now();
        let mut more: Vec<TcpStream> = (0..=MAX_CLIENTS).map(|_| half_request(admin)).collect();
        let by = start + REQUEST_DEADLINE / 2;
        let closed = more.iter().filter(|s| closed_by(s, by)).count();
        assert!(closed >= MAX_CLIENTS, "{closed} of {} connections beyond the cap were closed at once", more.len());

        // The slow clients are cut at their deadline; then the slots are free.
        for s in slow.iter_mut().chain(&mut more) {
            closed_within(s, REQUEST_DEADLINE * 3);
        }
        assert_eq!(get(admin, "/status.json").0, 200);
    });
}

#[test]
fn a_client_dripping_its_request_is_cut_at_the_deadline_not_kept_by_each_byte() {
    bounded(Duration::from_secs(60), || {
        let host = Host::command("echo").args(["--admin", "127.0.0.1:0"]).spawn();
        let admin = host.admin_addr();
        let start = Instant::now();
        let mut s = TcpStream::connect_timeout(&admin, Duration::from_secs(5)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n").unwrap();
        // One header byte per 100 ms (the wait for the close is the pace),
        // for at most four deadlines: a per-read timeout would never fire.
        s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let cut = loop {
            assert!(start.elapsed() < REQUEST_DEADLINE * 4, "still open after {:?} of dripping", start.elapsed());
            if s.write_all(b"x").is_err() {
                break start.elapsed();
            }
            let mut buf = [0u8; 256];
            match s.read(&mut buf) {
                Ok(0) => break start.elapsed(),
                Ok(n) => panic!("an answer to an unfinished request: {:?}", String::from_utf8_lossy(&buf[..n])),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => break start.elapsed(),
            }
        };
        assert!(cut >= REQUEST_DEADLINE - Duration::from_millis(100), "cut after {cut:?}, before the deadline");
        assert!(cut <= REQUEST_DEADLINE + Duration::from_secs(1), "cut only after {cut:?}");
        assert_eq!(get(admin, "/status.json").0, 200, "the listener serves on");
    });
}
