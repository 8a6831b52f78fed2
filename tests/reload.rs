//! Hot reload: on SIGHUP the host compiles every guest's module file again on
//! a background thread, `init`s the new version, and swaps it in; a version
//! that does not load or whose `init` fails is not swapped in and the running
//! one keeps serving. In drain mode (the default) existing connections stay
//! with the old instance until they close or the drain deadline passes; new
//! connections go to the new version.
//!
//! Each test copies a guest to `<tmp>/svc.wasm` (so the guest is named
//! `svc`), runs the real host on that path, and "deploys" a new version by
//! writing `svc.wasm.new` and renaming it over `svc.wasm` before sending
//! SIGHUP. After every SIGHUP the test waits (bounded) for the host's
//! `reloaded` or `reload failed` line, except in
//! [`back_to_back_reloads_end_on_the_version_deployed_last`], which sends two
//! SIGHUPs in quick succession on purpose.
//!
//! Each test runs alone in the test process ([`alone`]): the load test
//! keeps both cores of a small CI machine busy, which would distort the
//! timing and idle tests. Measured numbers go to stderr
//! (`cargo test --test integration reload:: -- --nocapture`).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::support::{Host, Signal, alone, bounded, configure, guest, random_bytes, read_to_eof};

/// The name every test's guest gets from its module file, `svc.wasm`.
const NAME: &str = "svc";
/// How long one reload may take: compiling a guest on a loaded 2-core
/// machine, in the background, while the load test keeps both cores busy.
const RELOAD_WAIT: Duration = Duration::from_secs(60);
/// Bound for log lines and state changes other than a reload.
const WAIT: Duration = Duration::from_secs(10);
/// A client read or write that takes this long is an error (a stall), not a
/// slow round trip.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

// ---- The deployed module ----------------------------------------------------

/// A temporary directory holding `svc.wasm`, the module file the host runs
/// and reloads; removed on drop.
struct Service {
    dir: PathBuf,
}

impl Service {
    /// A new directory with `initial` copied to `svc.wasm`.
    fn new(initial: &Path) -> Service {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("wasmloop-reload-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let service = Service { dir };
        service.deploy(initial);
        service
    }

    /// The module file the host runs.
    fn module(&self) -> PathBuf {
        self.dir.join(format!("{NAME}.wasm"))
    }

    /// Replaces `svc.wasm` with a copy of `source`, atomically.
    fn deploy(&self, source: &Path) {
        let bytes = std::fs::read(source).unwrap_or_else(|e| panic!("cannot read {}: {e}", source.display()));
        self.deploy_bytes(&bytes);
    }

    /// Replaces `svc.wasm` with `bytes`, atomically: a reader sees the old
    /// file or the new one, never half of it.
    fn deploy_bytes(&self, bytes: &[u8]) {
        let staged = self.dir.join(format!("{NAME}.wasm.new"));
        std::fs::write(&staged, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", staged.display()));
        std::fs::rename(&staged, self.module())
            .unwrap_or_else(|e| panic!("cannot rename {} over {}: {e}", staged.display(), self.module().display()));
    }

    /// Starts a host on `svc.wasm` with extra arguments.
    fn host(&self, args: &[&str]) -> Host {
        Host::command_for(self.module()).args(args.iter().copied()).spawn()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---- Reloading --------------------------------------------------------------

fn is_success_line(line: &str) -> bool {
    line.contains("reloaded") && !line.contains("reload failed")
}

fn is_failure_line(line: &str) -> bool {
    line.contains("reload failed")
}

fn is_outcome_line(line: &str) -> bool {
    is_success_line(line) || is_failure_line(line)
}

/// What a `reloaded` line says.
#[derive(Debug)]
struct Reloaded {
    line: String,
    old: String,
    new: String,
    compiled_in: String,
    swapped_in: String,
    /// `N` of `N connections draining`.
    draining: String,
}

/// What the host logged for one SIGHUP.
#[derive(Debug)]
enum Outcome {
    Reloaded(Reloaded),
    Failed(String),
}

/// Sends SIGHUP and returns the host's next `reloaded` or `reload failed`
/// line, checked against the contract.
fn reload(host: &Host) -> Outcome {
    let before = host.log_lines().iter().filter(|l| is_outcome_line(l)).count();
    host.signal(Signal::HUP);
    let lines = host.wait_for_lines("saying `reloaded` or `reload failed`", before + 1, RELOAD_WAIT, is_outcome_line);
    let line = lines[before].clone();
    if is_failure_line(&line) {
        assert!(line.contains("keeps running"), "a failed reload says the old version keeps running: {line}");
        assert!(line.contains(NAME), "a failed reload names the guest `{NAME}`: {line}");
        assert!(
            line.contains(" WARN ") || line.contains(" ERROR "),
            "a failed reload is a warning or an error: {line}"
        );
        return Outcome::Failed(line);
    }
    for part in ["version ", " -> ", "swapped in", "connections draining"] {
        assert!(line.contains(part), "the `reloaded` line has {part:?}: {line}");
    }
    let tag = format!("guest=\"{NAME}\"");
    assert!(line.split_whitespace().any(|w| w == tag), "the `reloaded` line is tagged {tag}: {line}");
    let (old, new) = versions(&line);
    assert_ne!(old, new, "every deploy changes the module's bytes, so its version: {line}");
    // A version deployed before comes from the compiled cache.
    assert!(
        line.contains("compiled in ") || line.contains("loaded from the compiled cache in "),
        "the `reloaded` line says how the code was loaded: {line}"
    );
    let compiled_in = word_after(&line, if line.contains("compiled in ") { "compiled in " } else { "cache in " });
    let swapped_in = word_after(&line, "swapped in ");
    let draining = line
        .split_once(" connections draining")
        .and_then(|(before, _)| before.split_whitespace().last())
        .unwrap_or("?")
        .to_string();
    Outcome::Reloaded(Reloaded { line, old, new, compiled_in, swapped_in, draining })
}

/// Sends SIGHUP and expects the new version to be swapped in.
fn reload_ok(host: &Host) -> Reloaded {
    match reload(host) {
        Outcome::Reloaded(r) => r,
        Outcome::Failed(line) => panic!("expected a successful reload, got: {line}\nlog:\n{}", host.logs()),
    }
}

/// `OLD` and `NEW` of `version OLD -> NEW`, both hex.
fn versions(line: &str) -> (String, String) {
    let (_, rest) = line.split_once("version ").unwrap_or_else(|| panic!("no `version` in: {line}"));
    let words: Vec<&str> = rest.split_whitespace().take(3).collect();
    assert!(words.len() == 3 && words[1] == "->", "expected `version OLD -> NEW` in: {line}");
    let hex = |word: &str| {
        let word = word.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_string();
        assert!(
            !word.is_empty() && word.chars().all(|c| c.is_ascii_hexdigit()),
            "version {word:?} is not a hex hash in: {line}"
        );
        word
    };
    (hex(words[0]), hex(words[2]))
}

/// The word after `prefix` (say, the duration after `compiled in `).
fn word_after(line: &str, prefix: &str) -> String {
    let (_, rest) = line.split_once(prefix).unwrap_or_else(|| panic!("no {prefix:?} in: {line}"));
    rest.split_whitespace().next().unwrap_or("").trim_end_matches([',', ';', ')']).to_string()
}

// ---- Clients ------------------------------------------------------------------

/// A connection with timeouts that turn a stall into an error.
fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT)?;
    configure(&stream);
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    Ok(stream)
}

/// Sends `message` and reads it back; any error, early end-of-stream or
/// difference is an `Err` describing it.
fn round_trip(stream: &mut TcpStream, message: &[u8], buf: &mut Vec<u8>) -> Result<(), String> {
    stream.write_all(message).map_err(|e| format!("writing {} B failed: {e}", message.len()))?;
    buf.clear();
    buf.resize(message.len(), 0);
    let mut got = 0;
    while got < message.len() {
        match stream.read(&mut buf[got..]) {
            Ok(0) => return Err(format!("end-of-stream after {got} of {} B echoed", message.len())),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading failed after {got} of {} B echoed: {e}", message.len())),
        }
    }
    compare(buf, message)
}

fn compare(got: &[u8], want: &[u8]) -> Result<(), String> {
    if got == want {
        return Ok(());
    }
    let first = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
    Err(format!("echo differs: got {} B, sent {} B, first difference at offset {first}", got.len(), want.len()))
}

/// Half-closes and reads to end-of-stream, expecting exactly `rest`.
fn finish(stream: &mut TcpStream, rest: &[u8]) -> Result<(), String> {
    stream.shutdown(Shutdown::Write).map_err(|e| format!("half-close failed: {e}"))?;
    match read_to_eof(stream) {
        Ok(got) => compare(&got, rest),
        Err((got, e)) => Err(format!("reading to end-of-stream failed after {} of {} B: {e}", got.len(), rest.len())),
    }
}

/// xorshift64: reproducible sizes and contents per client thread.
struct Prng(u64);

impl Prng {
    fn new(seed: u64) -> Prng {
        Prng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// 1 B ..= 64 KiB, log-uniform (as many tiny messages as large ones),
    /// with bytes that can never form one of `faulty`'s commands: no `\n`
    /// (so a received chunk is one "line") and no `p`, `s` or `g` (so no
    /// chunk is `panic`, `spin`, `grow` or `print ...`).
    fn message(&mut self) -> Vec<u8> {
        let bits = self.below(17);
        let len = 1 + self.below(1 << bits) as usize;
        let mut bytes = random_bytes(len, self.next());
        for b in &mut bytes {
            if matches!(*b, b'\n' | b'p' | b's' | b'g') {
                *b ^= 0x80;
            }
        }
        bytes
    }
}

/// What the load clients did, shared with the test.
#[derive(Default)]
struct Stats {
    round_trips: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_echoed: AtomicU64,
    fresh_connections: AtomicU64,
    persistent_connections: AtomicU64,
    errors: AtomicU64,
    /// The first errors, with context.
    first_errors: Mutex<Vec<String>>,
    /// How many reloads the test has started: context for errors.
    reloads: AtomicUsize,
}

impl Stats {
    fn error(&self, client: usize, what: &str, e: String) {
        self.errors.fetch_add(1, Ordering::SeqCst);
        let mut first = self.first_errors.lock().unwrap_or_else(|e| e.into_inner());
        if first.len() < 20 {
            let reloads = self.reloads.load(Ordering::SeqCst);
            first.push(format!("client {client}, {what} (after {reloads} SIGHUPs): {e}"));
        }
    }

    fn echoed(&self, len: usize) {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        self.bytes_echoed.fetch_add(len as u64, Ordering::Relaxed);
    }

    fn sent(&self, len: usize) {
        self.bytes_sent.fetch_add(len as u64, Ordering::Relaxed);
    }
}

/// A connection that stays open for many round trips; `left: None` keeps it
/// until the load stops, across every reload.
struct Persistent {
    stream: TcpStream,
    left: Option<u32>,
}

/// Persistent connections per client: the first lives for the whole test,
/// the others for a random number of round trips, then close and reopen.
const PERSISTENT: usize = 3;

/// One load client: round trips on its persistent connections and a fresh
/// connection per turn, until `stop`.
fn client(index: usize, addr: SocketAddr, stats: Arc<Stats>, stop: Arc<AtomicBool>) {
    let mut rng = Prng::new(index as u64 + 1);
    let mut buf = Vec::new();
    let mut slots: Vec<Option<Persistent>> = (0..PERSISTENT).map(|_| None).collect();
    while !stop.load(Ordering::SeqCst) {
        for (slot, entry) in slots.iter_mut().enumerate() {
            if entry.is_none() {
                match connect(addr) {
                    Ok(stream) => {
                        stats.persistent_connections.fetch_add(1, Ordering::Relaxed);
                        let left = if slot == 0 { None } else { Some(10 + rng.below(100) as u32) };
                        *entry = Some(Persistent { stream, left });
                    }
                    Err(e) => {
                        stats.error(index, "connecting a persistent connection", e.to_string());
                        continue;
                    }
                }
            }
            let Some(conn) = entry.as_mut() else { continue };
            let message = rng.message();
            stats.sent(message.len());
            match round_trip(&mut conn.stream, &message, &mut buf) {
                Ok(()) => stats.echoed(message.len()),
                Err(e) => {
                    stats.error(index, &format!("persistent connection {slot}"), e);
                    *entry = None;
                    continue;
                }
            }
            if let Some(left) = &mut conn.left {
                *left -= 1;
                if *left == 0 {
                    if let Err(e) = finish(&mut conn.stream, b"") {
                        stats.error(index, &format!("closing persistent connection {slot}"), e);
                    }
                    *entry = None;
                }
            }
        }
        if let Err(e) = fresh_connection(addr, &mut rng, &stats, &mut buf) {
            stats.error(index, "fresh connection", e);
        }
    }
    for (slot, entry) in slots.iter_mut().enumerate() {
        if let Some(mut conn) = entry.take()
            && let Err(e) = finish(&mut conn.stream, b"")
        {
            stats.error(index, &format!("closing persistent connection {slot} at the end"), e);
        }
    }
}

/// Connect, 1 to 3 round trips, then a last message, a half-close and
/// reading to end-of-stream: the last message must come back whole.
fn fresh_connection(addr: SocketAddr, rng: &mut Prng, stats: &Stats, buf: &mut Vec<u8>) -> Result<(), String> {
    let mut stream = connect(addr).map_err(|e| format!("connecting failed: {e}"))?;
    for _ in 0..1 + rng.below(3) {
        let message = rng.message();
        stats.sent(message.len());
        round_trip(&mut stream, &message, buf)?;
        stats.echoed(message.len());
    }
    let last = rng.message();
    stats.sent(last.len());
    stream.write_all(&last).map_err(|e| format!("writing the last {} B failed: {e}", last.len()))?;
    finish(&mut stream, &last)?;
    stats.echoed(last.len());
    stats.fresh_connections.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Waits until the clients have finished `more` fresh connections beyond
/// `since` (so the load overlaps every version), failing on a stall.
fn wait_for_progress(stats: &Stats, since: u64, more: u64) {
    let deadline = Instant::now() + WAIT * 3;
    while stats.fresh_connections.load(Ordering::SeqCst) < since + more {
        assert!(
            Instant::now() < deadline,
            "the load made no progress: {} fresh connections in {:?} (errors: {:?})",
            stats.fresh_connections.load(Ordering::SeqCst) - since,
            WAIT * 3,
            stats.first_errors.lock().unwrap_or_else(|e| e.into_inner())
        );
        thread::sleep(Duration::from_millis(5));
    }
}

// ---- Telling versions apart -------------------------------------------------------

/// Which guest a new connection reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    Echo,
    Faulty,
    Hello,
}

impl Version {
    fn module(self) -> PathBuf {
        guest(match self {
            Version::Echo => "echo",
            Version::Faulty => "faulty",
            Version::Hello => "hello",
        })
    }
}

/// Checks that a new connection reaches `expected`: `hello` greets it; to
/// `print TAG`, `echo` answers with the same bytes while `faulty` logs TAG
/// and answers nothing.
fn probe(host: &Host, expected: Version, tag: &str) {
    let mut stream = connect(host.addr()).unwrap_or_else(|e| panic!("probe {tag}: cannot connect: {e}"));
    if expected == Version::Hello {
        let greeting = read_to_eof(&mut stream).unwrap_or_else(|(got, e)| panic!("probe {tag}: {e} after {got:?}"));
        assert_eq!(greeting, b"hello\n", "probe {tag}: a new connection should reach hello");
        return;
    }
    let command = format!("print {tag}\n");
    stream.write_all(command.as_bytes()).unwrap_or_else(|e| panic!("probe {tag}: cannot write: {e}"));
    stream.shutdown(Shutdown::Write).unwrap();
    let back = read_to_eof(&mut stream)
        .unwrap_or_else(|(got, e)| panic!("probe {tag}: {e} after {got:?} (expected {expected:?})"));
    match expected {
        Version::Echo => {
            assert_eq!(back, command.as_bytes(), "probe {tag}: a new connection should reach echo");
            assert_eq!(host.count_log(tag), 0, "probe {tag} reached faulty:\n{}", host.logs());
        }
        Version::Faulty => {
            assert!(back.is_empty(), "probe {tag}: a new connection should reach faulty, got {back:?}");
            host.wait_for_log(tag, WAIT);
        }
        Version::Hello => unreachable!("handled above"),
    }
}

// ---- Tests ------------------------------------------------------------------------

/// What the load test deploys before each of its 20 SIGHUPs.
#[derive(Clone, Copy, Debug)]
enum Deploy {
    Guest(Version),
    /// A text file: not a component at all.
    NotAComponent,
    /// `guests/broken-init`: loads, but its `init` traps.
    BrokenInit,
}

#[test]
fn twenty_reloads_under_load_drop_no_connection_and_lose_no_byte() {
    const CLIENTS: usize = 8;
    const RELOADS: usize = 20;
    /// Fresh connections the clients finish after each reload before the
    /// next one.
    const PROGRESS: u64 = 200;
    let _alone = alone();
    bounded(Duration::from_secs(600), || {
        let svc = Service::new(&guest("echo"));
        // Long-lived connections stay on their version for the whole test;
        // the drain deadline is not what this test is about.
        let mut host = svc.host(&["--drain-timeout-ms", "600000"]);
        let addr = host.addr();
        let fds_at_start = host.fd_count();
        let threads_at_start = host.threads().threads.len();

        // Alternate faulty and echo; one broken module and one broken init
        // in between, each leaving the previous version running.
        let mut plan = Vec::new();
        let mut next = Version::Faulty;
        for i in 0..RELOADS {
            plan.push(match i {
                6 => Deploy::NotAComponent,
                13 => Deploy::BrokenInit,
                _ => {
                    let deploy = Deploy::Guest(next);
                    next = if next == Version::Echo { Version::Faulty } else { Version::Echo };
                    deploy
                }
            });
        }

        let stats = Arc::new(Stats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<JoinHandle<()>> = (0..CLIENTS)
            .map(|i| {
                let (stats, stop) = (stats.clone(), stop.clone());
                thread::Builder::new().name(format!("client-{i}")).spawn(move || client(i, addr, stats, stop)).unwrap()
            })
            .collect();
        wait_for_progress(&stats, 0, 20);

        let mut running = Version::Echo;
        let mut hashes: Vec<(Version, String)> = Vec::new();
        let mut current_hash: Option<String> = None;
        let mut reloaded = Vec::new();
        let mut failed = Vec::new();
        for (i, deploy) in plan.iter().enumerate() {
            match deploy {
                Deploy::Guest(version) => svc.deploy(&version.module()),
                Deploy::NotAComponent => svc.deploy_bytes(b"this is not a WebAssembly component\n"),
                Deploy::BrokenInit => svc.deploy(&guest("broken_init")),
            }
            let progress = stats.fresh_connections.load(Ordering::SeqCst);
            stats.reloads.fetch_add(1, Ordering::SeqCst);
            let started = Instant::now();
            let outcome = reload(&host);
            let took = started.elapsed();
            match (deploy, outcome) {
                (Deploy::Guest(version), Outcome::Reloaded(r)) => {
                    // The old version is what ran before; the same bytes
                    // always hash the same.
                    if let Some(hash) = &current_hash {
                        assert_eq!(&r.old, hash, "reload {i}: the old version is the one that ran: {}", r.line);
                    }
                    hashes.push((running, r.old.clone()));
                    hashes.push((*version, r.new.clone()));
                    current_hash = Some(r.new.clone());
                    running = *version;
                    eprintln!(
                        "reload {i:2}: {version:?} in {took:?} (log: compiled in {}, swapped in {}, {} connections \
                         draining)",
                        r.compiled_in, r.swapped_in, r.draining
                    );
                    reloaded.push(r);
                }
                (Deploy::NotAComponent | Deploy::BrokenInit, Outcome::Failed(line)) => {
                    eprintln!("reload {i:2}: {deploy:?} failed in {took:?}, as it should: {line}");
                    failed.push(line);
                }
                (deploy, outcome) => {
                    panic!("reload {i}: deployed {deploy:?}, got {outcome:?}\nlog:\n{}", host.logs())
                }
            }
            // New connections reach the version that runs now...
            probe(&host, running, &format!("probe#{i}#"));
            // ...and the load goes on, on it.
            wait_for_progress(&stats, progress, PROGRESS);
            host.assert_running();
        }
        for (version, hash) in &hashes {
            let same: Vec<&String> = hashes.iter().filter(|(v, _)| v == version).map(|(_, h)| h).collect();
            assert!(same.iter().all(|h| *h == hash), "{version:?} was reported under different versions: {same:?}");
        }

        stop.store(true, Ordering::SeqCst);
        for client in clients {
            client.join().expect("a client thread panicked");
        }
        let errors = stats.errors.load(Ordering::SeqCst);
        let round_trips = stats.round_trips.load(Ordering::SeqCst);
        let fresh = stats.fresh_connections.load(Ordering::SeqCst);
        let persistent = stats.persistent_connections.load(Ordering::SeqCst);
        let sent = stats.bytes_sent.load(Ordering::SeqCst);
        let echoed = stats.bytes_echoed.load(Ordering::SeqCst);
        eprintln!(
            "load: {round_trips} round trips, {fresh} fresh connections, {persistent} persistent connections, \
             {sent} B sent, {echoed} B echoed, {errors} errors"
        );
        assert_eq!(
            errors,
            0,
            "the clients saw errors; the first:\n{}",
            stats.first_errors.lock().unwrap_or_else(|e| e.into_inner()).join("\n")
        );
        assert_eq!(echoed, sent, "every byte sent comes back");

        assert_eq!(reloaded.len(), 18, "successful reloads");
        assert_eq!(failed.len(), 2, "failed reloads");
        let lines = host.log_lines();
        assert_eq!(lines.iter().filter(|l| is_success_line(l)).count(), 18, "`reloaded` lines:\n{}", host.logs());
        assert_eq!(lines.iter().filter(|l| is_failure_line(l)).count(), 2, "`reload failed` lines:\n{}", host.logs());
        // Every client connection is closed now, so every old version has
        // drained.
        host.wait_for_log_count("drained", 18, WAIT);
        // The one trap is broken-init's, reported as the failed reload;
        // no serving version faulted (the payloads hold no commands).
        assert!(
            lines.iter().any(|l| is_failure_line(l) && l.contains("trapped in init")),
            "the init trap is named in its reload failure:\n{}",
            host.logs()
        );
        assert!(
            !lines.iter().any(|l| l.contains("trapped") && !is_failure_line(l)),
            "no serving guest faulted:\n{}",
            host.logs()
        );
        // Nothing a version or a reload used stays behind: the clients'
        // sockets are closed, and the compile threads are gone (or one is
        // parked for the next reload).
        let deadline = Instant::now() + WAIT;
        while host.fd_count() > fds_at_start && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(host.fd_count(), fds_at_start, "descriptors after 20 reloads (at start: {fds_at_start})");
        let threads = host.threads();
        assert!(
            threads.threads.len() <= threads_at_start + 1,
            "{} threads after 20 reloads, {threads_at_start} at start: {:?}",
            threads.threads.len(),
            threads.threads.values().map(|t| &t.0).collect::<Vec<_>>()
        );
        host.assert_running();
    });
}

#[test]
fn drain_keeps_old_connections_on_the_old_version_and_new_ones_get_the_new() {
    let _alone = alone();
    bounded(Duration::from_secs(120), || {
        let svc = Service::new(&guest("echo"));
        let mut host = svc.host(&[]);
        let mut buf = Vec::new();
        let mut a = host.connect();
        round_trip(&mut a, b"before the reload\n", &mut buf).unwrap();

        svc.deploy(&guest("hello"));
        let r = reload_ok(&host);
        eprintln!("{}", r.line);

        // A stays with the old version: echo.
        round_trip(&mut a, b"after the reload\n", &mut buf).expect("the old connection still echoes");
        // B reaches the new one: hello, then end-of-stream.
        let mut b = host.connect();
        let greeting = read_to_eof(&mut b).unwrap_or_else(|(got, e)| panic!("B: {e} after {got:?}"));
        assert_eq!(greeting, b"hello\n", "a new connection reaches the new version");
        round_trip(&mut a, b"still there\n", &mut buf).expect("the old connection still echoes after B");
        assert_eq!(host.count_log("drained"), 0, "the old version drained with A still open:\n{}", host.logs());

        // Closing A, the old version's last connection, drops it.
        finish(&mut a, b"").expect("A closes cleanly");
        let line = host.wait_for_log("drained", WAIT);
        eprintln!("{line}");
        assert_eq!(host.count_log("drain deadline"), 0, "drained by closing, not by the deadline");
        host.assert_running();
    });
}

#[test]
fn the_drain_deadline_closes_what_is_left() {
    const DRAIN: Duration = Duration::from_millis(300);
    let _alone = alone();
    bounded(Duration::from_secs(120), || {
        let svc = Service::new(&guest("echo"));
        let mut host = svc.host(&["--drain-timeout-ms", &DRAIN.as_millis().to_string()]);
        let mut buf = Vec::new();
        let mut a = host.connect();
        round_trip(&mut a, b"before the reload\n", &mut buf).unwrap();

        svc.deploy(&guest("hello"));
        let r = reload_ok(&host);
        let swapped = Instant::now();
        eprintln!("{}", r.line);
        round_trip(&mut a, b"right after the swap\n", &mut buf).expect("A is not closed at the swap");

        // The host closes A once the deadline passes (a FIN or a reset),
        // not when our read timeout does.
        a.set_read_timeout(Some(DRAIN + WAIT)).unwrap();
        let mut byte = [0u8; 1];
        let closed = match a.read(&mut byte) {
            Ok(0) => "end-of-stream".to_string(),
            Ok(_) => panic!("A received bytes nobody sent"),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => "reset".to_string(),
            Err(e) => panic!("A was not closed within {:?} of the swap: {e}", DRAIN + WAIT),
        };
        let after = swapped.elapsed();
        eprintln!("A closed ({closed}) {after:?} after the `reloaded` line");
        assert!(after < DRAIN + Duration::from_secs(5), "A closed {after:?} after the swap, deadline {DRAIN:?}");
        let line = host.wait_for_log("drain deadline", WAIT);
        eprintln!("{line}");

        // The new version serves on.
        let mut b = host.connect();
        let greeting = read_to_eof(&mut b).unwrap_or_else(|(got, e)| panic!("B: {e} after {got:?}"));
        assert_eq!(greeting, b"hello\n", "a new connection reaches the new version");
        host.assert_running();
    });
}

#[test]
fn reload_keeps_idle_at_zero_cpu() {
    const WINDOW: Duration = Duration::from_secs(2);
    let _alone = alone();
    bounded(Duration::from_secs(120), || {
        let svc = Service::new(&guest("echo"));
        // echo and faulty ignore their config; broken-init then returns an
        // error from `init` instead of trapping (the load test has the trap).
        let mut host = svc.host(&["--guest-config", "refuse"]);
        let threads_at_start = host.threads().threads.len();
        let mut buf = Vec::new();

        // A reload with a connection to drain...
        let mut a = host.connect();
        round_trip(&mut a, b"before the reload\n", &mut buf).unwrap();
        svc.deploy(&guest("faulty"));
        reload_ok(&host);
        finish(&mut a, b"").expect("A closes cleanly");
        host.wait_for_log("drained", WAIT);
        // ...and one whose init refuses.
        svc.deploy(&guest("broken_init"));
        match reload(&host) {
            Outcome::Failed(line) => {
                assert!(line.contains("this version refuses to start"), "the failure names init's error: {line}")
            }
            Outcome::Reloaded(r) => panic!("broken-init was swapped in: {}", r.line),
        }

        let before = host.threads();
        thread::sleep(WINDOW); // the measurement window, not a readiness wait
        let delta = host.threads().since(&before);
        eprintln!(
            "idle for {WINDOW:?} after two reloads: {:.3} ms on CPU, {} wakeups, {} threads ({threads_at_start} at \
             start)\n{}",
            delta.run_ns as f64 / 1e6,
            delta.switches,
            before.threads.len(),
            delta.detail
        );
        assert!(
            delta.run_ns < 10_000_000,
            "the host used {:.3} ms of CPU idling for {WINDOW:?} after reloads:\n{}",
            delta.run_ns as f64 / 1e6,
            delta.detail
        );
        assert!(
            delta.switches <= 5,
            "the host woke up {} times idling for {WINDOW:?} after reloads:\n{}",
            delta.switches,
            delta.detail
        );
        // Still serving, on the version that was swapped in.
        let mut b = host.connect();
        round_trip(&mut b, b"after\n", &mut buf).expect("faulty echoes");
        host.assert_running();
    });
}

/// SIGHUP twice in quick succession, each after a deploy: whatever order the
/// two compiles finish in, the host ends up running the version deployed
/// last (the file on disk), not the one whose compile happened to finish
/// last.
#[test]
fn back_to_back_reloads_end_on_the_version_deployed_last() {
    const ROUNDS: usize = 16;
    let _alone = alone();
    bounded(Duration::from_secs(300), || {
        let svc = Service::new(&guest("echo"));
        let mut host = svc.host(&[]);

        // One reload at a time first, to learn each version's hash.
        svc.deploy(&guest("faulty"));
        let r = reload_ok(&host);
        let mut hashes = vec![(Version::Echo, r.old), (Version::Faulty, r.new)];
        svc.deploy(&guest("hello"));
        hashes.push((Version::Hello, reload_ok(&host).new));
        let hash = |v: Version| hashes.iter().find(|(w, _)| *w == v).map(|(_, h)| h.clone()).unwrap();

        let mut running = Version::Hello;
        let mut stale = Vec::new();
        for round in 0..ROUNDS {
            // The two versions that are not running, in alternating order.
            let mut others: Vec<Version> =
                [Version::Echo, Version::Faulty, Version::Hello].into_iter().filter(|v| *v != running).collect();
            if round % 2 == 1 {
                others.reverse();
            }
            let (first, last) = (others[0], others[1]);
            let before = host.log_lines().iter().filter(|l| is_outcome_line(l)).count();
            svc.deploy(&first.module());
            host.signal(Signal::HUP);
            // Not a readiness wait: room for the host to start the first
            // reload (and read the first file) before the second deploy.
            thread::sleep(Duration::from_millis(3));
            svc.deploy(&last.module());
            host.signal(Signal::HUP);

            // The last version is swapped in...
            let arrow = format!("-> {}", hash(last));
            host.wait_for_lines(&format!("saying `reloaded` with {arrow:?}"), 1, RELOAD_WAIT, |l| {
                is_success_line(l) && l.contains(&arrow)
            });
            // ...and stays: give the other reload, if there were two, time
            // to finish (it may be reported or not).
            let window = Instant::now() + Duration::from_secs(2);
            while host.log_lines().iter().filter(|l| is_outcome_line(l)).count() < before + 2 && Instant::now() < window
            {
                thread::sleep(Duration::from_millis(5));
            }
            let lines = host.log_lines();
            let last_success = lines.iter().rfind(|l| is_success_line(l)).expect("a `reloaded` line").clone();
            let outcome: Vec<&String> = lines.iter().filter(|l| is_outcome_line(l)).skip(before).collect();
            if !last_success.contains(&arrow) {
                stale.push(format!(
                    "round {round}: deployed {first:?} then {last:?}; the host ended on the first:\n  {}",
                    outcome.iter().map(|l| l.as_str()).collect::<Vec<_>>().join("\n  ")
                ));
                running = first;
            } else {
                running = last;
            }
            probe(&host, running, &format!("probe#{round}#"));
        }
        assert!(
            stale.is_empty(),
            "in {} of {ROUNDS} rounds an older version was swapped in after the newer one \
             (hashes: {hashes:?}):\n{}",
            stale.len(),
            stale.join("\n")
        );
        host.assert_running();
    });
}

#[test]
fn watch_reloads_on_an_atomic_deploy_and_on_a_write_in_place() {
    let _alone = alone();
    bounded(Duration::from_secs(120), || {
        let svc = Service::new(&guest("echo"));
        let host = svc.host(&["--watch"]);
        probe(&host, Version::Echo, "watch-before");

        // Atomic deploy: write beside, rename over. No SIGHUP.
        svc.deploy(&guest("hello"));
        let line = host.wait_for_log("reloaded", RELOAD_WAIT);
        assert!(line.contains(&format!("guest=\"{NAME}\"")), "{line}");
        probe(&host, Version::Hello, "watch-renamed");

        // A write in place (truncate, then write) of the old echo again.
        let echo = std::fs::read(guest("echo")).unwrap();
        std::fs::write(svc.module(), &echo).unwrap();
        host.wait_for_log_count("reloaded", 2, RELOAD_WAIT);
        probe(&host, Version::Echo, "watch-in-place");
        assert_eq!(host.count_log("reload failed"), 0, "no reload saw half a file:\n{}", host.logs());
        host.assert_no_errors();
    });
}
