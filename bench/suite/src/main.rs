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
mod procs;
mod report;
mod startup;
mod timers;

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
    /// timers, startup.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Where to write the report [default: bench/RESULTS.md; with --smoke,
    /// target/bench-scratch/RESULTS-smoke.md].
    #[arg(long)]
    out: Option<PathBuf>,
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
];

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(unknown) = args.only.iter().find(|n| !BENCHMARKS.iter().any(|(name, _)| name == n)) {
        eprintln!("unknown benchmark `{unknown}`; known: echo, http, conns, idle, timers, startup");
        return ExitCode::from(2);
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
