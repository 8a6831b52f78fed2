//! Startup: from exec to the first connection served, with the guest
//! compiled afresh (`--no-cache`) and loaded from the compiled cache
//! (`--cache-dir`, primed by one run).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::Ctx;
use crate::report::{Ratio, Section, Table, Target};

/// How long a start may take at most (a cold compile on a busy machine).
const LIMIT: Duration = Duration::from_secs(60);
/// Between connect attempts while the host is not listening yet.
const RETRY: Duration = Duration::from_micros(100);

pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<Section>> {
    let runs = ctx.pick(10, 2);
    let guest = ctx.paths.guest("echo");
    let cache = ctx.paths.scratch("startup-cache");

    let cold: Vec<Duration> = (0..runs).map(|_| start_once(ctx, &guest, None)).collect::<anyhow::Result<_>>()?;
    // Prime the cache, then check it holds an entry.
    start_once(ctx, &guest, Some(&cache)).context("priming the compiled cache")?;
    let entries = std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0);
    if entries == 0 {
        bail!("the host wrote nothing to its cache directory {}", cache.display());
    }
    let warm: Vec<Duration> =
        (0..runs).map(|_| start_once(ctx, &guest, Some(&cache))).collect::<anyhow::Result<_>>()?;

    let cold = Stats::of(cold);
    let warm = Stats::of(warm);
    let mut section = Section::new(
        "startup",
        &format!(
            "Exec to the first connection served, echo guest ({} KiB): spawn `host run echo.wasm --listen \
             127.0.0.1:PORT` on a free port chosen beforehand, connect every {} µs until the port accepts, \
             then send 1 byte and wait for its echo; the time is taken from just before the spawn to the \
             echoed byte. *Cold* compiles the guest (`--no-cache`); *warm* loads it from `--cache-dir`, \
             primed by one run. {runs} runs each; the host is killed after each.",
            std::fs::metadata(&guest).map(|m| m.len() / 1024).unwrap_or(0),
            RETRY.as_micros()
        ),
    );
    let mut table = Table::new(&["start", "runs", "median (ms)", "min (ms)", "max (ms)"]);
    for (name, s) in [("cold (`--no-cache`, compiles)", &cold), ("warm (`--cache-dir`, cached code)", &warm)] {
        table.row(vec![name.into(), runs.to_string(), ms(s.median), ms(s.min), ms(s.max)]);
    }
    section.tables.push(table);
    section.ratios.push(Ratio::new("warm start, median ms", warm.median.as_secs_f64() * 1e3, Target::AtMost(20.0)));
    section.ratios.push(Ratio::new(
        "cold / warm, median",
        cold.median.as_secs_f64() / warm.median.as_secs_f64(),
        Target::None,
    ));
    Ok(vec![section])
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

struct Stats {
    median: Duration,
    min: Duration,
    max: Duration,
}

impl Stats {
    fn of(mut runs: Vec<Duration>) -> Stats {
        runs.sort();
        let median = if runs.len() % 2 == 1 {
            runs[runs.len() / 2]
        } else {
            (runs[runs.len() / 2 - 1] + runs[runs.len() / 2]) / 2
        };
        Stats { median, min: runs[0], max: runs[runs.len() - 1] }
    }
}

/// A free loopback port: bound, read, released. A new one per run, since
/// the previous run's connection leaves its port in TIME_WAIT.
fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?)
}

/// Kills the host when dropped.
struct Host(Child);

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Host {
    fn failed(&mut self, why: &str) -> anyhow::Error {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let mut said = String::new();
        if let Some(stderr) = self.0.stderr.as_mut() {
            let _ = stderr.read_to_string(&mut said);
        }
        anyhow::anyhow!("{why}; the host said:\n{said}")
    }
}

/// One start: spawn to the first echoed byte.
fn start_once(ctx: &Ctx, guest: &Path, cache: Option<&Path>) -> anyhow::Result<Duration> {
    let addr = free_port()?;
    let mut cmd = Command::new(ctx.paths.bin("host"));
    cmd.arg("run").arg(guest).arg("--listen").arg(addr.to_string());
    match cache {
        Some(dir) => cmd.arg("--cache-dir").arg(dir),
        None => cmd.arg("--no-cache"),
    };
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).env("NO_COLOR", "1");

    let start = Instant::now();
    let mut host = Host(cmd.spawn().context("starting the host")?);
    let mut conn = loop {
        match TcpStream::connect(addr) {
            Ok(conn) => break conn,
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                if let Ok(Some(status)) = host.0.try_wait() {
                    return Err(host.failed(&format!("the host exited ({status}) before listening")));
                }
                if start.elapsed() > LIMIT {
                    return Err(host.failed(&format!("the host did not listen on {addr} within {LIMIT:?}")));
                }
                thread::sleep(RETRY);
            }
            Err(e) => return Err(host.failed(&format!("connecting to {addr}: {e}"))),
        }
    };
    conn.set_nodelay(true)?;
    conn.set_read_timeout(Some(LIMIT))?;
    let mut byte = [0u8; 1];
    let echoed = conn.write_all(b"x").and_then(|()| conn.read_exact(&mut byte));
    let elapsed = start.elapsed();
    if let Err(e) = echoed {
        return Err(host.failed(&format!("no echo: {e}")));
    }
    if byte != *b"x" {
        return Err(host.failed(&format!("echoed {byte:?} for `x`")));
    }
    drop(conn);
    drop(host);
    Ok(elapsed)
}
