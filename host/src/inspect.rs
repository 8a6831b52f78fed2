//! `host inspect`: reads a running host's `/status.json` (docs/admin.md)
//! and prints a table.
//!
//! Two documents are fetched `--interval-ms` apart so that the rates (events
//! per second, bytes per second, wakeups per second, busy time) and the
//! latency quantiles describe that interval, not the whole life of the
//! process; with `--interval-ms 0` one document is read and its lifetime
//! figures are shown. The client is a plain blocking `TcpStream`: one
//! `GET`, `Connection: close`, read to the end.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use serde::Deserialize;
use wasmloop::os_error::describe;

/// Connect, write and read timeouts of the one request.
const TIMEOUT: Duration = Duration::from_secs(3);
/// A status document larger than this is not one (a few KiB per guest).
const MAX_RESPONSE: u64 = 64 << 20;
/// The `schema` this reader understands.
const SCHEMA: u64 = 1;

#[derive(clap::Args)]
pub struct InspectArgs {
    /// The host's admin address (`host run --admin ADDR`).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9900")]
    admin: SocketAddr,

    /// Time between the two samples the rates are computed from; 0 reads
    /// one document and shows lifetime figures instead of rates.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    interval_ms: u64,

    /// Print the raw `/status.json` document instead of the table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    let addr = args.admin;
    if args.json {
        let body = fetch(addr, "/status.json")?;
        // Refuse to pass along something that is not JSON at all.
        let _: serde_json::Value = serde_json::from_slice(&body).map_err(|e| not_json(addr, &e))?;
        let mut out = body;
        if out.last() != Some(&b'\n') {
            out.push(b'\n');
        }
        return print(&out);
    }
    let first = sample(addr)?;
    let table = if args.interval_ms == 0 {
        render(&first.status, None)
    } else {
        thread::sleep(Duration::from_millis(args.interval_ms));
        let second = sample(addr)?;
        let pair = Interval::between(&first, &second);
        render(&second.status, pair.as_ref())
    };
    print(table.as_bytes())
}

fn print(bytes: &[u8]) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        // `host inspect | head`: the reader has seen enough.
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(|e| anyhow!("cannot write to stdout: {}", describe(&e))),
    }
}

// ---- The document (docs/status.schema.json) ------------------------------
//
// Only what the table shows is declared; serde skips the rest, so a host that
// adds fields to schema 1 still reads.

#[derive(Deserialize)]
struct Status {
    pid: u64,
    uptime_seconds: f64,
    workers: u64,
    loops: Vec<Loop>,
    guests: Vec<Guest>,
}

#[derive(Deserialize)]
struct Loop {
    worker: u64,
    wakeups: u64,
    events: u64,
    busy_seconds: f64,
    guest_seconds: f64,
}

#[derive(Deserialize)]
struct Histogram {
    count: u64,
    p50: f64,
    p99: f64,
    /// `[upper bound, count]` of the non-empty buckets, not cumulative.
    buckets: Vec<(f64, u64)>,
}

#[derive(Deserialize)]
struct Guest {
    name: String,
    version: String,
    up: bool,
    connections: Connections,
    bytes: Bytes,
    /// Calls per callback, by WIT name.
    events: BTreeMap<String, u64>,
    latency: Histogram,
    /// Traps per kind.
    traps: BTreeMap<String, u64>,
    restarts: u64,
    reloads: u64,
    memory: Memory,
}

#[derive(Deserialize)]
struct Connections {
    open: u64,
    accepted: u64,
    refused: u64,
}

#[derive(Deserialize)]
struct Bytes {
    #[serde(rename = "in")]
    input: u64,
    #[serde(rename = "out")]
    output: u64,
}

#[derive(Deserialize)]
struct Memory {
    bytes: u64,
    high_water_bytes: u64,
}

impl Guest {
    fn events_total(&self) -> u64 {
        self.events.values().sum()
    }

    fn traps_total(&self) -> u64 {
        self.traps.values().sum()
    }
}

// ---- Fetching -------------------------------------------------------------

/// One document and when it arrived.
struct Sample {
    status: Status,
    at: Instant,
}

fn sample(addr: SocketAddr) -> anyhow::Result<Sample> {
    let body = fetch(addr, "/status.json")?;
    let at = Instant::now();
    Ok(Sample { status: parse(addr, &body)?, at })
}

/// `GET path` from the admin listener; the body of a 200 answer.
fn fetch(addr: SocketAddr, path: &str) -> anyhow::Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| {
        anyhow!(
            "cannot reach the admin listener at {addr}: {} (is the host running with --admin {addr}?)",
            describe(&e)
        )
    })?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
        .map_err(|e| anyhow!("cannot set a timeout on the connection to {addr}: {}", describe(&e)))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(|e| io_failure(addr, "sending the request to", &e))?;
    let mut response = Vec::new();
    (&mut stream)
        .take(MAX_RESPONSE + 1)
        .read_to_end(&mut response)
        .map_err(|e| io_failure(addr, "reading the answer of", &e))?;
    if response.len() as u64 > MAX_RESPONSE {
        bail!("the admin listener at {addr} sent more than {} for {path}", bytes(MAX_RESPONSE));
    }
    body_of(addr, path, &response)
}

fn io_failure(addr: SocketAddr, doing: &str, e: &io::Error) -> anyhow::Error {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => {
            anyhow!("the admin listener at {addr} did not answer within {} s", TIMEOUT.as_secs())
        }
        _ => anyhow!("{doing} the admin listener at {addr} failed: {}", describe(e)),
    }
}

/// The body of an HTTP/1.1 response that must be `200`, read to the end of
/// the connection.
fn body_of(addr: SocketAddr, path: &str, response: &[u8]) -> anyhow::Result<Vec<u8>> {
    if response.is_empty() {
        bail!("the admin listener at {addr} closed the connection without answering GET {path}");
    }
    if !response.starts_with(b"HTTP/") {
        bail!("{addr} did not answer GET {path} with HTTP (is it the host's admin listener?)");
    }
    let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        bail!("the admin listener at {addr} sent an incomplete HTTP answer to GET {path} ({} bytes)", response.len());
    };
    let head = String::from_utf8_lossy(&response[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let _version = parts.next();
    let code = parts.next().unwrap_or_default();
    let reason = parts.next().unwrap_or_default().trim();
    if code != "200" {
        let answer = if reason.is_empty() { code.to_string() } else { format!("{code} {reason}") };
        bail!("the admin listener at {addr} answered GET {path} with {answer}");
    }
    let mut body = response[end + 4..].to_vec();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("transfer-encoding") && !value.eq_ignore_ascii_case("identity") {
            bail!(
                "the admin listener at {addr} sent {path} with Transfer-Encoding {value}, which inspect does not read"
            );
        }
        if name.eq_ignore_ascii_case("content-length") {
            let length: usize = value
                .parse()
                .map_err(|_| anyhow!("the admin listener at {addr} sent a bad Content-Length {value:?}"))?;
            if body.len() < length {
                bail!(
                    "the admin listener at {addr} closed the connection after {} of the {length} bytes of {path}",
                    body.len()
                );
            }
            body.truncate(length);
        }
    }
    Ok(body)
}

fn not_json(addr: SocketAddr, e: &serde_json::Error) -> anyhow::Error {
    anyhow!("the admin listener at {addr} sent a /status.json that is not valid JSON ({e})")
}

fn parse(addr: SocketAddr, body: &[u8]) -> anyhow::Result<Status> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| not_json(addr, &e))?;
    match value.get("schema").map(|s| (s.as_u64(), s)) {
        Some((Some(SCHEMA), _)) => {}
        Some((_, other)) => {
            bail!("the /status.json at {addr} has schema {other}; this `host inspect` reads schema {SCHEMA}")
        }
        None => bail!("the JSON at {addr}/status.json has no `schema` field: not a wasmloop status document"),
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let at = e.path().to_string();
        anyhow!("the /status.json at {addr} does not follow schema {SCHEMA}: at `{at}`: {}", e.inner())
    })
}

// ---- Rates ------------------------------------------------------------------

/// Two documents of the same process and the time between them.
struct Interval<'a> {
    before: &'a Status,
    seconds: f64,
}

impl<'a> Interval<'a> {
    /// `None` if the host restarted in between (its counters started over)
    /// or no time passed.
    fn between(first: &'a Sample, second: &Sample) -> Option<Interval<'a>> {
        let (a, b) = (&first.status, &second.status);
        if a.pid != b.pid || b.uptime_seconds < a.uptime_seconds {
            return None;
        }
        // The host's own clock, which excludes our time on the wire; ours
        // if the host's did not move (a coarse clock).
        let mut seconds = b.uptime_seconds - a.uptime_seconds;
        if seconds <= 0.0 {
            seconds = second.at.duration_since(first.at).as_secs_f64();
        }
        (seconds > 0.0).then_some(Interval { before: a, seconds })
    }

    fn rate(&self, before: u64, after: u64) -> f64 {
        after.saturating_sub(before) as f64 / self.seconds
    }

    fn share(&self, before: f64, after: f64) -> f64 {
        (after - before).max(0.0) / self.seconds
    }

    fn guest(&self, name: &str) -> Option<&'a Guest> {
        self.before.guests.iter().find(|g| g.name == name)
    }

    fn worker(&self, worker: u64) -> Option<&'a Loop> {
        self.before.loops.iter().find(|l| l.worker == worker)
    }
}

/// The `q` quantile of the callbacks between `before` and `after`, as the
/// host computes its own: the upper bound of the bucket it falls in.
/// `None` if no callback ran in between.
fn interval_quantile(before: &Histogram, after: &Histogram, q: f64) -> Option<f64> {
    let earlier: BTreeMap<u64, u64> = before.buckets.iter().map(|&(bound, n)| (bound.to_bits(), n)).collect();
    let mut deltas: Vec<(f64, u64)> = after
        .buckets
        .iter()
        .map(|&(bound, n)| (bound, n.saturating_sub(earlier.get(&bound.to_bits()).copied().unwrap_or(0))))
        .filter(|&(_, n)| n > 0)
        .collect();
    deltas.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total: u64 = deltas.iter().map(|d| d.1).sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    deltas.into_iter().find_map(|(bound, n)| {
        seen += n;
        (seen >= rank).then_some(bound)
    })
}

// ---- The table --------------------------------------------------------------

const COLUMNS: [&str; 16] = [
    "NAME", "VERSION", "UP", "OPEN", "ACCEPTED", "REFUSED", "EVENTS/S", "IN/S", "OUT/S", "P50", "P99", "TRAPS",
    "RESTARTS", "RELOADS", "MEM", "HIGH",
];
/// Columns aligned left (text); the others are numbers, aligned right.
const LEFT: usize = 2;

fn render(status: &Status, interval: Option<&Interval>) -> String {
    let mut out = String::new();
    let workers = status.workers;
    let _ = write!(
        out,
        "pid {}  up {}  {workers} worker{}",
        status.pid,
        uptime(status.uptime_seconds),
        if workers == 1 { "" } else { "s" }
    );
    match interval {
        Some(i) => {
            let _ = writeln!(out, "  (rates over the last {})", duration(i.seconds));
        }
        None => out.push_str("  (one sample: figures since start, no rates)\n"),
    }
    for l in &status.loops {
        let _ = write!(out, "loop {}: ", l.worker);
        match interval.and_then(|i| i.worker(l.worker).map(|b| (i, b))) {
            Some((i, b)) => {
                let wakeups = l.wakeups.saturating_sub(b.wakeups);
                let events = l.events.saturating_sub(b.events);
                let _ = writeln!(
                    out,
                    "{} wakeups/s, {} events/wakeup, busy {}, guest {}",
                    count_f(i.rate(b.wakeups, l.wakeups)),
                    per(events, wakeups),
                    percent(i.share(b.busy_seconds, l.busy_seconds)),
                    percent(i.share(b.guest_seconds, l.guest_seconds)),
                );
            }
            None => {
                let up = status.uptime_seconds;
                let share = |s: f64| if up > 0.0 { percent(s / up) } else { "-".into() };
                let _ = writeln!(
                    out,
                    "{} wakeups, {} events/wakeup, busy {}, guest {}",
                    count(l.wakeups),
                    per(l.events, l.wakeups),
                    share(l.busy_seconds),
                    share(l.guest_seconds),
                );
            }
        }
    }
    out.push('\n');

    let mut rows: Vec<Vec<String>> = vec![COLUMNS.iter().map(|c| c.to_string()).collect()];
    for g in &status.guests {
        let before = interval.and_then(|i| i.guest(&g.name).map(|b| (i, b)));
        let (events, input, output, p50, p99) = match before {
            Some((i, b)) => (
                count_f(i.rate(b.events_total(), g.events_total())),
                bytes_f(i.rate(b.bytes.input, g.bytes.input)),
                bytes_f(i.rate(b.bytes.output, g.bytes.output)),
                interval_quantile(&b.latency, &g.latency, 0.50),
                interval_quantile(&b.latency, &g.latency, 0.99),
            ),
            None => {
                let (p50, p99) =
                    if g.latency.count > 0 { (Some(g.latency.p50), Some(g.latency.p99)) } else { (None, None) };
                ("-".into(), "-".into(), "-".into(), p50, p99)
            }
        };
        rows.push(vec![
            g.name.clone(),
            g.version.clone(),
            if g.up { "yes" } else { "no" }.into(),
            count(g.connections.open),
            count(g.connections.accepted),
            count(g.connections.refused),
            events,
            input,
            output,
            p50.map_or_else(|| "-".into(), duration),
            p99.map_or_else(|| "-".into(), duration),
            count(g.traps_total()),
            count(g.restarts),
            count(g.reloads),
            bytes(g.memory.bytes),
            bytes(g.memory.high_water_bytes),
        ]);
    }
    let widths: Vec<usize> =
        (0..COLUMNS.len()).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    for row in &rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c > 0 {
                line.push_str("  ");
            }
            let pad = widths[c] - cell.chars().count();
            if c < LEFT {
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad));
            } else {
                line.extend(std::iter::repeat_n(' ', pad));
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if status.guests.is_empty() {
        out.push_str("(no guests)\n");
    }
    out
}

// ---- Humane units -------------------------------------------------------------

/// 999, 1.2k, 34k, 5.6M, 7.8G.
fn count(n: u64) -> String {
    if n < 1000 { n.to_string() } else { count_f(n as f64) }
}

/// A count or a rate: 0, 0.5, 12, 999, 1.2k, 34k, 5.6M.
fn count_f(x: f64) -> String {
    if x == 0.0 {
        return "0".into();
    }
    for (scale, unit) in [(1e9, "G"), (1e6, "M"), (1e3, "k")] {
        if x >= scale * 0.9995 {
            let v = x / scale;
            return if v < 9.95 { format!("{v:.1}{unit}") } else { format!("{v:.0}{unit}") };
        }
    }
    if x < 9.95 { format!("{x:.1}") } else { format!("{x:.0}") }
}

/// 512 B, 3.4 KiB, 12 MiB, 1.0 GiB.
fn bytes(n: u64) -> String {
    bytes_f(n as f64)
}

fn bytes_f(x: f64) -> String {
    if x < 1023.5 {
        return format!("{x:.0} B");
    }
    let mut v = x;
    for unit in ["KiB", "MiB", "GiB", "TiB"] {
        v /= 1024.0;
        if v < 1023.5 || unit == "TiB" {
            return if v < 9.95 { format!("{v:.1} {unit}") } else { format!("{v:.0} {unit}") };
        }
    }
    unreachable!("the loop returns at TiB")
}

/// 850ns, 4.1µs, 12µs, 1.5ms, 340ms, 2.5s.
fn duration(seconds: f64) -> String {
    for (scale, unit) in [(1.0, "s"), (1e-3, "ms"), (1e-6, "µs")] {
        if seconds >= scale * 0.9995 {
            let v = seconds / scale;
            return if v < 9.95 { format!("{v:.1}{unit}") } else { format!("{v:.0}{unit}") };
        }
    }
    format!("{:.0}ns", seconds * 1e9)
}

/// 45s, 3m04s, 2h03m, 4d07h.
fn uptime(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..60 => format!("{seconds:.1}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

fn percent(share: f64) -> String {
    let p = share * 100.0;
    if p < 9.95 { format!("{p:.1}%") } else { format!("{p:.0}%") }
}

/// `a / b` with one decimal, `-` when `b` is 0.
fn per(a: u64, b: u64) -> String {
    if b == 0 { "-".into() } else { format!("{:.1}", a as f64 / b as f64) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn humane_units() {
        assert_eq!(count(3), "3");
        assert_eq!(count(999), "999");
        assert_eq!(count(1234), "1.2k");
        assert_eq!(count(34_000), "34k");
        assert_eq!(count(5_600_000), "5.6M");
        assert_eq!(count_f(0.5), "0.5");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 + 400), "3.4 KiB");
        assert_eq!(bytes(1_179_648), "1.1 MiB");
        assert_eq!(bytes(64 << 20), "64 MiB");
        assert_eq!(duration(12e-6), "12µs");
        assert_eq!(duration(4.096e-6), "4.1µs");
        assert_eq!(duration(850e-9), "850ns");
        assert_eq!(duration(0.0015), "1.5ms");
        assert_eq!(uptime(12.5), "12.5s");
        assert_eq!(uptime(184.0), "3m04s");
        assert_eq!(percent(0.017), "1.7%");
    }

    #[test]
    fn interval_quantiles_come_from_the_bucket_differences() {
        let h = |buckets: &[(f64, u64)]| Histogram {
            count: buckets.iter().map(|b| b.1).sum(),
            p50: 0.0,
            p99: 0.0,
            buckets: buckets.to_vec(),
        };
        let before = h(&[(1e-6, 100), (2e-6, 5)]);
        let after = h(&[(1e-6, 100), (2e-6, 8), (4e-6, 1)]);
        assert_eq!(interval_quantile(&before, &after, 0.5), Some(2e-6));
        assert_eq!(interval_quantile(&before, &after, 0.99), Some(4e-6));
        assert_eq!(interval_quantile(&after, &after, 0.5), None);
    }

    #[test]
    fn a_document_that_is_not_json_or_not_schema_1_is_named() {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let message = |body: &str| parse(addr, body.as_bytes()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message("<html>").contains("not valid JSON"));
        assert!(message(r#"{"schema": 2}"#).contains("has schema 2"));
        assert!(message(r#"{"pid": 1}"#).contains("no `schema` field"));
        let wrong = message(r#"{"schema": 1, "pid": "x"}"#);
        assert!(wrong.contains("at `pid`"), "{wrong}");
    }

    #[test]
    fn a_non_200_answer_is_named() {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let e = body_of(addr, "/status.json", b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").unwrap_err();
        assert!(e.to_string().contains("404 Not Found"), "{e}");
        let body = body_of(addr, "/x", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}").unwrap();
        assert_eq!(body, b"{}");
    }
}
