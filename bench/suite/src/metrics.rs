//! Metrics overhead: the echo benchmark (64 B × 100 connections, the
//! closed-loop client of `echo_client`) against the same `host` + echo
//! guest with metrics off (no `--admin`) and on (`--admin 127.0.0.1:0`:
//! every loop and guest counts and times its events, and the admin thread
//! serves them). While the metrics-on host is under load, `/metrics` is
//! scraped once a second, as a (busy) Prometheus would.
//!
//! The two settings alternate within each round, with a fresh host each
//! time, pinned as in `echo.rs`; the median round is reported.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use crate::Ctx;
use crate::echo_client::{self, Load, Outcome};
use crate::procs::{self, Server};
use crate::report::{Ratio, Section, Table, Target, load_average, load_note, secs};

const CONNECTIONS: usize = 100;
const SIZE: usize = 64;
/// The overhead the issue allows: metrics on keep at least this share of
/// the messages/s.
const TARGET: f64 = 0.97;
/// Time between two scrapes of `/metrics` during the load.
const SCRAPE_EVERY: Duration = Duration::from_secs(1);
const IO_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Setting {
    Off,
    On,
}

const SETTINGS: [Setting; 2] = [Setting::Off, Setting::On];

impl Setting {
    fn name(self) -> &'static str {
        match self {
            Setting::Off => "`host` + echo.wasm, metrics off",
            Setting::On => "`host` + echo.wasm, metrics on (`--admin 127.0.0.1:0`)",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Setting::Off => "off",
            Setting::On => "on",
        }
    }
}

/// One run of one setting.
struct Measured {
    outcome: Outcome,
    /// Server CPU time (user + system, all threads: the admin thread's
    /// scrapes included) over the whole client run.
    server_cpu: Duration,
    elapsed: Duration,
    /// Scrapes of `/metrics` answered during the run (metrics on only).
    scrapes: usize,
}

impl Measured {
    fn per_second(&self) -> f64 {
        self.outcome.per_second()
    }

    /// Server CPU per round trip (warm-up included), µs.
    fn cpu_per_message_micros(&self) -> f64 {
        self.server_cpu.as_secs_f64() * 1e6 / self.outcome.total_round_trips.max(1) as f64
    }

    fn server_busy(&self) -> f64 {
        self.server_cpu.as_secs_f64() / self.elapsed.as_secs_f64()
    }
}

pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<Section>> {
    let paths = &ctx.paths;
    for (what, path, build) in [
        ("host", paths.bin("host"), "cargo build --release -p wasmloop-host"),
        ("the echo guest", paths.guest("echo"), "cargo build --profile guest --target wasm32-wasip2 -p echo"),
    ] {
        ensure!(path.exists(), "{what} is not built ({} is missing); run `{build}`", path.display());
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pin = cores >= 2 && procs::have("taskset");
    let rounds = ctx.pick(11, 1);
    let warmup = ctx.pick(Duration::from_secs(1), Duration::from_millis(100));
    let window = ctx.pick(Duration::from_secs(3), Duration::from_millis(200));
    let cache = paths.scratch("metrics-cache");
    let load = Load { connections: CONNECTIONS, size: SIZE, warmup, window, cpu: pin.then_some(0) };

    let mut section = Section::new(
        "Metrics overhead: echo with metrics on vs off",
        &format!(
            "The echo benchmark's small-message load ({SIZE} B × {CONNECTIONS} connections, the closed-loop \
             client, a {} warm-up then a {} window) against `host` + the echo guest started plainly (metrics \
             off) and with `--admin 127.0.0.1:0` (metrics on: every loop and guest counts and times its events, \
             and the admin listener runs on its own thread). While the metrics-on host is under load, `/metrics` \
             is scraped every {} s (a scrape at the start of the run too), far more often than a Prometheus \
             usually would. {rounds} round(s), the two settings alternating (the order rotates each round), a \
             fresh host each time; the table shows each setting's median round by messages/s. {} Server CPU is \
             the host's CPU time over the run (all threads, so the scrapes count) per round trip, median over \
             the rounds.",
            secs(warmup),
            secs(window),
            SCRAPE_EVERY.as_secs(),
            if pin {
                "The host is pinned to CPU 1 and the client to CPU 0 (`taskset`)."
            } else {
                "Host and client are not pinned (no `taskset` or a single CPU)."
            },
        ),
    );
    let load_before = load_average();
    let mut runs: [Vec<Measured>; 2] = Default::default();
    for round in 0..rounds {
        for k in 0..SETTINGS.len() {
            let i = (k + round) % SETTINGS.len();
            let setting = SETTINGS[i];
            let m = measure(&paths.bin("host"), &paths.guest("echo"), &cache, setting, pin, &load)
                .with_context(|| format!("{} with {CONNECTIONS} connections × {SIZE} B", setting.name()))?;
            eprintln!(
                "metrics {:<3}, round {}/{rounds}: {:>9.0} msg/s, p99 {:>8.1} µs, server busy {:.0}%{}",
                setting.short(),
                round + 1,
                m.per_second(),
                m.outcome.percentile_micros(0.99),
                m.server_busy() * 100.0,
                if setting == Setting::On { format!(", {} scrapes", m.scrapes) } else { String::new() },
            );
            runs[i].push(m);
        }
    }

    let mut table = Table::new(&["setting", "messages/s", "p50 µs", "p99 µs", "server CPU µs/msg", "server busy"]);
    for (setting, runs) in SETTINGS.iter().zip(&runs) {
        let m = median(runs);
        table.row(vec![
            setting.name().into(),
            format!("{:.0}", m.per_second()),
            format!("{:.1}", m.outcome.percentile_micros(0.50)),
            format!("{:.1}", m.outcome.percentile_micros(0.99)),
            format!("{:.2}", median_cpu(runs)),
            format!("{:.0}%", m.server_busy() * 100.0),
        ]);
    }
    section.tables.push(table);
    let [off, on] = &runs;
    // Each round runs both settings back to back, so a round's ratio sees
    // one state of the machine; the median of those is the figure judged.
    // (The ratio of the two median rounds mixes rounds the machine's load
    // treated differently; it is shown beside it.)
    let mut paired: Vec<f64> = off.iter().zip(on).map(|(f, n)| n.per_second() / f.per_second()).collect();
    paired.sort_by(f64::total_cmp);
    section.ratios.push(Ratio::new(
        &format!("messages/s, metrics on / off ({CONNECTIONS} conns), median of the rounds' ratios"),
        paired[(paired.len() - 1) / 2],
        Target::AtLeast(TARGET),
    ));
    section.ratios.push(Ratio::new(
        &format!("messages/s, metrics on / off ({CONNECTIONS} conns), median round of each"),
        median(on).per_second() / median(off).per_second(),
        Target::None,
    ));
    section.ratios.push(Ratio::new(
        &format!("server CPU per message, metrics on / off ({CONNECTIONS} conns)"),
        median_cpu(on) / median_cpu(off),
        Target::None,
    ));
    if rounds > 1 {
        let per_round =
            off.iter().zip(on).map(|(f, n)| format!("{:.3}", n.per_second() / f.per_second())).collect::<Vec<_>>();
        section.notes.push(format!("messages/s on / off per round: {}.", per_round.join(", ")));
    }
    section.notes.push(load_note(load_before));
    Ok(vec![section])
}

fn measure(
    host: &Path,
    guest: &Path,
    cache: &Path,
    setting: Setting,
    pin: bool,
    load: &Load,
) -> anyhow::Result<Measured> {
    let (server, admin) = start(host, guest, cache, setting, pin)?;
    let before = server.usage();
    let started = Instant::now();
    let (outcome, scrapes) = match admin {
        Some(admin) => {
            // The client runs here; the scraper beside it until it is done.
            let done = Arc::new(AtomicBool::new(false));
            let scraper = {
                let done = done.clone();
                thread::spawn(move || scrape_until(admin, &done))
            };
            let outcome = echo_client::run(server.addr, load);
            done.store(true, Ordering::SeqCst);
            let scrapes = scraper.join().map_err(|_| anyhow::anyhow!("the scraper thread panicked"))??;
            (outcome?, scrapes)
        }
        None => (echo_client::run(server.addr, load)?, 0),
    };
    let elapsed = started.elapsed();
    let server_cpu = server.usage().since(&before).cpu;
    if let Some(admin) = admin {
        // Metrics really were on: the document counts the client's
        // connections.
        let status = get(admin, "/status.json")?;
        let accepted = accepted(&status).context("/status.json has no `\"accepted\":N`")?;
        ensure!(
            accepted >= load.connections as u64,
            "/status.json counts {accepted} accepted connections, the client opened {}",
            load.connections
        );
    }
    for line in server.problems() {
        eprintln!("  metrics {}: {line}", setting.short());
    }
    Ok(Measured { outcome, server_cpu, elapsed, scrapes })
}

/// Scrapes `/metrics` now and every [`SCRAPE_EVERY`] until `done`; the
/// number of scrapes. Any failed scrape fails the run.
fn scrape_until(admin: SocketAddr, done: &AtomicBool) -> anyhow::Result<usize> {
    let mut scrapes = 0;
    let mut next = Instant::now();
    while !done.load(Ordering::SeqCst) {
        if Instant::now() >= next {
            let body = get(admin, "/metrics").context("scraping /metrics")?;
            ensure!(!body.is_empty(), "/metrics answered with an empty body");
            scrapes += 1;
            next += SCRAPE_EVERY;
        }
        thread::sleep(Duration::from_millis(10));
    }
    Ok(scrapes)
}

/// `GET path` (HTTP/1.1, `Connection: close`); the body of a 200 answer.
fn get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).with_context(|| format!("reading the answer to GET {path}"))?;
    let response = String::from_utf8_lossy(&response);
    let Some((head, body)) = response.split_once("\r\n\r\n") else {
        bail!("GET {path}: an incomplete answer ({} bytes)", response.len());
    };
    let status = head.lines().next().unwrap_or_default();
    ensure!(status.split_whitespace().nth(1) == Some("200"), "GET {path} answered {status:?}");
    Ok(body.to_string())
}

/// The first `"accepted":N` of a status document (one guest here).
fn accepted(status: &str) -> Option<u64> {
    let rest = &status[status.find("\"accepted\"")? + "\"accepted\"".len()..];
    let digits: String =
        rest.trim_start().strip_prefix(':')?.trim_start().chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Starts `host run` with the echo guest (with `--admin` if metrics are
/// on): the host and its admin address, from its log.
fn start(
    host: &Path,
    guest: &Path,
    cache: &Path,
    setting: Setting,
    pin: bool,
) -> anyhow::Result<(Server, Option<SocketAddr>)> {
    let mut cmd = if pin {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", "1"]).arg(host);
        cmd
    } else {
        Command::new(host)
    };
    cmd.arg("run").arg(guest).args(["--listen", "127.0.0.1:0", "--max-connections", "20000", "--cache-dir"]).arg(cache);
    if setting == Setting::On {
        cmd.args(["--admin", "127.0.0.1:0"]);
    }
    cmd.env_remove("RUST_LOG");
    let server = Server::spawn_logged(cmd, Some("ready"))?;
    let admin = server.startup.iter().find_map(|line| {
        let rest = line.split("admin listening on http://").nth(1)?;
        rest.split('/').next()?.parse().ok()
    });
    if setting == Setting::On && admin.is_none() {
        bail!(
            "host with --admin is ready but logged no `admin listening on http://ADDR/`:\n{}",
            server.startup.join("\n")
        );
    }
    Ok((server, admin))
}

/// The median run by messages/s (the lower middle one for an even count).
fn median(runs: &[Measured]) -> &Measured {
    let mut sorted: Vec<&Measured> = runs.iter().collect();
    sorted.sort_by(|a, b| a.per_second().total_cmp(&b.per_second()));
    sorted[(sorted.len() - 1) / 2]
}

/// The median server CPU per message over the rounds, µs.
fn median_cpu(runs: &[Measured]) -> f64 {
    let mut cpu: Vec<f64> = runs.iter().map(Measured::cpu_per_message_micros).collect();
    cpu.sort_by(f64::total_cmp);
    cpu[(cpu.len() - 1) / 2]
}
