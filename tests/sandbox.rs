//! Hostile guests beside a well-behaved one. Every test runs the real host
//! with a TOML config of two (or more) guests on one loop: `echo`, whose
//! client keeps doing round trips in the background, and `guests/hostile` in
//! one of its attack modes. Each test checks that
//!
//! - echo's client saw no error and no stall longer than [`STALL_LIMIT`]
//!   (the 50 ms callback deadline plus a margin for a loaded 2-core machine);
//! - the hostile guest was stopped, restarted or left stopped as configured
//!   (the host's log says so);
//! - descriptors and memory came back afterwards.
//!
//! Each test runs alone in the test process ([`alone`]): a spinning guest
//! burns a core for its whole deadline, and two of them at once on two
//! cores would measure the machine, not the host. Measured numbers go to
//! stderr (`cargo test --test integration sandbox:: -- --nocapture`).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::support::{self, HOST, Host, LineReader, Signal, alone, bounded, configure, describe, guest};

/// The default callback deadline.
const DEADLINE: Duration = Duration::from_millis(50);
/// The longest echo round trip we accept while a hostile guest runs beside
/// it: the deadline plus a margin for scheduling on a loaded 2-core machine.
const STALL_LIMIT: Duration = Duration::from_millis(150);
/// How far above its starting point the host's resident memory may be after
/// the hostile guest's restarts.
const RSS_SLACK: u64 = 32 << 20;
/// Bound for log lines and state changes we wait for.
const WAIT: Duration = Duration::from_secs(10);
const TEST_LIMIT: Duration = Duration::from_secs(90);

// ---- Configs ----------------------------------------------------------------

/// One `[[guest]]` entry.
struct Spec {
    name: String,
    module: &'static str,
    config: String,
    on_fault: &'static str,
    /// More `key = value` lines for the guest's table (listeners, grants).
    extra: Vec<String>,
    limits: Vec<(&'static str, u64)>,
    /// The config key of its one listener: `listen`, or `listen_ws`.
    listen: &'static str,
}

impl Spec {
    /// `guests/hostile` in `mode`, named `hostile`, restarted on faults.
    fn hostile(mode: &str) -> Spec {
        Spec {
            name: "hostile".into(),
            module: "hostile",
            config: mode.into(),
            on_fault: "restart",
            extra: vec![],
            limits: vec![],
            listen: "listen",
        }
    }

    fn echo(name: &str) -> Spec {
        Spec {
            name: name.into(),
            module: "echo",
            config: String::new(),
            on_fault: "restart",
            extra: vec![],
            limits: vec![],
            listen: "listen",
        }
    }

    /// The `ws-chat` guest on a WebSocket listener.
    fn ws_chat(name: &str) -> Spec {
        Spec {
            name: name.into(),
            module: "ws_chat",
            config: String::new(),
            on_fault: "restart",
            extra: vec![],
            limits: vec![],
            listen: "listen_ws",
        }
    }

    fn named(mut self, name: &str) -> Spec {
        self.name = name.into();
        self
    }

    fn on_fault(mut self, policy: &'static str) -> Spec {
        self.on_fault = policy;
        self
    }

    fn toml(mut self, line: &str) -> Spec {
        self.extra.push(line.into());
        self
    }

    fn limit(mut self, key: &'static str, value: u64) -> Spec {
        self.limits.push((key, value));
        self
    }
}

/// A config file in the temp directory, removed on drop.
struct ConfigFile(PathBuf);

impl ConfigFile {
    fn write(guests: &[Spec]) -> ConfigFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let mut toml = String::new();
        for g in guests {
            // A first-party guest by name, or a component file.
            let module = if g.module.ends_with(".wasm") { PathBuf::from(g.module) } else { guest(g.module) };
            let module = module.to_str().expect("a UTF-8 guest path");
            let _ = writeln!(toml, "[[guest]]");
            let _ = writeln!(toml, "name = {:?}", g.name);
            let _ = writeln!(toml, "module = {module:?}");
            let _ = writeln!(toml, "{} = [\"127.0.0.1:0\"]", g.listen);
            let _ = writeln!(toml, "config = {:?}", g.config);
            let _ = writeln!(toml, "on_fault = {:?}", g.on_fault);
            for line in &g.extra {
                let _ = writeln!(toml, "{line}");
            }
            if !g.limits.is_empty() {
                let _ = writeln!(toml, "[guest.limits]");
                for (key, value) in &g.limits {
                    let _ = writeln!(toml, "{key} = {value}");
                }
            }
            toml.push('\n');
        }
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("wasmloop-sandbox-{}-{n}.toml", std::process::id()));
        std::fs::write(&path, toml).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        ConfigFile(path)
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

// ---- The bystander ------------------------------------------------------------

/// A client doing echo round trips back to back on one connection, on its
/// own thread, until stopped.
struct EchoClient {
    stop: Arc<AtomicBool>,
    round_trips: Arc<AtomicU64>,
    handle: JoinHandle<(EchoReport, TcpStream)>,
}

#[derive(Debug)]
struct EchoReport {
    round_trips: u64,
    worst: Duration,
    error: Option<String>,
}

impl EchoClient {
    /// Connects and makes one round trip before returning, so the
    /// connection exists when the caller takes its baselines.
    fn start(addr: SocketAddr) -> EchoClient {
        let mut stream = TcpStream::connect_timeout(&addr, WAIT).expect("cannot connect to echo");
        configure(&stream);
        // A stall this long is an error, not a slow round trip.
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        round_trip(&mut stream, 0).expect("the first echo round trip");
        let stop = Arc::new(AtomicBool::new(false));
        let round_trips = Arc::new(AtomicU64::new(1));
        let (flag, progress) = (stop.clone(), round_trips.clone());
        let handle = thread::spawn(move || {
            let mut report = EchoReport { round_trips: 1, worst: Duration::ZERO, error: None };
            while !flag.load(Ordering::SeqCst) {
                match round_trip(&mut stream, report.round_trips) {
                    Ok(took) => {
                        report.round_trips += 1;
                        report.worst = report.worst.max(took);
                        progress.store(report.round_trips, Ordering::SeqCst);
                    }
                    Err(e) => {
                        report.error = Some(format!("round trip {}: {e}", report.round_trips));
                        break;
                    }
                }
            }
            (report, stream)
        });
        EchoClient { stop, round_trips, handle }
    }

    /// Stops the client after at least `MIN_ROUND_TRIPS` (bounded by
    /// [`WAIT`]); returns its report and its connection, still open.
    fn finish(self) -> (EchoReport, TcpStream) {
        const MIN_ROUND_TRIPS: u64 = 100;
        let deadline = Instant::now() + WAIT;
        while self.round_trips.load(Ordering::SeqCst) < MIN_ROUND_TRIPS
            && !self.handle.is_finished()
            && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(1));
        }
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().expect("the echo client panicked")
    }
}

fn round_trip(stream: &mut TcpStream, n: u64) -> std::io::Result<Duration> {
    let message = format!("ping {n}\n");
    let start = Instant::now();
    stream.write_all(message.as_bytes())?;
    let mut back = vec![0u8; message.len()];
    stream.read_exact(&mut back)?;
    let took = start.elapsed();
    if back != message.as_bytes() {
        return Err(std::io::Error::other(format!("sent {message:?}, got {:?}", String::from_utf8_lossy(&back))));
    }
    Ok(took)
}

// ---- A host with echo and hostile guests ------------------------------------

/// One host running `echo` plus the given guests, with echo's client running
/// and the baselines taken.
struct Sandbox {
    host: Host,
    _config: ConfigFile,
    echo: Option<EchoClient>,
    /// Echo's client connection once the client stopped: kept open, so the
    /// descriptor count compares with the start.
    echo_stream: Option<TcpStream>,
    /// Descriptors once ready, with echo's client connected.
    fds: usize,
    /// Resident memory at the same point.
    rss: u64,
}

impl Sandbox {
    fn start(guests: Vec<Spec>) -> Sandbox {
        Sandbox::start_with(guests, &[])
    }

    /// [`Sandbox::start`], with more host flags.
    fn start_with(guests: Vec<Spec>, args: &[&str]) -> Sandbox {
        let mut all = vec![Spec::echo("echo")];
        all.extend(guests);
        let config = ConfigFile::write(&all);
        let host = Host::with_config(&config.0).args(args.iter().copied()).spawn();
        let echo = EchoClient::start(host.addr_of("echo"));
        let (fds, rss) = (host.fd_count(), host.rss_bytes());
        Sandbox { host, _config: config, echo: Some(echo), echo_stream: None, fds, rss }
    }

    fn addr(&self, guest: &str) -> SocketAddr {
        self.host.addr_of(guest)
    }

    /// The address of `guest`'s WebSocket listener (`listen_ws`).
    fn ws_addr(&self, guest: &str) -> SocketAddr {
        self.host
            .log_lines()
            .iter()
            .filter(|l| about(l, guest) && l.contains("(HTTP, WebSocket)"))
            .find_map(|l| l.split_once("listening on ")?.1.split(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no WebSocket listener for {guest}; log:\n{}", self.host.logs()))
    }

    fn connect(&self, guest: &str) -> TcpStream {
        self.connect_to(self.addr(guest))
    }

    fn connect_to(&self, addr: SocketAddr) -> TcpStream {
        let stream =
            TcpStream::connect_timeout(&addr, WAIT).unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
        configure(&stream);
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream
    }

    /// A connection to `guest` that has read its `hi`.
    fn greeted(&self, guest: &str) -> TcpStream {
        let mut conn = self.connect(guest);
        let mut hi = [0u8; 3];
        conn.read_exact(&mut hi).unwrap_or_else(|e| panic!("no greeting from {guest}: {e}"));
        assert_eq!(&hi, b"hi\n", "greeting from {guest}");
        conn
    }

    /// Stops echo's client and asserts it saw neither an error nor a stall
    /// beyond [`STALL_LIMIT`]. Prints the worst round trip.
    fn assert_echo_unharmed(&mut self, test: &str) -> Duration {
        let (report, stream) = self.echo.take().expect("echo client already stopped").finish();
        self.echo_stream = Some(stream);
        eprintln!("[{test}] echo beside it: {} round trips, worst {:?}", report.round_trips, report.worst);
        assert!(report.error.is_none(), "echo's client failed: {report:?}; log:\n{}", self.host.logs());
        assert!(report.round_trips > 1, "echo's client made no progress: {report:?}");
        assert!(
            report.worst <= STALL_LIMIT,
            "echo stalled for {:?} (limit {STALL_LIMIT:?}); log:\n{}",
            report.worst,
            self.host.logs()
        );
        report.worst
    }

    /// Waits (bounded) until the host holds as many descriptors as at the
    /// start.
    fn assert_fds_back(&self) {
        let deadline = Instant::now() + WAIT;
        loop {
            let now = self.host.fd_count();
            if now == self.fds {
                return;
            }
            assert!(Instant::now() < deadline, "the host holds {now} descriptors, {} at the start", self.fds);
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Asserts resident memory is within [`RSS_SLACK`] of the start.
    fn assert_memory_back(&self, test: &str) {
        let now = self.host.rss_bytes();
        eprintln!("[{test}] host RSS {} KiB at the start, {} KiB now", self.rss >> 10, now >> 10);
        assert!(
            now <= self.rss + RSS_SLACK,
            "host RSS grew from {} KiB to {} KiB (slack {} KiB)",
            self.rss >> 10,
            now >> 10,
            RSS_SLACK >> 10
        );
    }

    /// Log lines about `guest` (its tag, or its name in a fault message)
    /// that contain `needle`.
    fn count(&self, guest: &str, needle: &str) -> usize {
        self.host.log_lines().iter().filter(|l| l.contains(needle) && about(l, guest)).count()
    }

    /// Waits until [`Sandbox::count`] reaches `n`; returns the last such line.
    fn wait_for(&self, guest: &str, needle: &str, n: usize) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let lines: Vec<String> =
                self.host.log_lines().into_iter().filter(|l| l.contains(needle) && about(l, guest)).collect();
            if lines.len() >= n {
                return lines[n - 1].clone();
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} log lines with {needle:?} for guest {guest} within {WAIT:?}; log:\n{}",
                lines.len(),
                self.host.logs()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Sandbox {
    /// For each spin of the hostile guest in `callback`, the time from its
    /// `spinning in` log line to the host's fault line (log timestamps).
    fn spins(&self, callback: &str, wit_name: &str) -> Vec<Duration> {
        let lines = self.host.log_lines();
        let times = |needle: &str| -> Vec<Duration> {
            lines.iter().filter(|l| l.contains(needle) && about(l, "hostile")).filter_map(|l| log_time(l)).collect()
        };
        let started = times(&format!("spinning in {callback}"));
        let stopped = times(&format!("trapped in {wit_name}"));
        assert_eq!(started.len(), stopped.len(), "every spin ends in a fault; log:\n{}", self.host.logs());
        started.iter().zip(&stopped).map(|(a, b)| b.saturating_sub(*a)).collect()
    }
}

/// The time of day of a log line (`2025-01-01T12:34:56.789012Z ...`).
fn log_time(line: &str) -> Option<Duration> {
    let stamp = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (_, time) = stamp.split_once('T')?;
    let mut parts = time.split(':');
    let (h, m, s): (u64, u64, f64) =
        (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
    Some(Duration::from_secs(h * 3600 + m * 60) + Duration::from_secs_f64(s))
}

/// Whether a log line is about `guest`: a `guest="NAME"` field, or
/// `guest `NAME`` in a fault's message.
fn about(line: &str, guest: &str) -> bool {
    line.contains(&format!("guest=\"{guest}\"")) || line.contains(&format!("guest `{guest}`"))
}

/// Reads until the host ends the connection (end-of-stream or a reset);
/// returns how long that took and what arrived. Panics after [`WAIT`].
fn until_closed(conn: &mut TcpStream) -> (Duration, Vec<u8>) {
    let start = Instant::now();
    conn.set_read_timeout(Some(WAIT)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return (start.elapsed(), got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => {
                return (start.elapsed(), got);
            }
            Err(e) => panic!("the host did not close the connection within {WAIT:?}: {e}"),
        }
    }
}

// ---- Runaway callbacks ----------------------------------------------------------

#[test]
fn a_guest_spinning_in_init_stops_the_host_at_startup_with_one_line_naming_init_and_the_deadline() {
    let _alone = alone();
    bounded(TEST_LIMIT, || {
        // With on-fault = exit, a first start that fails stops the host
        // (with another policy the others serve: see
        // `among_several_guests_one_that_cannot_start_...` below).
        let init_deadline = Duration::from_millis(200);
        let config = ConfigFile::write(&[
            Spec::echo("echo"),
            Spec::hostile("spin-init").on_fault("exit").limit("init_deadline_ms", init_deadline.as_millis() as u64),
        ]);
        let run = run_timed(Command::new(HOST).arg("run").arg("--config").arg(&config.0));
        let log = run.lines.iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>().join("\n");
        assert!(!run.status.success(), "the host started anyway ({}); log:\n{log}", describe(run.status));
        // From echo's `listening on` (the hostile guest's init starts right
        // after) to the exit.
        let started = run
            .lines
            .iter()
            .find(|(_, l)| l.contains("listening on") && about(l, "echo"))
            .map(|(t, _)| *t)
            .unwrap_or_else(|| panic!("echo was not started first; log:\n{log}"));
        let took = run.exited - started;
        eprintln!("[spin-init] init deadline {init_deadline:?}: the host exited {took:?} after init began");
        // (The `listening on` line may reach us a little after it was written.)
        assert!(took >= init_deadline - Duration::from_millis(10), "stopped after {took:?}, before the deadline");
        assert!(took <= init_deadline + STALL_LIMIT, "stopped only after {took:?}");
        let errors: Vec<&str> = run.lines.iter().map(|(_, l)| l.as_str()).filter(|l| l.starts_with("error")).collect();
        assert_eq!(errors.len(), 1, "one error line; log:\n{log}");
        let error = errors[0];
        assert_eq!(run.lines.last().map(|(_, l)| l.as_str()), Some(error), "the error is the last line; log:\n{log}");
        assert!(error.contains("hostile") && error.contains("init"), "names the guest and init: {error}");
        assert!(error.contains("200ms"), "names the deadline: {error}");
    });
}

#[test]
fn among_several_guests_one_that_cannot_start_goes_through_its_fault_policy_while_echo_serves() {
    let _alone = alone();
    bounded(TEST_LIMIT, || {
        // `broken` panics in every `init`; `hostile` spins in its `init`.
        let broken = Spec {
            name: "broken".into(),
            module: "broken_init",
            config: String::new(),
            on_fault: "restart",
            extra: vec![],
            limits: vec![],
            listen: "listen",
        };
        let spinning = Spec::hostile("spin-init").on_fault("stop").limit("init_deadline_ms", 200);
        let mut sandbox = Sandbox::start(vec![broken, spinning]);
        // One error line each, naming the guest and what failed.
        let line = sandbox.wait_for("broken", "trapped in init", 1);
        assert!(line.contains("ERROR"), "{line}");
        let line = sandbox.wait_for("hostile", "in init", 1);
        assert!(line.contains("ERROR") && line.contains("200ms"), "{line}");
        // Each as its policy says: restarts with backoff into a crash loop,
        // or stays stopped.
        let line = sandbox.wait_for("broken", "crash loop:", 1);
        assert!(line.contains("5 faults"), "{line}");
        assert_eq!(sandbox.count("broken", "restarting in"), 4);
        assert_eq!(sandbox.count("broken", "trapped in init"), 5);
        sandbox.wait_for("hostile", "stays stopped", 1);
        assert_eq!(sandbox.count("hostile", "restarting in"), 0);
        assert_stays_down(&sandbox, "broken");
        assert_stays_down(&sandbox, "hostile");
        sandbox.assert_echo_unharmed("failed-start");
        sandbox.host.assert_running();
    });
}

/// What a finished process printed on stderr, each line with the time it
/// arrived, and when the process exited.
struct TimedRun {
    status: ExitStatus,
    lines: Vec<(Instant, String)>,
    exited: Instant,
}

fn run_timed(cmd: &mut Command) -> TimedRun {
    cmd.env_remove("RUST_LOG").env("NO_COLOR", "1").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {HOST}: {e}"));
    let stderr = child.stderr.take().expect("piped stderr");
    let reader = thread::spawn(move || {
        BufReader::new(stderr).lines().map_while(Result::ok).map(|l| (Instant::now(), l)).collect::<Vec<_>>()
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let (status, exited) = loop {
        if let Some(status) = child.try_wait().expect("waiting for the host") {
            break (status, Instant::now());
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the host did not exit within 60 s");
        }
        thread::sleep(Duration::from_millis(1));
    };
    TimedRun { status, lines: reader.join().expect("the log reader panicked"), exited }
}

#[test]
fn a_guest_spinning_in_on_data_is_interrupted_at_its_deadline_and_restarted_while_echo_keeps_going() {
    let _alone = alone();
    bounded(TEST_LIMIT, || {
        let mut sandbox = Sandbox::start(vec![Spec::hostile("spin-data")]);
        let mut latencies = Vec::new();
        for round in 1..=3 {
            let mut conn = sandbox.greeted("hostile");
            conn.write_all(b"spin\n").unwrap();
            let (took, _) = until_closed(&mut conn);
            latencies.push(took);
            let line = sandbox.wait_for("hostile", "trapped in on-data", round);
            assert!(line.contains("deadline exceeded"), "{line}");
            sandbox.wait_for("hostile", "restarting in", round);
            sandbox.wait_for("hostile", "restarted", round);
        }
        eprintln!("[spin-data] client: from the trigger to the reset (deadline {DEADLINE:?}): {latencies:?}");
        let logged = sandbox.spins("on_data", "on-data");
        eprintln!("[spin-data] host log: from `spinning` to the fault: {logged:?}");
        for took in latencies.iter().chain(&logged) {
            assert!(*took >= DEADLINE, "interrupted after {took:?}, before its deadline");
            assert!(*took <= STALL_LIMIT, "interrupted only after {took:?}");
        }
        // The restarted guest serves again.
        drop(sandbox.greeted("hostile"));
        sandbox.assert_echo_unharmed("spin-data");
        sandbox.assert_fds_back();
        sandbox.assert_memory_back("spin-data");
    });
}

#[test]
fn a_guest_spinning_in_every_timer_ends_in_a_crash_loop_and_stays_stopped_while_echo_keeps_going() {
    let _alone = alone();
    bounded(TEST_LIMIT, || {
        // Its `init` sets the 20 ms timer again on every restart.
        let mut sandbox = Sandbox::start(vec![Spec::hostile("spin-timer")]);
        let line = sandbox.wait_for("hostile", "crash loop:", 1);
        assert!(line.contains("stays stopped"), "{line}");
        assert_eq!(sandbox.count("hostile", "trapped in on-timer"), 5);
        assert_eq!(sandbox.count("hostile", "deadline exceeded"), 5);
        assert_eq!(sandbox.count("hostile", "restarted"), 4);
        let logged = sandbox.spins("on_timer", "on-timer");
        eprintln!("[spin-timer] host log: from `spinning` to the fault: {logged:?}");
        assert!(logged.iter().all(|&took| took >= DEADLINE && took <= STALL_LIMIT), "{logged:?}");
        assert_stays_down(&sandbox, "hostile");
        sandbox.assert_echo_unharmed("spin-timer");
        sandbox.assert_fds_back();
        sandbox.assert_memory_back("spin-timer");
    });
}

/// A connection to a stopped guest is closed at once, and no restart comes.
fn assert_stays_down(sandbox: &Sandbox, guest: &str) {
    let restarts = sandbox.count(guest, "restarted");
    let mut conn = sandbox.connect(guest);
    let (took, got) = until_closed(&mut conn);
    assert!(got.is_empty(), "a stopped guest answered: {:?}", String::from_utf8_lossy(&got));
    assert!(took < STALL_LIMIT, "closed only after {took:?}");
    // Longer than the first restart backoff (100 ms): nothing restarts it.
    thread::sleep(Duration::from_millis(300));
    assert_eq!(sandbox.count(guest, "restarted"), restarts, "the stopped guest restarted");
}

#[test]
fn a_memory_bomb_is_stopped_at_the_memory_cap_and_the_memory_comes_back() {
    let _alone = alone();
    bounded(TEST_LIMIT, || {
        let mut sandbox = Sandbox::start(vec![Spec::hostile("memory-bomb").limit("max_memory_mib", 32)]);
        for round in 1..=4 {
            let mut conn = sandbox.greeted("hostile");
            conn.write_all(b"grow\n").unwrap();
            until_closed(&mut conn);
            let line = sandbox.wait_for("hostile", "trapped in on-data", round);
            assert!(line.contains("memory limit reached"), "{line}");
            sandbox.wait_for("hostile", "restarted", round);
        }
        sandbox.assert_echo_unharmed("memory-bomb");
        sandbox.assert_fds_back();
        sandbox.assert_memory_back("memory-bomb");
    });
}

/// A component with two linear memories, in two core instances (as a
/// component made of several modules has them), whose `init` grows each by
/// 40 MiB and traps (`unreachable`) if a grow returns -1. Each memory alone
/// fits a 64 MiB cap; the two together do not. (A Rust guest cannot have two
/// memories, hence the text format.) It exports only `callbacks`, which
/// does nothing else.
const TWO_MEMORIES: &str = r#"
(component
  (core module $second
    (memory (export "memory") 1)
    (func (export "grow") (param i32) (result i32)
      (memory.grow (local.get 0))))
  (core instance $second (instantiate $second))
  (core module $main
    (import "second" "grow" (func $grow_second (param i32) (result i32)))
    (memory (export "memory") 1)
    (global $heap (mut i32) (i32.const 1024))
    ;; A bump allocator for lifting `init`'s arguments; they are small.
    (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
      (local $ptr i32)
      (local.set $ptr
        (i32.and
          (i32.add (global.get $heap) (i32.sub (local.get 2) (i32.const 1)))
          (i32.sub (i32.const 0) (local.get 2))))
      (global.set $heap (i32.add (local.get $ptr) (local.get 3)))
      (if (i32.gt_u (global.get $heap) (i32.const 65536)) (then unreachable))
      (local.get $ptr))
    ;; 640 pages of 64 KiB: 40 MiB in each memory. Returns the address of
    ;; `result<_, string>`, all zeros: `ok`.
    (func (export "init") (param i32 i32 i32 i32) (result i32)
      (if (i32.lt_s (memory.grow (i32.const 640)) (i32.const 0)) (then unreachable))
      (if (i32.lt_s (call $grow_second (i32.const 640)) (i32.const 0)) (then unreachable))
      (i32.const 16))
    (func (export "on-accept") (param i64 i64))
    (func (export "on-data") (param i64 i32 i32))
    (func (export "on-eof") (param i64) (result i32) (i32.const 0))
    (func (export "on-writable") (param i64))
    (func (export "on-close") (param i64 i32 i32 i32))
    (func (export "on-timer") (param i64))
    (func (export "on-shutdown")))
  (core instance $main (instantiate $main (with "second" (instance $second))))
  (type $listener-info (record (field "handle" u64) (field "address" string)))
  (type $close-reason
    (variant (case "local") (case "peer-closed") (case "reset") (case "error" string) (case "host-shutdown")))
  (type $eof-action (enum "close" "keep-open"))
  (func $init (param "config" string) (param "listeners" (list $listener-info)) (result (result (error string)))
    (canon lift (core func $main "init") (memory (core memory $main "memory")) (realloc (core func $main "cabi_realloc"))))
  (func $on-accept (param "listener" u64) (param "conn" u64) (canon lift (core func $main "on-accept")))
  (func $on-data (param "conn" u64) (param "data" (list u8))
    (canon lift (core func $main "on-data") (memory (core memory $main "memory")) (realloc (core func $main "cabi_realloc"))))
  (func $on-eof (param "conn" u64) (result $eof-action) (canon lift (core func $main "on-eof")))
  (func $on-writable (param "conn" u64) (canon lift (core func $main "on-writable")))
  (func $on-close (param "conn" u64) (param "reason" $close-reason)
    (canon lift (core func $main "on-close") (memory (core memory $main "memory")) (realloc (core func $main "cabi_realloc"))))
  (func $on-timer (param "t" u64) (canon lift (core func $main "on-timer")))
  (func $on-shutdown (canon lift (core func $main "on-shutdown")))
  (instance $callbacks
    (export "listener-info" (type $listener-info))
    (export "close-reason" (type $close-reason))
    (export "eof-action" (type $eof-action))
    (export "init" (func $init))
    (export "on-accept" (func $on-accept))
    (export "on-data" (func $on-data))
    (export "on-eof" (func $on-eof))
    (export "on-writable" (func $on-writable))
    (export "on-close" (func $on-close))
    (export "on-timer" (func $on-timer))
    (export "on-shutdown" (func $on-shutdown)))
  (export "wasmloop:handler/callbacks@0.1.0" (instance $callbacks)))
"#;

#[test]
fn the_memory_cap_holds_for_all_memories_together_not_each_alone() {
    let _alone = alone();
    bounded(TEST_LIMIT, || {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("two-memories.wasm");
        std::fs::write(&path, wat::parse_str(TWO_MEMORIES).expect("the component text parses")).unwrap();

        // 2 x (40 MiB + a page) fit under 96 MiB: the component is sound.
        let host = Host::command_for(&path).args(["--max-memory-mib", "96"]).spawn();
        drop(host);

        // Under 64 MiB the second grow traps, and `init` with it: at the
        // first start that is an operator error, so the host exits.
        let mut cmd = Command::new(HOST);
        cmd.arg("run")
            .arg(&path)
            .args(["--listen", "127.0.0.1:0", "--max-memory-mib", "64"])
            .env("XDG_CACHE_HOME", support::shared_cache_home())
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1");
        let run = support::run_bounded(cmd, 3 * WAIT)
            .unwrap_or_else(|e| panic!("the host kept running with 2 x 40 MiB under a 64 MiB cap: {e}"));
        assert!(!run.status.success(), "the host started anyway ({}); log:\n{}", describe(run.status), run.stderr);
        let error = run.stderr_lines().into_iter().rfind(|l| l.starts_with("error")).unwrap_or_default();
        eprintln!("[two-memories] {error}");
        assert!(error.contains("init"), "names init: {error}; log:\n{}", run.stderr);
        // The fault is classified as the memory limit (not `unreachable`:
        // the grow trapped, it did not return -1), and names the sum.
        assert!(error.contains("memory limit reached"), "{error}");
        assert!(error.contains("max_memory"), "the limit on the sum: {error}");

        // Beside echo it is a fault of its own guest, and echo serves on.
        let module: &'static str = Box::leak(path.to_str().expect("UTF-8").to_owned().into_boxed_str());
        let two = Spec {
            name: "two-memories".into(),
            module,
            config: String::new(),
            on_fault: "stop",
            extra: vec![],
            limits: vec![("max_memory_mib", 64)],
            listen: "listen",
        };
        let mut sandbox = Sandbox::start(vec![two]);
        sandbox.wait_for("two-memories", "memory limit reached", 1);
        sandbox.report("two-memories");
    });
}

// ---- Panics ---------------------------------------------------------------------

#[test]
fn a_panic_in_any_callback_tears_down_only_that_guest_which_restarts_and_serves_again() {
    let _alone = alone();
    bounded(TEST_LIMIT, || {
        let callbacks = ["accept", "data", "eof", "writable", "close", "timer"];
        let guests = callbacks.iter().map(|c| Spec::hostile(&format!("panic-{c}")).named(&format!("panic-{c}")));
        // `panic-writable` fills the output buffer first: keep it small.
        let guests = guests.map(|g| if g.name == "panic-writable" { g.limit("max_output", 64 << 10) } else { g });
        let mut sandbox = Sandbox::start(guests.collect());
        for callback in callbacks {
            let guest = format!("panic-{callback}");
            let took = match callback {
                "accept" => until_closed(&mut sandbox.connect(&guest)).0,
                "data" => {
                    let mut conn = sandbox.greeted(&guest);
                    conn.write_all(b"boom\n").unwrap();
                    until_closed(&mut conn).0
                }
                "eof" | "close" => {
                    let mut conn = sandbox.greeted(&guest);
                    conn.shutdown(Shutdown::Write).unwrap();
                    until_closed(&mut conn).0
                }
                // Reading drains the buffer: `on_writable` comes, and traps.
                "writable" => until_closed(&mut sandbox.connect(&guest)).0,
                // A 10 ms timer set on accept.
                "timer" => until_closed(&mut sandbox.greeted(&guest)).0,
                _ => unreachable!(),
            };
            let line = sandbox.wait_for(&guest, &format!("trapped in on-{callback}"), 1);
            assert!(line.contains("unreachable"), "a panic is a wasm `unreachable` trap: {line}");
            sandbox.wait_for(&guest, "restarting in", 1);
            sandbox.wait_for(&guest, "restarted", 1);
            eprintln!("[panic-{callback}] the connection ended {took:?} after the trigger");
        }
        // Each restarted guest's `init` ran fine: it greets a new connection.
        // (Closing that connection triggers `panic-eof` and `panic-close`
        // again, and `panic-timer` traps 10 ms after it.)
        for callback in callbacks.iter().filter(|&&c| c != "accept") {
            drop(sandbox.greeted(&format!("panic-{callback}")));
        }
        for (callback, traps) in [("accept", 1), ("data", 1), ("eof", 2), ("writable", 1), ("close", 2), ("timer", 2)] {
            let guest = format!("panic-{callback}");
            sandbox.wait_for(&guest, "restarted", traps);
            // No guest trapped because of another one.
            assert_eq!(sandbox.count(&guest, "trapped in"), traps, "{guest}");
        }
        sandbox.assert_echo_unharmed("panic-*");
        sandbox.assert_fds_back();
        sandbox.assert_memory_back("panic-*");
    });
}

#[test]
fn a_panic_in_on_shutdown_does_not_keep_the_host_from_a_clean_exit() {
    let _alone = alone();
    bounded(TEST_LIMIT, || {
        let mut sandbox = Sandbox::start(vec![Spec::hostile("panic-shutdown")]);
        sandbox.assert_echo_unharmed("panic-shutdown");
        let mut echo = sandbox.connect("echo");
        let _hostile = sandbox.greeted("hostile");
        sandbox.host.signal(Signal::TERM);
        let status = sandbox.host.wait_exit(WAIT);
        assert!(status.success(), "host ended with {}; log:\n{}", describe(status), sandbox.host.logs());
        sandbox.wait_for("hostile", "trapped in on-shutdown", 1);
        // Echo's connection was closed cleanly, not reset.
        let mut rest = Vec::new();
        echo.read_to_end(&mut rest).expect("echo's connection ends with end-of-stream");
    });
}

// ---- Fault policies -------------------------------------------------------------

#[test]
fn on_fault_stop_leaves_the_guest_stopped_and_echo_serving() {
    let _alone = alone();
    bounded(TEST_LIMIT, || {
        let mut sandbox = Sandbox::start(vec![Spec::hostile("panic-data").on_fault("stop")]);
        let mut conn = sandbox.greeted("hostile");
        conn.write_all(b"boom\n").unwrap();
        until_closed(&mut conn);
        sandbox.wait_for("hostile", "trapped in on-data", 1);
        sandbox.wait_for("hostile", "stays stopped", 1);
        assert_stays_down(&sandbox, "hostile");
        assert_eq!(sandbox.count("hostile", "restarting in"), 0);
        sandbox.assert_echo_unharmed("on-fault=stop");
        sandbox.assert_fds_back();
    });
}

#[test]
fn on_fault_exit_stops_the_host_with_a_non_zero_exit() {
    let _alone = alone();
    bounded(TEST_LIMIT, || {
        let mut sandbox = Sandbox::start(vec![Spec::hostile("panic-data").on_fault("exit")]);
        sandbox.assert_echo_unharmed("on-fault=exit");
        let mut conn = sandbox.greeted("hostile");
        let start = Instant::now();
        conn.write_all(b"boom\n").unwrap();
        let status = sandbox.host.wait_exit(WAIT);
        eprintln!("[on-fault=exit] the host exited {:?} after the trigger", start.elapsed());
        assert!(!status.success(), "host ended with {}", describe(status));
        sandbox.wait_for("hostile", "trapped in on-data", 1);
        let line = sandbox.wait_for("hostile", "faulted and on-fault = exit", 1);
        assert!(line.starts_with("error: "), "the host's exit error: {line}");
    });
}

#[test]
fn a_guest_that_traps_in_every_restart_ends_in_a_crash_loop_and_stays_stopped() {
    let _alone = alone();
    bounded(TEST_LIMIT, || {
        // A 10 ms timer set in `init` panics: every restart traps again.
        let mut sandbox = Sandbox::start(vec![Spec::hostile("crash-loop")]);
        let line = sandbox.wait_for("hostile", "crash loop:", 1);
        assert!(line.contains("5 faults"), "{line}");
        assert_eq!(sandbox.count("hostile", "trapped in on-timer"), 5);
        assert_eq!(sandbox.count("hostile", "restarting in"), 4);
        assert_eq!(sandbox.count("hostile", "restarted"), 4);
        assert_stays_down(&sandbox, "hostile");
        sandbox.assert_echo_unharmed("crash-loop");
        sandbox.assert_fds_back();
        sandbox.assert_memory_back("crash-loop");
    });
}

// ---- Forged handles and resource floods -------------------------------------------

#[test]
fn forged_and_stale_handles_are_refused_with_invalid_handle() {
    let _alone = alone();
    bounded(TEST_LIMIT, || {
        let mut sandbox = Sandbox::start(vec![Spec::hostile("forge-handles")]);
        // The guest first needs a closed connection and a fired timer: until
        // it has them it answers `again` and closes. (By time, not by count:
        // on a loaded machine its 1 ms timer can lag many quick tries.)
        let mut verdict = None;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let mut reader = LineReader::new(sandbox.connect("hostile"));
            let line = reader.line();
            if line != "again" {
                verdict = Some(line);
                break;
            }
            let mut stream = reader.stream().try_clone().unwrap();
            until_closed(&mut stream);
        }
        let verdict = verdict.expect("the guest kept answering `again`");
        assert_eq!(verdict, "ok", "the guest's verdict on the host's handle checks");
        assert_eq!(sandbox.count("hostile", "trapped in"), 0);
        sandbox.assert_echo_unharmed("forge-handles");
        sandbox.assert_fds_back();
    });
}

#[test]
fn a_handle_of_one_kind_is_refused_by_every_import_of_every_other_kind() {
    let _alone = alone();
    bounded(TEST_LIMIT, || {
        let mut sandbox = Sandbox::start(vec![
            Spec::hostile("cross-kind").toml(r#"listen_ws = ["127.0.0.1:0"]"#).toml(r#"udp = ["127.0.0.1:0"]"#),
        ]);
        let ws_addr = sandbox.ws_addr("hostile");
        // Each step hands the guest one handle; it logs the ones that come
        // in a callback, so the next step waits for the log, not a sleep.
        // The live connection, the guest's first: the verdict comes on it.
        let mut live = LineReader::new(sandbox.connect("hostile"));
        assert_eq!(live.line(), "conn");
        // The live request, held unanswered.
        let mut held = sandbox.connect_to(ws_addr);
        held.write_all(b"GET /hold HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        sandbox.wait_for("hostile", "cross-kind: have a live request", 1);
        // A finished request.
        let mut done = sandbox.connect_to(ws_addr);
        done.write_all(b"GET /done HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let (_, answer) = until_closed(&mut done);
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("\r\n\r\ndone"), "{answer}");
        // The live WebSocket, and a closed one.
        let mut ws = websocket(&sandbox, ws_addr, "/ws-live");
        drop(websocket(&sandbox, ws_addr, "/ws-dead"));
        sandbox.wait_for("hostile", "cross-kind: have a closed websocket", 1);
        // A closed connection: the guest closes its second one at once.
        until_closed(&mut sandbox.connect("hostile"));
        sandbox.wait_for("hostile", "cross-kind: have a closed connection", 1);
        sandbox.wait_for("hostile", "cross-kind: have a fired timer", 1);

        live.send("check");
        // 25 imports take a handle (10 connections, 1 listener, 1 timer, 3
        // UDP, 7 request, 3 WebSocket); each is called with the 13 handles
        // (7 live, 2 of them listeners; 6 dead) less the live ones of its
        // own kind: 120 + 11 + 12 + 36 + 84 + 36.
        let verdict = live.line();
        assert_eq!(verdict, "ok 299", "the guest's verdict on cross-kind handles; log:\n{}", sandbox.host.logs());
        // The live handles still did their own work, and only that: the
        // held request got its one answer, the WebSocket its one message.
        let (_, answer) = until_closed(&mut held);
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("\r\n\r\nheld"), "{answer}");
        let mut frame = [0u8; 12];
        ws.read_exact(&mut frame).expect("the live WebSocket's message");
        assert_eq!(&frame, b"\x81\x0astill here", "one unmasked text frame");

        assert_eq!(sandbox.count("hostile", "trapped in"), 0);
        sandbox.host.assert_running();
        sandbox.report("cross-kind");
        drop((live, ws));
        sandbox.assert_fds_back();
    });
}

/// A WebSocket connection to `path`, past its handshake.
fn websocket(sandbox: &Sandbox, addr: SocketAddr, path: &str) -> TcpStream {
    let mut stream = sandbox.connect_to(addr);
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    // Byte by byte: what follows the head is the guest's, not ours to eat.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap_or_else(|e| panic!("the handshake answer for {path}: {e}"));
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{path}: {head}");
    stream
}

#[test]
fn a_timer_flood_stops_at_the_timer_limit_and_the_limit_is_released_on_cancel() {
    let _alone = alone();
    bounded(TEST_LIMIT, || {
        let mut sandbox = Sandbox::start(vec![
            Spec::hostile("timer-flood").named("flood-default"),
            Spec::hostile("timer-flood").named("flood-100").limit("max_timers", 100),
        ]);
        for (guest, want) in [("flood-default", "timers 10000"), ("flood-100", "timers 100")] {
            // Twice: the second flood shows the first one's timers are gone.
            for _ in 0..2 {
                let start = Instant::now();
                let mut reader = LineReader::new(sandbox.connect(guest));
                assert_eq!(reader.line(), want, "{guest}");
                eprintln!("[timer-flood] {guest}: {want:?} after {:?}", start.elapsed());
            }
        }
        assert_eq!(sandbox.count("flood-default", "trapped in") + sandbox.count("flood-100", "trapped in"), 0);
        sandbox.assert_echo_unharmed("timer-flood");
        sandbox.assert_fds_back();
    });
}

#[test]
fn a_write_flood_to_a_client_that_does_not_read_buffers_at_most_max_output() {
    let _alone = alone();
    bounded(TEST_LIMIT, || {
        let max_output: u64 = 256 << 10;
        let mut sandbox = Sandbox::start(vec![Spec::hostile("write-flood").limit("max_output", max_output)]);
        let rss_before = sandbox.host.rss_bytes();
        let mut conn = sandbox.connect("hostile");
        let line = sandbox.wait_for("hostile", "full ", 1);
        let numbers: Vec<u64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
        let [taken, buffered] = numbers[..] else { panic!("expected `full <taken> buffered <bytes>`: {line}") };
        eprintln!("[write-flood] full after {taken} bytes, {buffered} of them buffered by the host");
        assert!(buffered > 0 && buffered <= max_output, "buffered {buffered}, max_output {max_output}");
        // The guest keeps writing on a 20 ms timer: watch for a while.
        let watch_until = Instant::now() + Duration::from_millis(500);
        let mut rss_peak = 0;
        while Instant::now() < watch_until {
            rss_peak = rss_peak.max(sandbox.host.rss_bytes());
            thread::sleep(Duration::from_millis(20));
        }
        for line in sandbox.host.log_lines().iter().filter(|l| about(l, "hostile") && l.contains(" buffered ")) {
            let n: u64 = line.split_whitespace().rev().find_map(|w| w.parse().ok()).unwrap_or(0);
            assert!(n <= max_output, "the host buffered {n} bytes, max_output {max_output}: {line}");
        }
        let grew = rss_peak.saturating_sub(rss_before);
        eprintln!("[write-flood] host RSS grew by {} KiB during the flood", grew >> 10);
        assert!(grew <= max_output + (16 << 20), "host RSS grew by {grew} bytes");

        // Now read it all: every byte the guest was told was taken arrives,
        // in order, and nothing more.
        conn.write_all(b"stop\n").unwrap();
        let line = sandbox.wait_for("hostile", "flood total", 1);
        let total: usize = line.split_whitespace().find_map(|w| w.parse().ok()).expect("flood total <n>");
        let (_, got) = until_closed(&mut conn);
        assert_eq!(got.len(), total, "bytes received vs bytes the host took");
        if let Some(k) = got.iter().enumerate().position(|(k, &b)| b != (k % 251) as u8) {
            panic!("byte {k} of the flood is wrong");
        }
        sandbox.assert_echo_unharmed("write-flood");
        sandbox.assert_fds_back();
    });
}

#[test]
fn connections_beyond_max_connections_are_closed_at_once_and_logged_once() {
    let _alone = alone();
    bounded(TEST_LIMIT, || {
        let mut sandbox = Sandbox::start(vec![Spec::echo("limited").limit("max_connections", 10)]);
        let conns: Vec<TcpStream> = (0..20).map(|_| sandbox.connect("limited")).collect();
        let mut served = 0;
        for (i, mut conn) in conns.iter().enumerate() {
            let start = Instant::now();
            let answered = conn.write_all(b"ping\n").is_ok() && {
                let mut back = [0u8; 5];
                conn.read_exact(&mut back).is_ok() && &back == b"ping\n"
            };
            if answered {
                served += 1;
            } else {
                assert!(start.elapsed() < STALL_LIMIT, "connection {i} was closed only after {:?}", start.elapsed());
            }
            assert_eq!(answered, i < 10, "connection {i}: served {answered}");
        }
        assert_eq!(served, 10);
        sandbox.wait_for("limited", "connection limit", 1);
        assert_eq!(sandbox.count("limited", "connection limit"), 1, "logged once");
        drop(conns);
        // The slots come back.
        sandbox.assert_fds_back();
        let mut conn = sandbox.connect("limited");
        conn.write_all(b"again\n").unwrap();
        let mut back = [0u8; 6];
        conn.read_exact(&mut back).unwrap();
        drop(conn);
        sandbox.assert_echo_unharmed("connection-flood");
        sandbox.assert_fds_back();
    });
}

// ---- Blocking, CPU fairness, logs, host memory (issue 15) ---------------------

impl Sandbox {
    /// The attack report every test below prints: the echo neighbour's
    /// worst stall (asserted within [`STALL_LIMIT`]), the host's peak RSS,
    /// and that the host is still up.
    fn report(&mut self, attack: &str) -> (Duration, u64) {
        self.host.assert_running();
        let worst = self.assert_echo_unharmed(attack);
        let peak = self.host.peak_rss_bytes();
        eprintln!("[{attack}] REPORT: echo worst stall {worst:?}, host peak RSS {} MiB, host up", peak >> 20);
        (worst, peak)
    }

    /// `GET path` on the admin listener: the body of a 200.
    fn admin_get(&self, path: &str) -> String {
        let addr = self.host.admin_addr();
        let mut conn = TcpStream::connect_timeout(&addr, WAIT).expect("cannot connect to the admin listener");
        conn.set_read_timeout(Some(WAIT)).unwrap();
        write!(conn, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
        let mut text = String::new();
        conn.read_to_string(&mut text).expect("the admin listener's answer");
        let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
        assert!(head.starts_with("HTTP/1.1 200"), "GET {path}: {head}");
        body.to_string()
    }

    /// The guest's entry in `/status.json`.
    fn guest_status(&self, guest: &str) -> serde_json::Value {
        let status: serde_json::Value = serde_json::from_str(&self.admin_get("/status.json")).expect("JSON");
        status["guests"]
            .as_array()
            .and_then(|g| g.iter().find(|g| g["name"] == guest).cloned())
            .unwrap_or_else(|| panic!("no guest {guest} in {status}"))
    }
}

#[test]
fn a_guest_that_sleeps_in_a_callback_faults_at_once_as_blocked_and_the_host_serves_on() {
    let _alone = alone();
    bounded(TEST_LIMIT, || {
        let mut sandbox = Sandbox::start(vec![Spec::hostile("sleep")]);
        let mut conn = sandbox.greeted("hostile");
        let start = Instant::now();
        conn.write_all(b"sleep for ten seconds\n").unwrap();
        // The guest's `std::thread::sleep` waits in `wasi:io/poll`: a fault
        // of that guest, now, not a host panic and not a frozen loop.
        let (took, _) = until_closed(&mut conn);
        eprintln!("[sleep] the sleeping guest's connection ended after {took:?}");
        assert!(took < DEADLINE + STALL_LIMIT, "the sleep held the connection for {took:?}");
        let line = sandbox.wait_for("hostile", "trapped in on-data", 1);
        assert!(line.contains("blocked") && line.contains("wasi:io/poll"), "the fault says why: {line}");
        // The fields end the fault's last line, after the wasm backtrace.
        sandbox.wait_for("hostile", "kind=\"blocked\"", 1);
        assert!(start.elapsed() < Duration::from_secs(10), "no sleep ran to its end");
        sandbox.wait_for("hostile", "restarted", 1);
        sandbox.greeted("hostile");
        assert_eq!(sandbox.count("hostile", "woke up"), 0, "the sleep never returned into the guest");
        sandbox.report("sleep");
        sandbox.assert_fds_back();
    });
}

#[test]
fn a_timer_storm_under_the_deadline_cannot_stall_a_neighbour_and_ends_as_a_cpu_budget_fault() {
    let _alone = alone();
    bounded(TEST_LIMIT, || {
        // 2,000 timers due at once, each callback spinning 40 ms: no single
        // callback passes the 50 ms deadline, but together they would hold
        // the loop for 80 s.
        let overrun = Duration::from_secs(3);
        let mut sandbox = Sandbox::start_with(
            vec![Spec::hostile("timer-storm").on_fault("stop").limit("cpu_overrun_ms", overrun.as_millis() as u64)],
            &["--admin", "127.0.0.1:0"],
        );
        let started = Instant::now();
        // While it storms: a new connection to echo is served promptly.
        sandbox.wait_for("hostile", "storm 10", 1);
        let mut fresh = sandbox.connect("echo");
        let took = round_trip(&mut fresh, 1).expect("a new echo connection during the storm");
        eprintln!("[timer-storm] a new echo connection's first round trip: {took:?}");
        assert!(took <= STALL_LIMIT, "a new connection waited {took:?}");
        // Throttled while it lasts, then faulted: the policy (stop) applies.
        let fault = sandbox.wait_for("hostile", "exceeded its CPU budget", 1);
        let faulted_after = started.elapsed();
        eprintln!("[timer-storm] faulted after {faulted_after:?}: {fault}");
        assert!(fault.contains("kind=\"cpu_budget\""), "{fault}");
        assert!(faulted_after >= overrun, "faulted after {faulted_after:?}, before the overrun allowance");
        sandbox.wait_for("hostile", "stays stopped", 1);
        let status = sandbox.guest_status("hostile");
        eprintln!("[timer-storm] fairness {} traps {}", status["fairness"], status["traps"]);
        assert!(status["fairness"]["throttled"].as_u64() > Some(0), "throttling is counted: {status}");
        assert!(status["fairness"]["deferred"].as_u64() > Some(0), "deferral is counted: {status}");
        assert_eq!(status["traps"]["cpu_budget"], 1, "{status}");
        let metrics = sandbox.admin_get("/metrics");
        assert!(metrics.contains("wasmloop_guest_throttled_total{guest=\"hostile\"}"), "{metrics}");
        sandbox.report("timer-storm");
        // The loop acts on SIGTERM at once.
        sandbox.host.signal(Signal::TERM);
        let exit = sandbox.host.wait_exit(Duration::from_secs(5));
        assert!(exit.success(), "{}", describe(exit));
    });
}

#[test]
fn a_burst_of_connections_to_a_guest_busy_in_every_callback_cannot_stall_a_neighbour() {
    let _alone = alone();
    bounded(TEST_LIMIT, || {
        let mut sandbox = Sandbox::start(vec![Spec::hostile("busy-echo")]);
        // 32 connections at once: on-accept and on-data spin 40 ms each.
        let mut conns: Vec<TcpStream> = (0..32).map(|_| sandbox.connect("hostile")).collect();
        for conn in &mut conns {
            conn.write_all(b"ping\n").unwrap();
        }
        // Every one is served, in time: the busy guest waits its turns.
        for (i, conn) in conns.iter_mut().enumerate() {
            let mut back = [0u8; 5];
            conn.read_exact(&mut back).unwrap_or_else(|e| panic!("connection {i}: {e}"));
            assert_eq!(&back, b"ping\n");
        }
        sandbox.report("busy-burst");
        assert_eq!(sandbox.count("hostile", "trapped"), 0, "no callback passed its deadline");
    });
}

#[test]
fn a_log_flood_is_rate_limited_counted_and_escaped_so_no_host_line_can_be_forged() {
    let _alone = alone();
    bounded(TEST_LIMIT, || {
        let per_sec = 50;
        let mut sandbox = Sandbox::start_with(
            vec![Spec::hostile("log-flood").limit("max_log_lines_per_sec", per_sec)],
            &["--admin", "127.0.0.1:0"],
        );
        let started = Instant::now();
        let mut conn = sandbox.connect("hostile");
        let mut reply = [0u8; 7];
        conn.read_exact(&mut reply).expect("the flood finishes");
        assert_eq!(&reply, b"logged\n");
        let status = sandbox.guest_status("hostile");
        let elapsed = started.elapsed().as_secs_f64();
        let lines = sandbox.host.log_lines();
        let guest_lines = lines.iter().filter(|l| l.contains(" guest: ") && about(l, "hostile")).count() as u64;
        // 5,000 lines to `log` and 5,000 to stdout, plus the forged ones (the
        // stdout one is two lines: stdout is a stream of lines).
        let written = 10_003;
        eprintln!("[log-flood] {guest_lines} of {written} lines logged; dropped: {}", status["log_dropped"]);
        // One second's worth at start, then the rate.
        let allowed = per_sec + (per_sec as f64 * elapsed).ceil() as u64;
        assert!(guest_lines <= allowed, "{guest_lines} lines logged, {allowed} allowed");
        assert_eq!(status["log_dropped"].as_u64(), Some(written - guest_lines), "{status}");
        assert_eq!(sandbox.count("hostile", "dropping its lines"), 1, "the drop is reported, once");
        // The forged line stays inside the guest's line, escaped.
        let forged: Vec<&String> = lines.iter().filter(|l| l.contains("forged by a guest")).collect();
        assert!(!forged.is_empty(), "the forged lines are logged");
        for line in forged {
            assert!(about(line, "hostile") && line.contains(" guest: "), "a forged line stands alone: {line:?}");
            assert!(!line.contains('\x1b') && line.contains("\\u{1b}"), "escape sequence not escaped: {line:?}");
        }
        let log_line = lines.iter().find(|l| l.contains("host line forged")).expect("the log import's line");
        assert!(log_line.contains("forged\\nINFO"), "the newline is escaped: {log_line}");
        assert!(log_line.contains("version=\""), "`log` lines carry the guest's version: {log_line}");
        sandbox.report("log-flood");
    });
}

/// Starts the host on `echo` and `hostile log-flood` with its stderr
/// piped, reads it until `ready`, and returns the child, the pipe and the
/// two guests' addresses.
fn host_with_stderr(
    config: &ConfigFile,
) -> (std::process::Child, std::process::ChildStderr, Vec<(String, SocketAddr)>) {
    let mut child = Command::new(HOST)
        .arg("run")
        .arg("--config")
        .arg(&config.0)
        .env("XDG_CACHE_HOME", support::shared_cache_home())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start the host");
    let mut stderr = child.stderr.take().expect("piped");
    let mut text = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Byte by byte, so nothing past `ready` is read: the pipe is then the
    // test's to stall or close.
    let mut byte = [0u8; 1];
    while !String::from_utf8_lossy(&text).lines().any(|l| l.ends_with(" ready")) {
        assert!(Instant::now() < deadline, "no ready line: {}", String::from_utf8_lossy(&text));
        match stderr.read(&mut byte) {
            Ok(1) => text.push(byte[0]),
            other => panic!("the host's stderr ended: {other:?}: {}", String::from_utf8_lossy(&text)),
        }
    }
    let text = String::from_utf8_lossy(&text).into_owned();
    let addrs = text
        .lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once("listening on ")?;
            let mut words = rest.split_whitespace();
            let addr = words.next()?.parse().ok()?;
            let guest = words.find_map(|w| w.strip_prefix("guest=\""))?.trim_end_matches('"').to_string();
            Some((guest, addr))
        })
        .collect();
    (child, stderr, addrs)
}

#[test]
fn the_host_serves_on_when_its_log_reader_stalls_or_goes_away() {
    let _alone = alone();
    bounded(TEST_LIMIT, || {
        let config = ConfigFile::write(&[
            Spec::echo("echo"),
            // 2,000 lines a flood get through: ~300 KB, more than a pipe holds.
            Spec::hostile("log-flood").limit("max_log_lines_per_sec", 2_000),
        ]);
        let (mut child, stderr, addrs) = host_with_stderr(&config);
        let addr = |name: &str| addrs.iter().find(|(g, _)| g == name).map(|(_, a)| *a).expect("listening");
        let flood_and_echo = |what: &str| {
            // Each flood logs ~10,000 lines: far more than a pipe holds.
            for _ in 0..3 {
                let mut conn = TcpStream::connect_timeout(&addr("hostile"), WAIT).unwrap();
                conn.set_read_timeout(Some(WAIT)).unwrap();
                let mut reply = [0u8; 7];
                conn.read_exact(&mut reply).unwrap_or_else(|e| panic!("{what}: the flood did not finish: {e}"));
            }
            let mut echo = TcpStream::connect_timeout(&addr("echo"), WAIT).unwrap();
            echo.set_read_timeout(Some(WAIT)).unwrap();
            let took = round_trip(&mut echo, 1).unwrap_or_else(|e| panic!("{what}: echo did not answer: {e}"));
            eprintln!("[log-reader] {what}: echo answered in {took:?}");
            assert!(took <= STALL_LIMIT, "{what}: echo took {took:?}");
        };
        // Nobody reads the pipe: it fills, and the host goes on.
        flood_and_echo("stderr full");
        // The reader goes away: writes fail with EPIPE, and the host goes on.
        drop(stderr);
        flood_and_echo("stderr closed");
        assert!(child.try_wait().unwrap().is_none(), "the host exited");
        let _ = child.kill();
        let _ = child.wait();
    });
}

/// Opens a WebSocket to `addr` (the `ws-chat` guest) and sends the first
/// fragment of a binary message, `len` bytes, never the rest.
fn websocket_fragment(addr: SocketAddr, len: usize, payload: &[u8]) -> std::io::Result<TcpStream> {
    let mut conn = TcpStream::connect_timeout(&addr, WAIT)?;
    conn.set_read_timeout(Some(WAIT))?;
    conn.set_write_timeout(Some(WAIT))?;
    write!(
        conn,
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        conn.read_exact(&mut byte)?;
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    // Binary, not final, masked (the zero mask), 64-bit length.
    let mut frame = vec![0x02, 0x80 | 127];
    frame.extend_from_slice(&(len as u64).to_be_bytes());
    frame.extend_from_slice(&[0; 4]);
    conn.write_all(&frame)?;
    conn.write_all(&payload[..len])?;
    Ok(conn)
}

#[test]
fn peers_sending_unfinished_websocket_messages_cannot_grow_the_host_past_its_input_cap() {
    let _alone = alone();
    bounded(TEST_LIMIT, || {
        let cap: u64 = 16 << 20;
        let mut sandbox =
            Sandbox::start_with(vec![Spec::ws_chat("ws").limit("max_input_total", cap)], &["--admin", "127.0.0.1:0"]);
        let addr = sandbox.addr("ws");
        let rss_before = sandbox.host.rss_bytes();
        // 200 peers, each the first 1 MiB - 1 fragment of a message it never
        // finishes: 200 MiB held without a cap.
        let len = (1 << 20) - 1;
        let payload = vec![b'x'; len];
        let peers = 200;
        let mut held = Vec::new();
        let mut refused = 0;
        for _ in 0..peers {
            match websocket_fragment(addr, len, &payload) {
                Ok(conn) => held.push(conn),
                Err(_) => refused += 1,
            }
        }
        let status = sandbox.guest_status("ws");
        let peak = sandbox.host.peak_rss_bytes();
        let grew = peak.saturating_sub(rss_before);
        eprintln!(
            "[ws-fragments] {peers} peers: input held {} KiB (cap {} KiB), {} refused by the host ({refused} saw it \
             while sending); host RSS {} MiB before, peak {} MiB",
            status["input"]["bytes"].as_u64().unwrap_or(0) >> 10,
            cap >> 10,
            status["input"]["refused"],
            rss_before >> 20,
            peak >> 20
        );
        assert!(status["input"]["bytes"].as_u64() <= Some(cap + (2 << 20)), "{status}");
        assert!(status["input"]["refused"].as_u64() >= Some(peers - (cap >> 20) - 2), "{status}");
        assert!(grew <= cap + (64 << 20), "host RSS grew by {} MiB; the cap is {} MiB", grew >> 20, cap >> 20);
        // The refused peers were told why: close code 1013.
        let mut told = 0;
        for conn in &mut held {
            conn.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
            let mut frame = [0u8; 4];
            if conn.read_exact(&mut frame).is_ok()
                && frame[0] == 0x88
                && u16::from_be_bytes([frame[2], frame[3]]) == 1013
            {
                told += 1;
            }
        }
        eprintln!("[ws-fragments] {told} peers read close code 1013");
        assert!(told > 0, "no peer was told 1013");
        drop(held);
        sandbox.report("ws-fragments");
        // Everything held is given back once the peers are gone.
        let deadline = Instant::now() + WAIT;
        while sandbox.guest_status("ws")["input"]["bytes"] != 0 {
            assert!(Instant::now() < deadline, "input still held: {}", sandbox.guest_status("ws"));
            thread::sleep(Duration::from_millis(50));
        }
    });
}
