//! Workers: the same host with `--workers 1` and `--workers 2`, on echo
//! (64 B, 100 connections, the closed-loop client of `echo_client`) and on
//! HTTP hello (`guests/http-hello` on `--listen-http`, wrk as in http.rs).
//! Nothing is pinned: two workers need both cores, and the load generator
//! shares them, so the ratio is what one more loop buys on this machine,
//! not the scaling of a server with cores to itself.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};

use crate::Ctx;
use crate::echo_client::{self, Load};
use crate::http::{latency, verify, wrk};
use crate::procs::{Server, Usage, have};
use crate::report::{Ratio, Section, Table, Target, secs};

const WORKERS: [usize; 2] = [1, 2];
const ECHO_CONNECTIONS: usize = 100;
const ECHO_SIZE: usize = 64;

/// One measured load: rate, latency and server CPU.
struct Measured {
    per_second: f64,
    p50_us: f64,
    p99_us: f64,
    /// Server CPU time over the load, in cores (1.0 = one core busy).
    cpu_cores: f64,
}

#[derive(Clone, Copy)]
enum Kind {
    Echo,
    Http,
}

impl Kind {
    fn guest(self) -> &'static str {
        match self {
            Kind::Echo => "echo",
            Kind::Http => "http_hello",
        }
    }

    fn listen_flag(self) -> &'static str {
        match self {
            Kind::Echo => "--listen",
            Kind::Http => "--listen-http",
        }
    }
}

pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<Section>> {
    let paths = &ctx.paths;
    for (what, path, build) in [
        ("host", paths.bin("host"), "cargo build --release -p wasmloop-host"),
        ("the echo guest", paths.guest("echo"), "cargo build --profile guest --target wasm32-wasip2 -p echo"),
        (
            "the http-hello guest",
            paths.guest("http_hello"),
            "cargo build --profile guest --target wasm32-wasip2 -p http-hello",
        ),
    ] {
        ensure!(path.exists(), "{what} is not built ({} is missing); run `{build}`", path.display());
    }
    ensure!(have("wrk"), "wrk is not installed (bench/install-tools installs it)");
    let rounds = ctx.pick(3, 1);
    let echo_warmup = ctx.pick(Duration::from_secs(1), Duration::from_millis(100));
    let echo_window = ctx.pick(Duration::from_secs(3), Duration::from_millis(200));
    let http_secs = ctx.pick(5, 1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    let mut section = Section::new(
        "Workers: one loop per core (`--workers 1` vs `--workers 2`)",
        &format!(
            "The same `host` with one and with two workers (each its own loop, thread and guest instance, \
             `SO_REUSEPORT` listeners). Echo: the closed-loop echo client (one thread) on {ECHO_CONNECTIONS} \
             connections × {ECHO_SIZE} B, {} warm-up then a {} window. HTTP: `guests/http-hello` on \
             `--listen-http`, `wrk -t1 -c64 -d{http_secs}s --latency`. {rounds} round(s), the two settings \
             alternating, a fresh host each time; the median round is shown. Nothing is pinned: this machine \
             has {cores} cores and the load generator runs on them too. Server CPU is the host's CPU time over \
             the load, in cores.",
            secs(echo_warmup),
            secs(echo_window),
        ),
    );
    let mut table = Table::new(&["load", "workers", "per second", "p50", "p99", "server CPU (cores)"]);
    for kind in [Kind::Echo, Kind::Http] {
        let mut runs: [Vec<Measured>; 2] = Default::default();
        for round in 0..rounds {
            for k in 0..WORKERS.len() {
                let i = (k + round) % WORKERS.len();
                let workers = WORKERS[i];
                let server = start(ctx, kind, workers)?;
                let m = match kind {
                    Kind::Echo => measure_echo(&server, echo_warmup, echo_window),
                    Kind::Http => measure_http(&server, http_secs),
                }
                .with_context(|| format!("{} with --workers {workers}", kind.guest()))?;
                eprintln!(
                    "workers {:<10} --workers {workers}, round {}/{rounds}: {:>9.0}/s, p99 {}, CPU {:.2}",
                    kind.guest(),
                    round + 1,
                    m.per_second,
                    latency(m.p99_us),
                    m.cpu_cores
                );
                runs[i].push(m);
            }
        }
        let load = match kind {
            Kind::Echo => format!("echo {ECHO_SIZE} B × {ECHO_CONNECTIONS} conns (msg/s)"),
            Kind::Http => "HTTP hello, wrk -c64 (req/s)".to_string(),
        };
        for (workers, runs) in WORKERS.iter().zip(&runs) {
            let m = median(runs);
            table.row(vec![
                load.clone(),
                workers.to_string(),
                format!("{:.0}", m.per_second),
                latency(m.p50_us),
                latency(m.p99_us),
                format!("{:.2}", m.cpu_cores),
            ]);
        }
        let [one, two] = &runs;
        let short = match kind {
            Kind::Echo => "echo",
            Kind::Http => "HTTP hello",
        };
        section.ratios.push(Ratio::new(
            &format!("{short}: --workers 2 / --workers 1"),
            median(two).per_second / median(one).per_second,
            Target::None,
        ));
        if rounds > 1 {
            let list = |runs: &[Measured]| runs.iter().map(|m| format!("{:.0}", m.per_second)).collect::<Vec<_>>();
            section.notes.push(format!(
                "{short} per round: --workers 1 {}; --workers 2 {}.",
                list(one).join(", "),
                list(two).join(", ")
            ));
        }
    }
    section.tables.push(table);
    section.notes.push(format!(
        "On {cores} cores a second worker competes with the load generator (echo client or wrk) for CPU; \
         on a machine with cores to spare for the client the ratio would be closer to the number of workers."
    ));
    Ok(vec![section])
}

fn start(ctx: &Ctx, kind: Kind, workers: usize) -> anyhow::Result<Server> {
    let paths = &ctx.paths;
    let cache = paths.scratch(&format!("workers-{}-cache", kind.guest()));
    let mut cmd = Command::new(paths.bin("host"));
    cmd.arg("run")
        .arg(paths.guest(kind.guest()))
        .args([kind.listen_flag(), "127.0.0.1:0", "--workers", &workers.to_string()])
        .args(["--max-connections", "20000", "--cache-dir"])
        .arg(&cache);
    let server =
        Server::spawn_logged(cmd, Some("ready")).with_context(|| format!("starting host --workers {workers}"))?;
    if let Kind::Http = kind {
        verify(server.addr).context("http-hello does not answer")?;
    }
    Ok(server)
}

fn measure_echo(server: &Server, warmup: Duration, window: Duration) -> anyhow::Result<Measured> {
    let load = Load { connections: ECHO_CONNECTIONS, size: ECHO_SIZE, warmup, window, cpu: None };
    let before = server.usage();
    let started = Instant::now();
    let outcome = echo_client::run(server.addr, &load)?;
    let wall = started.elapsed();
    Ok(Measured {
        per_second: outcome.per_second(),
        p50_us: outcome.percentile_micros(0.5),
        p99_us: outcome.percentile_micros(0.99),
        cpu_cores: cores_used(server, &before, wall),
    })
}

fn measure_http(server: &Server, secs: u32) -> anyhow::Result<Measured> {
    let before = server.usage();
    let started = Instant::now();
    let run = wrk(server.addr, secs)?;
    let wall = started.elapsed();
    ensure!(run.errors == 0, "wrk counted {} socket errors or non-2xx answers", run.errors);
    Ok(Measured {
        per_second: run.requests_per_sec,
        p50_us: run.p50_us,
        p99_us: run.p99_us,
        cpu_cores: cores_used(server, &before, wall),
    })
}

fn cores_used(server: &Server, before: &Usage, wall: Duration) -> f64 {
    server.usage().since(before).cpu.as_secs_f64() / wall.as_secs_f64()
}

/// The median run by rate (the lower middle one for an even count).
fn median(runs: &[Measured]) -> &Measured {
    let mut sorted: Vec<&Measured> = runs.iter().collect();
    sorted.sort_by(|a, b| a.per_second.total_cmp(&b.per_second));
    sorted[(sorted.len() - 1) / 2]
}
