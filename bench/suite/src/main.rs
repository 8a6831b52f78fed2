//! `bench`: runs wasmloop's benchmarks side by side with the alternatives
//! and writes `bench/RESULTS.md`. Start it through `bench/run`, which
//! installs the tools and builds every contender first.
//!
//! Each benchmark is a module with `run(&Ctx) -> Result<Vec<Section>>`.
//! Contenders of one benchmark run one after another in this one run, so
//! their ratios hold even on a noisy machine. `--smoke` runs everything with
//! tiny counts (seconds in all) to prove the suite still works; it asserts
//! nothing about speed.

mod conns;
mod echo;
mod echo_client;
mod http;
mod idle;
mod metrics;
mod procs;
mod report;
mod startup;
mod timers;
mod workers;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use crate::procs::Paths;
use crate::report::{Machine, Section};

#[derive(Parser)]
#[command(name = "bench", about = "Runs wasmloop's benchmarks and writes bench/RESULTS.md")]
struct Args {
    /// Tiny counts and short runs: checks the suite works, measures nothing.
    #[arg(long)]
    smoke: bool,
    /// Run only these benchmarks (comma-separated): echo, http, conns, idle,
    /// timers, startup, workers, metrics.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Where to write the report [default: bench/RESULTS.md; with --smoke,
    /// target/bench-scratch/RESULTS-smoke.md].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Instead of the suite: drive the echo client against a server that is
    /// already running (for profiling it by hand), e.g.
    /// `--echo-load 127.0.0.1:7000 --connections 100 --size 64 --seconds 10`.
    #[arg(long, value_name = "ADDR")]
    echo_load: Option<std::net::SocketAddr>,
    #[arg(long, default_value_t = 100, requires = "echo_load")]
    connections: usize,
    #[arg(long, default_value_t = 64, requires = "echo_load")]
    size: usize,
    #[arg(long, default_value_t = 10, requires = "echo_load")]
    seconds: u64,
}

/// What every benchmark gets.
pub struct Ctx {
    pub paths: Paths,
    pub smoke: bool,
}

impl Ctx {
    /// `full` normally, `smoke` in a smoke run.
    pub fn pick<T>(&self, full: T, smoke: T) -> T {
        if self.smoke { smoke } else { full }
    }
}

type Benchmark = fn(&Ctx) -> anyhow::Result<Vec<Section>>;

const BENCHMARKS: &[(&str, Benchmark)] = &[
    ("echo", echo::run),
    ("http", http::run),
    ("conns", conns::run),
    ("idle", idle::run),
    ("timers", timers::run),
    ("startup", startup::run),
    ("workers", workers::run),
    ("metrics", metrics::run),
];

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(unknown) = args.only.iter().find(|n| !BENCHMARKS.iter().any(|(name, _)| name == n)) {
        eprintln!("unknown benchmark `{unknown}`; known: echo, http, conns, idle, timers, startup, workers, metrics");
        return ExitCode::from(2);
    }
    if let Some(addr) = args.echo_load {
        let load = echo_client::Load {
            connections: args.connections,
            size: args.size,
            warmup: std::time::Duration::from_secs(1),
            window: std::time::Duration::from_secs(args.seconds),
            cpu: None,
        };
        return match echo_client::run(addr, &load) {
            Ok(out) => {
                println!(
                    "{:.0} msg/s, p50 {:.1} µs, p99 {:.1} µs",
                    out.per_second(),
                    out.percentile_micros(0.5),
                    out.percentile_micros(0.99)
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("echo load failed: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let ctx = Ctx { paths: Paths::find(), smoke: args.smoke };
    let mut sections = Vec::new();
    let mut failed = Vec::new();
    for (name, run) in BENCHMARKS {
        if !args.only.is_empty() && !args.only.iter().any(|n| n == name) {
            continue;
        }
        eprintln!("== {name}");
        match run(&ctx) {
            Ok(mut done) => sections.append(&mut done),
            Err(e) => {
                eprintln!("benchmark {name} failed: {e:#}");
                let mut section = Section::new(name, "This benchmark failed in this run.");
                section.notes.push(format!("error: {e:#}"));
                sections.push(section);
                failed.push(*name);
            }
        }
    }
    let out = args.out.unwrap_or_else(|| {
        if args.smoke {
            ctx.paths.scratch("report").join("RESULTS-smoke.md")
        } else {
            ctx.paths.root.join("bench/RESULTS.md")
        }
    });
    let text = report::render(&Machine::read(), &sections, args.smoke);
    if let Err(e) = std::fs::write(&out, text) {
        eprintln!("cannot write {}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    eprintln!("wrote {}", out.display());
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("failed: {}", failed.join(", "));
        ExitCode::FAILURE
    }
}
