//! Many connections: one host loop holds N idle connections, each pinging
//! every few seconds, while one active client measures round-trip latency.
//! Reports the host's memory per connection and the active client's p99.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream as AsyncStream};

use crate::Ctx;
use crate::procs::Server;
use crate::report::{Ratio, Section, Table, Target};

/// The connection count the issue asks for.
const TARGET_CONNS: usize = 100_000;
/// Descriptors kept free under the limit for everything else (stdio, the
/// epoll and event descriptors, the listener, pipes, the active client).
const FD_MARGIN: u64 = 200;
/// Connects in flight at once.
const CONNECT_BATCH: usize = 256;
/// Connections per source address (one address has ~28k ephemeral ports).
const PER_SOURCE: usize = 20_000;
/// What an idle connection sends and expects back.
const PING: &[u8; 16] = b"ping 0123456789\n";
/// The active client's message.
const MESSAGE: [u8; 64] = [b'a'; 64];

pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<Section>> {
    let hard = raise_fd_limit()?;
    let n = ctx.pick((hard.saturating_sub(FD_MARGIN) as usize).min(TARGET_CONNS), 200);
    if n < 100 {
        bail!("the descriptor limit ({hard}) leaves room for only {n} connections");
    }
    let period = ctx.pick(Duration::from_secs(5), Duration::from_millis(500));
    let window = ctx.pick(Duration::from_secs(10), Duration::from_secs(1));
    let sources = n.div_ceil(PER_SOURCE).max(4);

    // Load the guest from a primed compiled cache: compiling in the measured
    // process would free heap memory that connections then reuse unseen.
    let cache = ctx.paths.scratch("conns-cache");
    let host = |max_connections: usize| {
        let mut cmd = Command::new(ctx.paths.bin("host"));
        cmd.arg("run")
            .arg(ctx.paths.guest("echo"))
            .args(["--listen", "127.0.0.1:0", "--cache-dir"])
            .arg(&cache)
            .arg("--max-connections")
            .arg(max_connections.to_string());
        Server::spawn_logged(cmd, Some("ready"))
    };
    drop(host(100).context("priming the compiled cache")?);
    let server = host(n + 100)?;
    let rss_0 = server.rss_kib();
    let wasm_0 = linear_memory_kib(server.pid());

    // The idle connections, on their own thread and runtime.
    let shared = Arc::new(Shared::default());
    let driver = {
        let shared = shared.clone();
        let addr = server.addr;
        thread::Builder::new().name("idle-conns".into()).spawn(move || drive(addr, n, sources, period, &shared))?
    };
    let connect_start = Instant::now();
    let limit = Duration::from_secs(120);
    wait_for(&shared, &driver, limit, "connecting", || shared.connected.load(Relaxed) >= n)?;
    let connect_time = connect_start.elapsed();
    wait_for(&shared, &driver, limit, "the first ping round", || shared.pinged.load(Relaxed) >= n)?;
    let rss_n = server.rss_kib();
    let wasm_n = linear_memory_kib(server.pid());
    let pings_before = shared.pings.load(Relaxed);

    // The active client.
    let load = crate::report::load_average();
    let usage_before = server.usage();
    let active = active_client(server.addr, window)?;
    let usage = server.usage().since(&usage_before);
    let pings_during = shared.pings.load(Relaxed) - pings_before;
    let rss_end = server.rss_kib();

    shared.stop.store(true, Relaxed);
    driver.join().map_err(|_| anyhow::anyhow!("the idle-connection thread panicked"))??;
    if let Some(e) = shared.error.lock().unwrap_or_else(PoisonError::into_inner).take() {
        bail!("{} idle connections failed; the first: {e}", shared.errors.load(Relaxed));
    }
    let lines = server.new_lines();
    drop(server);

    let per_conn = |rss: u64, wasm: u64| (rss.saturating_sub(wasm) as f64 * 1024.0) / n as f64;
    let total_per_conn = (rss_n.saturating_sub(rss_0) as f64 * 1024.0) / n as f64;
    let host_per_conn = per_conn(rss_n.saturating_sub(rss_0), wasm_n.saturating_sub(wasm_0));
    let p = |q: f64| active.latency.value_at_quantile(q) as f64 / 1000.0;

    let mut section = Section::new(
        "many connections",
        &format!(
            "One host (echo guest loaded from a primed `--cache-dir`, one loop thread) holds {n} idle TCP connections from {sources} source \
             addresses (127.0.0.2 …), opened {CONNECT_BATCH} at a time by a tokio current-thread client. \
             Each idle connection sends a 16-byte ping every {} s (phases spread evenly) and reads the \
             echo. Once all are connected and each has pinged once, the host's RSS is read again; RSS per \
             connection = (that − RSS right after `ready`) / {n}. Then one more connection runs \
             closed-loop 64-byte round trips for {} s (blocking client, `TCP_NODELAY`) while the pings \
             go on; its latency goes into a histogram. Kernel socket buffers are not in RSS; the guest's \
             linear memory is (counted from /proc/PID/smaps: the writable mappings just below a wasm \
             memory reservation) and is shown apart.",
            period.as_secs_f64(),
            window.as_secs_f64()
        ),
    );
    let mut table = Table::new(&[
        "connections",
        "connect (s)",
        "RSS at ready (KiB)",
        "RSS, all connected (KiB)",
        "RSS at end (KiB)",
        "guest memory, ready → connected (KiB)",
        "RSS/conn (B)",
        "RSS/conn without guest memory (B)",
    ]);
    table.row(vec![
        n.to_string(),
        format!("{:.1}", connect_time.as_secs_f64()),
        rss_0.to_string(),
        rss_n.to_string(),
        rss_end.to_string(),
        format!("{wasm_0} → {wasm_n}"),
        format!("{total_per_conn:.0}"),
        format!("{host_per_conn:.0}"),
    ]);
    section.tables.push(table);
    let mut table = Table::new(&[
        "active client",
        "round trips",
        "p50 (µs)",
        "p99 (µs)",
        "p99.9 (µs)",
        "max (µs)",
        "idle pings meanwhile",
        "host CPU (s)",
    ]);
    table.row(vec![
        format!("64 B, {:.0} s", window.as_secs_f64()),
        active.latency.len().to_string(),
        format!("{:.0}", p(0.5)),
        format!("{:.0}", p(0.99)),
        format!("{:.0}", p(0.999)),
        format!("{:.0}", active.latency.max() as f64 / 1000.0),
        pings_during.to_string(),
        format!("{:.2}", usage.cpu.as_secs_f64()),
    ]);
    section.tables.push(table);
    section.ratios.push(Ratio::new(
        "host RSS per connection beyond guest memory, KiB",
        host_per_conn / 1024.0,
        Target::AtMost(2.0),
    ));
    section.ratios.push(Ratio::new("host RSS per connection, all of it, KiB", total_per_conn / 1024.0, Target::None));
    section.ratios.push(Ratio::new("active client p99, ms", p(0.99) / 1000.0, Target::AtMost(1.0)));
    if n < TARGET_CONNS {
        section.notes.push(format!(
            "The target is {TARGET_CONNS} connections; this run used {n}. The machine's hard limit on open \
             descriptors (RLIMIT_NOFILE) is {hard} and cannot be raised without CAP_SYS_RESOURCE, and both \
             the host and this client need one descriptor per connection; the benchmark raises its soft \
             limit to the hard limit (the host inherits it) and keeps {FD_MARGIN} spare."
        ));
    }
    section.notes.push(format!(
        "The idle client shares the machine's cores with the host and the active client; the {} idle \
         pings per second are work for the same loop thread that serves the active connection.",
        (n as f64 / period.as_secs_f64()).round()
    ));
    if let Some(load) = load {
        section.notes.push(format!(
            "Load average (1 min) when the active client started: {load}, on {} cores. The tail latency \
             follows the machine's load: with the host, both clients and other processes competing for \
             the cores, the loop thread waits for a CPU now and then.",
            thread::available_parallelism().map_or(1, |n| n.get())
        ));
    }
    if lines.iter().any(|l| l.contains("WARN") || l.contains("ERROR")) {
        section.notes.push(format!("The host logged: {}", lines.join(" / ")));
    }
    Ok(vec![section])
}

/// Raises this process's soft RLIMIT_NOFILE to its hard limit (children
/// inherit it) and returns that limit.
fn raise_fd_limit() -> anyhow::Result<u64> {
    let limit = getrlimit(Resource::Nofile);
    // No hard limit: go as high as the connection target needs.
    let hard = limit.maximum.unwrap_or(TARGET_CONNS as u64 + FD_MARGIN);
    if limit.current.is_some_and(|soft| soft < hard) {
        setrlimit(Resource::Nofile, Rlimit { current: Some(hard), maximum: limit.maximum })
            .context("raising RLIMIT_NOFILE to its hard limit")?;
    }
    Ok(hard)
}

/// The RSS of the guests' linear memories, KiB: wasmtime reserves each
/// memory as one large region (4 GiB + guard) and makes its accessible part
/// writable, so that part is the run of writable mappings right below an
/// inaccessible mapping of at least 1 GiB.
fn linear_memory_kib(pid: u32) -> u64 {
    struct Mapping {
        start: u64,
        end: u64,
        writable: bool,
        inaccessible: bool,
        rss_kib: u64,
    }
    let Ok(smaps) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) else { return 0 };
    let mut maps: Vec<Mapping> = Vec::new();
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let (Some(first), Some(second)) = (words.next(), words.next()) else { continue };
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        {
            maps.push(Mapping {
                start,
                end,
                writable: second.starts_with("rw"),
                inaccessible: second.starts_with("---"),
                rss_kib: 0,
            });
        } else if first == "Rss:"
            && let Some(map) = maps.last_mut()
        {
            map.rss_kib = second.parse().unwrap_or(0);
        }
    }
    let mut total = 0;
    for i in 0..maps.len() {
        if !(maps[i].inaccessible && maps[i].end - maps[i].start >= 1 << 30) {
            continue;
        }
        let mut edge = maps[i].start;
        for below in maps[..i].iter().rev() {
            if below.end != edge || !below.writable {
                break;
            }
            total += below.rss_kib;
            edge = below.start;
        }
    }
    total
}

/// What the idle-connection thread tells the main thread.
#[derive(Default)]
struct Shared {
    connected: AtomicUsize,
    /// Connections that have had at least one ping echoed.
    pinged: AtomicUsize,
    pings: AtomicU64,
    errors: AtomicUsize,
    error: Mutex<Option<String>>,
    stop: AtomicBool,
}

impl Shared {
    fn fail(&self, what: String) {
        self.errors.fetch_add(1, Relaxed);
        self.error.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(what);
    }
}

/// Waits (polling every 10 ms, at most `limit`) until `done`, failing if the
/// idle-connection thread stopped or a connection failed.
fn wait_for(
    shared: &Shared,
    driver: &thread::JoinHandle<anyhow::Result<()>>,
    limit: Duration,
    what: &str,
    done: impl Fn() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !done() {
        if let Some(e) = shared.error.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
            bail!("{what}: {} connections failed; the first: {e}", shared.errors.load(Relaxed));
        }
        if driver.is_finished() {
            bail!("{what}: the idle-connection thread stopped early");
        }
        if Instant::now() > deadline {
            bail!(
                "{what}: not done within {limit:?} ({} connected, {} pinged)",
                shared.connected.load(Relaxed),
                shared.pinged.load(Relaxed)
            );
        }
        thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// The idle connections: connects `n` in batches, then pings on each every
/// `period` until told to stop.
fn drive(addr: SocketAddr, n: usize, sources: usize, period: Duration, shared: &Arc<Shared>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut streams = Vec::with_capacity(n);
        let mut next = 0;
        while next < n {
            let mut batch = tokio::task::JoinSet::new();
            for i in next..(next + CONNECT_BATCH).min(n) {
                let source = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 2 + (i % sources) as u8), 0));
                batch.spawn(connect(source, addr));
            }
            next = (next + CONNECT_BATCH).min(n);
            while let Some(done) = batch.join_next().await {
                let stream = done?.context("connecting an idle connection")?;
                streams.push(stream);
                shared.connected.fetch_add(1, Relaxed);
            }
            if shared.stop.load(Relaxed) {
                return Ok(());
            }
        }
        let start = tokio::time::Instant::now();
        for (i, stream) in streams.into_iter().enumerate() {
            let first = start + period.mul_f64(i as f64 / n as f64);
            tokio::spawn(ping(stream, first, period, shared.clone()));
        }
        while !shared.stop.load(Relaxed) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    })
    // Dropping the runtime drops the ping tasks and closes their sockets.
}

async fn connect(source: SocketAddr, addr: SocketAddr) -> std::io::Result<AsyncStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(source)?;
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn ping(mut stream: AsyncStream, first: tokio::time::Instant, period: Duration, shared: Arc<Shared>) {
    let mut next = first;
    let mut echoed = [0u8; PING.len()];
    let mut once = false;
    loop {
        tokio::time::sleep_until(next).await;
        if shared.stop.load(Relaxed) {
            return;
        }
        let round = async {
            stream.write_all(PING).await?;
            stream.read_exact(&mut echoed).await?;
            std::io::Result::Ok(())
        };
        if let Err(e) = round.await {
            shared.fail(format!("ping: {e}"));
            return;
        }
        if echoed != *PING {
            shared.fail(format!("ping echoed as {:?}", String::from_utf8_lossy(&echoed)));
            return;
        }
        if !once {
            once = true;
            shared.pinged.fetch_add(1, Relaxed);
        }
        shared.pings.fetch_add(1, Relaxed);
        next += period;
    }
}

struct Active {
    latency: Histogram<u64>,
}

/// Closed-loop 64-byte round trips for `window`, after a short warm-up.
fn active_client(addr: SocketAddr, window: Duration) -> anyhow::Result<Active> {
    let mut conn = TcpStream::connect(addr).context("connecting the active client")?;
    conn.set_nodelay(true)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut echoed = [0u8; MESSAGE.len()];
    for _ in 0..1000 {
        conn.write_all(&MESSAGE)?;
        conn.read_exact(&mut echoed).context("active client warm-up")?;
    }
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let start = Instant::now();
    while start.elapsed() < window {
        let sent = Instant::now();
        conn.write_all(&MESSAGE)?;
        conn.read_exact(&mut echoed).context("active client")?;
        latency.saturating_record((sent.elapsed().as_nanos() as u64).max(1));
    }
    if echoed != MESSAGE {
        bail!("the active client's message came back changed");
    }
    Ok(Active { latency })
}
