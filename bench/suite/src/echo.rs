//! Echo: `host` + the echo guest against the same reactor with a native
//! handler (`echo-native`: what dispatching into wasm costs) and against a
//! tokio `current_thread` server (`echo-tokio`), with small messages
//! (messages/s, latency) and bulk 64 KiB chunks (MB/s).
//!
//! Every measurement starts a fresh server and drives it with the
//! closed-loop client in [`crate::echo_client`]. Contenders alternate within
//! each round and each runs several rounds; the median round is reported,
//! so a burst of load from elsewhere on the machine hits one round of one
//! contender rather than a whole column.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

use crate::Ctx;
use crate::echo_client::{self, Load, Outcome};
use crate::procs::{self, Server};
use crate::report::{Ratio, Section, Table, Target, load_average, load_note, secs};

const SMALL: usize = 64;
const BULK: usize = 64 * 1024;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Contender {
    Wasm,
    Native,
    Tokio,
}

const CONTENDERS: [Contender; 3] = [Contender::Wasm, Contender::Native, Contender::Tokio];

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Contender::Wasm => "wasmloop `host` + echo.wasm",
            Contender::Native => "same reactor, native handler (`echo-native`)",
            Contender::Tokio => "tokio current_thread (`echo-tokio`)",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Contender::Wasm => "wasm",
            Contender::Native => "native",
            Contender::Tokio => "tokio",
        }
    }
}

/// One run of one contender.
struct Measured {
    outcome: Outcome,
    /// Server CPU time (user + system) over the whole client run.
    server_cpu: Duration,
    /// How long the client run took, connecting included.
    elapsed: Duration,
}

impl Measured {
    /// Server CPU per round trip (warm-up included on both sides), µs.
    fn cpu_per_round_trip_micros(&self) -> f64 {
        self.server_cpu.as_secs_f64() * 1e6 / self.outcome.total_round_trips.max(1) as f64
    }

    /// Share of one core the server used.
    fn server_busy(&self) -> f64 {
        self.server_cpu.as_secs_f64() / self.elapsed.as_secs_f64()
    }
}

struct Bench<'a> {
    ctx: &'a Ctx,
    cache_dir: PathBuf,
    /// Server on CPU 1, client on CPU 0, when `taskset` and two CPUs exist.
    pin: bool,
    warmup: Duration,
    window: Duration,
    rounds: usize,
}

pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<Section>> {
    let paths = &ctx.paths;
    for (what, path, build) in [
        ("host", paths.bin("host"), "cargo build --release -p wasmloop-host"),
        ("echo-native", paths.bin("echo-native"), "cargo build --release -p wasmloop-bench-suite"),
        ("echo-tokio", paths.bin("echo-tokio"), "cargo build --release -p wasmloop-bench-suite"),
        ("the echo guest", paths.guest("echo"), "cargo build --profile guest --target wasm32-wasip2 -p echo"),
    ] {
        if !path.exists() {
            bail!("{what} is not built ({} is missing); run `{build}`", path.display());
        }
    }
    let small_conns: Vec<usize> = ctx.pick(vec![1, 100, 1000], vec![1, 10]);
    raise_fd_limit(small_conns.iter().max().copied().unwrap_or(1) + 256)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let bench = Bench {
        ctx,
        cache_dir: paths.scratch("echo"),
        pin: cores >= 2 && procs::have("taskset"),
        warmup: ctx.pick(Duration::from_secs(1), Duration::from_millis(100)),
        window: ctx.pick(Duration::from_secs(3), Duration::from_millis(200)),
        rounds: ctx.pick(5, 1),
    };
    Ok(vec![bench.small(&small_conns)?, bench.bulk()?])
}

/// Raises the soft descriptor limit to the hard one (the servers we start
/// inherit it) and checks that `needed` fit.
fn raise_fd_limit(needed: usize) -> anyhow::Result<()> {
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        setrlimit(Resource::Nofile, Rlimit { current: limit.maximum, maximum: limit.maximum })
            .context("raising RLIMIT_NOFILE to its hard limit")?;
    }
    let now = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    if now < needed as u64 {
        bail!("the descriptor limit is {now}, the echo benchmark needs {needed}; raise the hard limit (ulimit -Hn)");
    }
    Ok(())
}

impl Bench<'_> {
    fn small(&self, conns: &[usize]) -> anyhow::Result<Section> {
        let mut section = Section::new(
            &format!("Echo, small messages ({SMALL} B)"),
            &format!(
                "A closed-loop client on one thread (edge-triggered epoll, one `write` and one `read` per round trip, \
                 so it is no heavier than the servers) opens N connections; on each it sends {SMALL} bytes, waits \
                 until all {SMALL} came back and sends again at once. After a {} warm-up, the round trips that \
                 complete in a {} window are counted (messages/s) and their latency, first byte sent to last byte \
                 back, goes into a histogram (p50, p99). The contenders: `host` running the echo guest; the same \
                 reactor (`wasmloop-reactor`) doing the same per-event work with a native Rust handler, so \
                 wasm/native is the cost of dispatching into WebAssembly; and a tokio `current_thread` server \
                 with a task per connection. Each contender runs {} round(s), alternating with the others, with a \
                 fresh server each time; the table shows each contender's median round (by messages/s). {} \
                 Server CPU is the server's CPU time (user + system) per round trip, warm-up included, median over the \
                 rounds: time spent waiting for a CPU does not count, so it suffers less from other load than the \
                 rates. Server busy is the share of one core the server used in the median round.",
                secs(self.warmup),
                secs(self.window),
                self.rounds,
                self.placement(),
            ),
        );
        let load_before = load_average();
        let mut table = Table::new(&[
            "contender",
            "connections",
            "messages/s",
            "p50 µs",
            "p99 µs",
            "server CPU µs/msg",
            "server busy",
        ]);
        for &n in conns {
            let load =
                Load { connections: n, size: SMALL, warmup: self.warmup, window: self.window, cpu: self.client_cpu() };
            let rounds = self.rounds(&load)?;
            for (c, runs) in CONTENDERS.iter().zip(&rounds) {
                let m = median(runs);
                table.row(vec![
                    c.name().into(),
                    n.to_string(),
                    format!("{:.0}", m.outcome.per_second()),
                    format!("{:.1}", m.outcome.percentile_micros(0.50)),
                    format!("{:.1}", m.outcome.percentile_micros(0.99)),
                    format!("{:.2}", median_cpu(runs)),
                    format!("{:.0}%", m.server_busy() * 100.0),
                ]);
            }
            let plural = if n == 1 { "conn" } else { "conns" };
            let [wasm, native, tokio] = &rounds;
            section.ratios.push(Ratio::new(
                &format!("wasm / native ({n} {plural})"),
                ratio(wasm, native, |m| m.outcome.per_second()),
                Target::AtLeast(0.90),
            ));
            section.ratios.push(Ratio::new(
                &format!("wasm / tokio current_thread ({n} {plural})"),
                ratio(wasm, tokio, |m| m.outcome.per_second()),
                Target::AtLeast(1.0),
            ));
            section.ratios.push(Ratio::new(
                &format!("server CPU per message, wasm / native ({n} {plural})"),
                median_cpu(wasm) / median_cpu(native),
                Target::None,
            ));
            if self.rounds > 1 {
                section.notes.push(per_round_note(n, plural, wasm, native, tokio, |m| m.outcome.per_second()));
            }
        }
        section.tables.push(table);
        section.notes.push(load_note(load_before));
        section.notes.push(
            "Where the server is not busy close to 100% (always with 1 connection: a ping-pong waits on the client \
             and the kernel half the time), the client or the machine limits the rate and the rate ratios come \
             out closer to 1 than the servers' own costs; read the server CPU per message alongside."
                .into(),
        );
        Ok(section)
    }

    fn bulk(&self) -> anyhow::Result<Section> {
        let n = 10;
        let mut section = Section::new(
            &format!("Echo, bulk ({} KiB, {n} connections)", BULK / 1024),
            &format!(
                "The same closed-loop client with {n} connections, each sending a {} KiB chunk and waiting until \
                 all of it came back before sending the next. MB/s counts the chunks echoed in a {} window (after a \
                 {} warm-up), one way, in 10^6 bytes. Same three contenders, {} round(s) alternating, median round \
                 shown; server CPU per MB echoed is the median over the rounds. {}",
                BULK / 1024,
                secs(self.window),
                secs(self.warmup),
                self.rounds,
                self.placement(),
            ),
        );
        let load_before = load_average();
        let load =
            Load { connections: n, size: BULK, warmup: self.warmup, window: self.window, cpu: self.client_cpu() };
        let rounds = self.rounds(&load)?;
        let mb_per_s = |m: &Measured| m.outcome.per_second() * BULK as f64 / 1e6;
        let mut table = Table::new(&["contender", "MB/s", "server CPU µs/MB", "server busy"]);
        for (c, runs) in CONTENDERS.iter().zip(&rounds) {
            let m = median(runs);
            let cpu_per_mb = median_cpu(runs) / (BULK as f64 / 1e6);
            table.row(vec![
                c.name().into(),
                format!("{:.0}", mb_per_s(m)),
                format!("{cpu_per_mb:.0}"),
                format!("{:.0}%", m.server_busy() * 100.0),
            ]);
        }
        section.tables.push(table);
        let [wasm, native, tokio] = &rounds;
        section.ratios.push(Ratio::new("wasm / native", ratio(wasm, native, mb_per_s), Target::AtLeast(0.90)));
        section.ratios.push(Ratio::new("wasm / tokio current_thread", ratio(wasm, tokio, mb_per_s), Target::None));
        section.ratios.push(Ratio::new(
            "server CPU per MB, wasm / native",
            median_cpu(wasm) / median_cpu(native),
            Target::None,
        ));
        if self.rounds > 1 {
            section.notes.push(per_round_note(n, "conns", wasm, native, tokio, mb_per_s));
        }
        section.notes.push(load_note(load_before));
        Ok(section)
    }

    fn placement(&self) -> &'static str {
        if self.pin {
            "The server is pinned to CPU 1 and the client to CPU 0 (`taskset`)."
        } else {
            "Server and client are not pinned (no `taskset` or a single CPU)."
        }
    }

    fn client_cpu(&self) -> Option<usize> {
        self.pin.then_some(0)
    }

    /// `self.rounds` runs of each contender for `load`, in [`CONTENDERS`]
    /// order; the order within a round rotates so no contender always goes
    /// first.
    fn rounds(&self, load: &Load) -> anyhow::Result<[Vec<Measured>; 3]> {
        let mut runs: [Vec<Measured>; 3] = Default::default();
        for round in 0..self.rounds {
            for k in 0..CONTENDERS.len() {
                let i = (k + round) % CONTENDERS.len();
                let contender = CONTENDERS[i];
                let m = self.measure(contender, load).with_context(|| {
                    format!("{} with {} connections × {} B", contender.name(), load.connections, load.size)
                })?;
                eprintln!(
                    "echo {:>5} B × {:>4} conns, round {}/{}, {:<6}: {:>9.0} msg/s, p99 {:>8.1} µs, server busy {:.0}%",
                    load.size,
                    load.connections,
                    round + 1,
                    self.rounds,
                    contender.short(),
                    m.outcome.per_second(),
                    m.outcome.percentile_micros(0.99),
                    m.server_busy() * 100.0,
                );
                runs[i].push(m);
            }
        }
        Ok(runs)
    }

    fn measure(&self, contender: Contender, load: &Load) -> anyhow::Result<Measured> {
        let server = self.start(contender)?;
        let before = server.usage();
        let started = Instant::now();
        let outcome = echo_client::run(server.addr, load)?;
        let elapsed = started.elapsed();
        let server_cpu = server.usage().since(&before).cpu;
        for line in server.problems() {
            eprintln!("  {}: {line}", contender.short());
        }
        Ok(Measured { outcome, server_cpu, elapsed })
    }

    fn start(&self, contender: Contender) -> anyhow::Result<Server> {
        let paths = &self.ctx.paths;
        let program = match contender {
            Contender::Wasm => paths.bin("host"),
            Contender::Native => paths.bin("echo-native"),
            Contender::Tokio => paths.bin("echo-tokio"),
        };
        let mut cmd = if self.pin {
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", "1"]).arg(program);
            cmd
        } else {
            Command::new(program)
        };
        match contender {
            Contender::Wasm => {
                cmd.arg("run")
                    .arg(paths.guest("echo"))
                    .args(["--listen", "127.0.0.1:0", "--max-connections", "20000", "--cache-dir"])
                    .arg(&self.cache_dir);
                Server::spawn_logged(cmd, Some("ready"))
            }
            Contender::Native | Contender::Tokio => {
                cmd.args(["--listen", "127.0.0.1:0"]);
                Server::spawn_logged(cmd, None)
            }
        }
    }
}

/// The median run by rate (the lower middle one for an even count).
fn median(runs: &[Measured]) -> &Measured {
    let mut sorted: Vec<&Measured> = runs.iter().collect();
    sorted.sort_by(|a, b| a.outcome.per_second().total_cmp(&b.outcome.per_second()));
    sorted[(sorted.len() - 1) / 2]
}

/// The median server CPU per round trip over the rounds, µs: less
/// sensitive than rates to other load on the machine (time spent waiting
/// for a CPU does not count).
fn median_cpu(runs: &[Measured]) -> f64 {
    let mut cpu: Vec<f64> = runs.iter().map(Measured::cpu_per_round_trip_micros).collect();
    cpu.sort_by(f64::total_cmp);
    cpu[(cpu.len() - 1) / 2]
}

/// Median of `a` over median of `b`, as the table shows them.
fn ratio(a: &[Measured], b: &[Measured], value: impl Fn(&Measured) -> f64) -> f64 {
    value(median(a)) / value(median(b))
}

/// The round-by-round ratios, to show how much the machine's noise moved
/// them.
fn per_round_note(
    n: usize,
    plural: &str,
    wasm: &[Measured],
    native: &[Measured],
    tokio: &[Measured],
    value: impl Fn(&Measured) -> f64,
) -> String {
    let list = |other: &[Measured]| {
        wasm.iter().zip(other).map(|(w, o)| format!("{:.2}", value(w) / value(o))).collect::<Vec<_>>().join(", ")
    };
    format!("{n} {plural}, ratio per round: wasm/native {}; wasm/tokio {}.", list(native), list(tokio))
}
