//! The harness shared by the integration tests.
//!
//! - [`guest`] builds the first-party guests from source, once per test
//!   process, and returns the path of a `.wasm` component.
//! - [`Host`] runs the real `host` binary on loopback, waits for its `ready`
//!   log line, keeps its log, and kills it when dropped.
//! - [`bounded`] runs a test body under a watchdog: a test that hangs fails
//!   (and its hosts are killed) instead of blocking CI.
//! - Small helpers: a line reader with deadlines, a background writer that
//!   reports its progress, `/proc` readings (CPU time, wakeups, descriptors,
//!   TCP queues), a seeded PRNG.
//!
//! Every test binary uses a different part of this module.
#![allow(dead_code)]

pub mod conformance;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub use rustix::process::Signal;

/// The `host` binary cargo built for this test run.
pub const HOST: &str = env!("CARGO_BIN_EXE_host");

/// How long a host may take from spawn to its `ready` line: it compiles the
/// guest first, and a 12–19 MB JavaScript or Python component takes 20–40 s
/// in the debug host on a loaded 2-core machine (then it is cached).
const READY_TIMEOUT: Duration = Duration::from_secs(300);
/// Read and write timeouts on client sockets: a second line of defence
/// behind the watchdog, so no socket call blocks forever.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long building the guests may take (a cold build on 2 cores).
const BUILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);

// ---- Guests -------------------------------------------------------------

/// Set while a test process builds the guests: the watchdog does not count
/// that time against the test that happens to trigger the build.
static BUILDING: AtomicBool = AtomicBool::new(false);

/// The workspace root (the host crate's parent).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the host crate lives inside the workspace").to_path_buf()
}

/// The path of a first-party guest component (`echo`, `chat`, `ticker`,
/// `faulty`, `hostile`, `relay`, `udp_echo`, `hello`, `broken_init`),
/// building all of them from source the first time it is called in this
/// process.
pub fn guest(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        BUILDING.store(true, Ordering::SeqCst);
        let result = build_guests();
        BUILDING.store(false, Ordering::SeqCst);
        result
    });
    let dir = match dir {
        Ok(dir) => dir,
        Err(e) => panic!("{e}"),
    };
    let path = dir.join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "guest build succeeded but {} does not exist (is the target directory elsewhere?)",
        path.display()
    );
    path
}

fn build_guests() -> Result<PathBuf, String> {
    let root = workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&root).args([
        "build",
        "--profile",
        "guest",
        "--target",
        "wasm32-wasip2",
        "-p",
        "echo",
        "-p",
        "chat",
        "-p",
        "ticker",
        "-p",
        "faulty",
        "-p",
        "counter",
        "-p",
        "hostile",
        "-p",
        "relay",
        "-p",
        "udp-echo",
        "-p",
        "hello",
        "-p",
        "broken-init",
        "-p",
        "http-hello",
        "-p",
        "http-static-kv",
        "-p",
        "ws-chat",
    ]);
    let out = run_bounded(cmd, BUILD_TIMEOUT).map_err(|e| format!("cannot run {cargo:?} to build the guests: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building the guests failed ({}). Is the target installed? \
             Try `rustup target add wasm32-wasip2`.\ncargo's stderr:\n{}",
            out.status, out.stderr
        ));
    }
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        // `join` keeps an absolute path as it is; a relative one is relative
        // to where cargo ran, the workspace root.
        Some(dir) => root.join(dir),
        None => root.join("target"),
    };
    Ok(target.join("wasm32-wasip2").join("guest"))
}

/// A guest from `examples/<example>/` written in another language, built by
/// its `build.sh` (which installs its toolchain by package name if missing)
/// once per test process; returns `target/examples/<example>.wasm`.
pub fn example_guest(example: &str) -> PathBuf {
    static BUILT: Mutex<BTreeMap<String, Result<PathBuf, String>>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let result = built.entry(example.to_string()).or_insert_with(|| {
        BUILDING.store(true, Ordering::SeqCst);
        let result = build_example(example);
        BUILDING.store(false, Ordering::SeqCst);
        result
    });
    match result {
        Ok(path) => path.clone(),
        Err(e) => panic!("{e}"),
    }
}

fn build_example(example: &str) -> Result<PathBuf, String> {
    let root = workspace_root();
    let script = root.join("examples").join(example).join("build.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(&script).current_dir(&root);
    let out = run_bounded(cmd, BUILD_TIMEOUT).map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!("{} failed ({}):\n{}\n{}", script.display(), out.status, out.stdout, out.stderr));
    }
    let path = root.join("target").join("examples").join(format!("{example}.wasm"));
    if !path.is_file() {
        return Err(format!("{} succeeded but did not produce {}", script.display(), path.display()));
    }
    Ok(path)
}

// ---- Running commands ---------------------------------------------------

/// What a finished command printed.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// stderr's non-empty lines.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr.lines().filter(|l| !l.trim().is_empty()).collect()
    }
}

/// Runs `cmd` to completion with no stdin, killing it if it takes longer
/// than `limit`.
pub fn run_bounded(mut cmd: Command, limit: Duration) -> io::Result<Output> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let stdout = drain_in_background(child.stdout.take().expect("piped stdout"));
    let stderr = drain_in_background(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(ErrorKind::TimedOut, format!("{cmd:?} did not finish within {limit:?}")));
        }
        thread::sleep(Duration::from_millis(10));
    };
    Ok(Output { status, stdout: stdout.join().unwrap_or_default(), stderr: stderr.join().unwrap_or_default() })
}

fn drain_in_background(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

// ---- Watchdog -----------------------------------------------------------

thread_local! {
    /// The host processes started by the current test body, so the watchdog
    /// can kill them when the body hangs.
    static CHILDREN: RefCell<Option<Arc<Mutex<Vec<u32>>>>> = const { RefCell::new(None) };
}

/// Runs `body` on its own thread and fails the test if it does not finish
/// within `limit` (time spent building the guests is not counted). On
/// timeout, the hosts the body started are killed, which also unblocks any
/// socket call the body is stuck in. A panic in `body` fails the test with
/// its own message.
pub fn bounded<F: FnOnce() + Send + 'static>(limit: Duration, body: F) {
    let children = Arc::new(Mutex::new(Vec::<u32>::new()));
    let registry = children.clone();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let name = thread::current().name().unwrap_or("test").to_string();
    let worker = thread::Builder::new()
        .name(name)
        .spawn(move || {
            CHILDREN.with(|c| *c.borrow_mut() = Some(registry));
            body();
            let _ = done_tx.send(());
        })
        .expect("cannot spawn the test thread");
    let slice = Duration::from_millis(50);
    let mut counted = Duration::ZERO;
    loop {
        let start = Instant::now();
        match done_rx.recv_timeout(slice) {
            Ok(()) => break,
            Err(mpsc::RecvTimeoutError::Disconnected) => break, // panicked
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if !BUILDING.load(Ordering::SeqCst) {
                    counted += start.elapsed();
                }
                if counted >= limit {
                    let pids = children.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    for &pid in &pids {
                        signal_pid(pid, Signal::KILL);
                    }
                    panic!(
                        "watchdog: the test did not finish within {limit:?}; \
                         killed its host processes {pids:?}"
                    );
                }
            }
        }
    }
    if let Err(payload) = worker.join() {
        std::panic::resume_unwind(payload);
    }
}

fn signal_pid(pid: u32, signal: Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

// ---- The host -----------------------------------------------------------

/// The host's stderr, line by line, shared with the thread that reads it.
struct Log {
    state: Mutex<LogState>,
    changed: Condvar,
}

#[derive(Default)]
struct LogState {
    lines: Vec<String>,
    /// stderr reached end-of-file: the host exited.
    closed: bool,
}

impl Log {
    /// Waits until `done` holds for the log (or `deadline` passes); returns
    /// whether it held.
    fn wait_until(&self, deadline: Instant, mut done: impl FnMut(&LogState) -> bool) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if done(&state) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = self.changed.wait_timeout(state, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    fn text(&self) -> String {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut text = String::new();
        for line in &state.lines {
            text.push_str(line);
            text.push('\n');
        }
        text
    }
}

/// How to start a host: `host run <guest> --listen 127.0.0.1:0 <args>`, or
/// `host run --config FILE <args>`.
pub struct HostCommand {
    guest: PathBuf,
    /// Run the guests of this TOML file instead of `guest`.
    config: Option<PathBuf>,
    args: Vec<String>,
    env: Vec<(String, OsString)>,
    /// The descriptor limit and the `ulimit` flags that set it.
    fd_limit: Option<(u32, &'static str)>,
    /// The flag the guest's one listener is opened with (`--listen`).
    listen: &'static str,
}

impl HostCommand {
    /// Opens the guest's listener with `flag` (`--listen-http`,
    /// `--listen-ws`) instead of `--listen`.
    pub fn listen_flag(mut self, flag: &'static str) -> Self {
        self.listen = flag;
        self
    }

    /// Adds command-line arguments after the guest and `--listen`.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable for the host.
    pub fn env(mut self, key: &str, value: impl Into<OsString>) -> Self {
        self.env.push((key.to_string(), value.into()));
        self
    }

    /// Runs the host with this many file descriptors at most
    /// (`ulimit -n` in a shell that then `exec`s the host, so the pid is the
    /// host's): soft and hard limit alike.
    pub fn fd_limit(mut self, limit: u32) -> Self {
        self.fd_limit = Some((limit, "-n"));
        self
    }

    /// Starts the host with this soft descriptor limit, the hard one left
    /// as it is (`ulimit -S -n`).
    pub fn soft_fd_limit(mut self, limit: u32) -> Self {
        self.fd_limit = Some((limit, "-S -n"));
        self
    }

    /// Starts the host and waits (bounded) for its `ready` line.
    pub fn spawn(self) -> Host {
        let mut cmd = match self.fd_limit {
            Some((limit, flags)) => {
                let mut cmd = Command::new("sh");
                cmd.arg("-c").arg(format!("ulimit {flags} {limit} && exec \"$0\" \"$@\"")).arg(HOST);
                cmd
            }
            None => Command::new(HOST),
        };
        cmd.arg("run");
        match &self.config {
            Some(file) => cmd.arg("--config").arg(file),
            None => cmd.arg(&self.guest).args([self.listen, "127.0.0.1:0"]),
        };
        cmd.args(&self.args)
            .env("XDG_CACHE_HOME", shared_cache_home())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: the closure only makes one async-signal-safe system call
        // (prctl) between fork and exec. If the test process dies without
        // running `Host::drop` (say, it is killed), the host dies too.
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(Signal::KILL)).map_err(io::Error::from)
            });
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {HOST}: {e}"));
        let pid = child.id();
        CHILDREN.with(|c| {
            if let Some(children) = &*c.borrow() {
                children.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
            }
        });

        let log = Arc::new(Log { state: Mutex::new(LogState::default()), changed: Condvar::new() });
        let stderr = child.stderr.take().expect("piped stderr");
        let reader = {
            let log = log.clone();
            thread::Builder::new()
                .name(format!("host-{pid}-stderr"))
                .spawn(move || {
                    let mut stderr = BufReader::new(stderr);
                    let mut line = Vec::new();
                    loop {
                        line.clear();
                        match stderr.read_until(b'\n', &mut line) {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {
                                let text = String::from_utf8_lossy(&line);
                                let text = text.trim_end_matches(['\n', '\r']).to_string();
                                log.state.lock().unwrap_or_else(|e| e.into_inner()).lines.push(text);
                                log.changed.notify_all();
                            }
                        }
                    }
                    log.state.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
                    log.changed.notify_all();
                })
                .expect("cannot spawn the log reader")
        };

        let mut host = Host { child, log, reader: Some(reader), addrs: Vec::new() };
        // Wait for `ready`, or for the end of the log (the host exited).
        host.log.wait_until(Instant::now() + READY_TIMEOUT, |s| s.closed || s.lines.iter().any(|l| is_ready_line(l)));
        if !host.log_lines().iter().any(|l| is_ready_line(l)) {
            let status = host.try_exit();
            panic!(
                "host did not log `ready` within {READY_TIMEOUT:?} (exit status: {status:?}); log:\n{}",
                host.logs()
            );
        }
        host.addrs = host.log_lines().iter().filter_map(|l| listening_address(l)).collect();
        assert!(!host.addrs.is_empty(), "host is ready but logged no `listening on ADDR` line; log:\n{}", host.logs());
        host
    }
}

/// The `ready` line, and not, say, "address already in use"; in text or
/// JSON (`--log-format json`).
fn is_ready_line(line: &str) -> bool {
    line.split_whitespace().last() == Some("ready") || line.contains(r#""message":"ready""#)
}

/// The address in `... listening on 127.0.0.1:41234 guest="echo"` (or
/// `"message":"listening on 127.0.0.1:41234"`).
fn listening_address(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once("listening on ")?;
    rest.split([' ', '"']).next()?.parse().ok()
}

/// A running `host` process. Dropping it kills the process.
pub struct Host {
    child: Child,
    log: Arc<Log>,
    reader: Option<JoinHandle<()>>,
    addrs: Vec<SocketAddr>,
}

impl Host {
    /// A host for the named first-party guest; add arguments, then `spawn`.
    pub fn command(guest_name: &str) -> HostCommand {
        Host::command_for(guest(guest_name))
    }

    /// A host for any component file.
    pub fn command_for(module: impl Into<PathBuf>) -> HostCommand {
        HostCommand {
            guest: module.into(),
            config: None,
            args: Vec::new(),
            env: Vec::new(),
            fd_limit: None,
            listen: "--listen",
        }
    }

    /// A host running the guests of a TOML config file
    /// (`host run --config FILE`); see [`Host::addr_of`] for their addresses.
    pub fn with_config(file: impl Into<PathBuf>) -> HostCommand {
        HostCommand {
            guest: PathBuf::new(),
            config: Some(file.into()),
            args: Vec::new(),
            env: Vec::new(),
            fd_limit: None,
            listen: "--listen",
        }
    }

    /// A host running the named guest with default settings, ready.
    pub fn start(guest_name: &str) -> Host {
        Host::command(guest_name).spawn()
    }

    /// The (first) address the host listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The admin listener's address (`--admin`), from the host's
    /// `admin listening on http://ADDR/` line.
    pub fn admin_addr(&self) -> SocketAddr {
        let line = self.wait_for_log("admin listening on http://", Duration::from_secs(30));
        line.split("admin listening on http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no admin address in {line:?}"))
    }

    /// The (first) address the named guest listens on, from its
    /// `listening on ADDR guest="NAME"` log line.
    pub fn addr_of(&self, guest: &str) -> SocketAddr {
        let tag = format!("guest=\"{guest}\"");
        self.log_lines()
            .iter()
            .filter(|l| l.split_whitespace().any(|word| word == tag))
            .find_map(|l| listening_address(l))
            .unwrap_or_else(|| panic!("no `listening on ADDR {tag}` line; log:\n{}", self.logs()))
    }

    /// A new client connection with read and write timeouts.
    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect_timeout(&self.addr(), Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("cannot connect to the host at {}: {e}", self.addr()));
        configure(&stream);
        stream
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: Signal) {
        signal_pid(self.pid(), signal);
    }

    /// The exit status if the process has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits (polling) for the process to exit; panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                return status;
            }
            if Instant::now() >= deadline {
                panic!("host (pid {}) did not exit within {timeout:?}; log:\n{}", self.pid(), self.logs());
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Panics if the host has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.try_exit() {
            panic!("host exited unexpectedly ({status}); log:\n{}", self.logs());
        }
    }

    /// Everything the host wrote to stderr so far.
    pub fn logs(&self) -> String {
        self.log.text()
    }

    pub fn log_lines(&self) -> Vec<String> {
        self.log.state.lock().unwrap_or_else(|e| e.into_inner()).lines.clone()
    }

    /// Waits until a log line contains `needle` and returns that line;
    /// panics after `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        let mut found = None;
        self.log.wait_until(Instant::now() + timeout, |s| {
            found = s.lines.iter().find(|l| l.contains(needle)).cloned();
            found.is_some()
        });
        found.unwrap_or_else(|| {
            panic!("no host log line containing {needle:?} within {timeout:?}; log:\n{}", self.logs())
        })
    }

    /// Waits until at least `count` log lines contain `needle` and returns
    /// all of them (so far); panics after `timeout`.
    pub fn wait_for_log_count(&self, needle: &str, count: usize, timeout: Duration) -> Vec<String> {
        self.wait_for_lines(&format!("containing {needle:?}"), count, timeout, |l| l.contains(needle))
    }

    /// Waits until at least `count` log lines satisfy `matches` and returns
    /// all of them (so far); panics after `timeout`, naming the lines by
    /// `what`.
    pub fn wait_for_lines(
        &self,
        what: &str,
        count: usize,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        let mut found = Vec::new();
        self.log.wait_until(Instant::now() + timeout, |s| {
            found = s.lines.iter().filter(|l| matches(l)).cloned().collect();
            found.len() >= count
        });
        if found.len() < count {
            panic!(
                "{} host log line(s) {what} within {timeout:?}, expected {count}; log:\n{}",
                found.len(),
                self.logs()
            );
        }
        found
    }

    /// How many log lines so far contain `needle`.
    pub fn count_log(&self, needle: &str) -> usize {
        self.log.state.lock().unwrap_or_else(|e| e.into_inner()).lines.iter().filter(|l| l.contains(needle)).count()
    }

    /// Panics if the host logged an error (a guest trap is logged as one).
    pub fn assert_no_errors(&self) {
        let errors: Vec<String> = self.log_lines().into_iter().filter(|l| l.contains(" ERROR ")).collect();
        assert!(errors.is_empty(), "host logged errors:\n{}\nfull log:\n{}", errors.join("\n"), self.logs());
    }

    /// The host process's resident memory (`VmRSS`), in bytes.
    pub fn rss_bytes(&self) -> u64 {
        self.status_bytes("VmRSS:")
    }

    /// The most resident memory the host process had (VmHWM), in bytes.
    pub fn peak_rss_bytes(&self) -> u64 {
        self.status_bytes("VmHWM:")
    }

    /// A size in kB from the host's /proc status (`VmRSS:`), in bytes.
    fn status_bytes(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("cannot read status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("status has {field}"));
        kib * 1024
    }

    /// Open file descriptors of the host process.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).expect("cannot list the host's descriptors").count()
    }

    /// CPU time and wakeups of every thread of the host.
    pub fn threads(&self) -> ThreadStats {
        ThreadStats::read(self.pid())
    }

    /// What the host's threads did (CPU time, wakeups) during `window`: the
    /// test sleeps for it, as the measurement, not to wait for readiness.
    pub fn activity_over(&self, window: Duration) -> Delta {
        let before = self.threads();
        thread::sleep(window);
        self.threads().since(&before)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("---- log of host pid {} ----\n{}----", self.pid(), self.logs());
        }
        let pid = self.pid();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        CHILDREN.with(|c| {
            if let Some(children) = &*c.borrow() {
                children.lock().unwrap_or_else(|e| e.into_inner()).retain(|&p| p != pid);
            }
        });
    }
}

/// The `XDG_CACHE_HOME` of every host the tests start (so the compiled
/// cache lives under `target/`, not in the user's home), shared by all tests
/// as by hosts on one machine. Tests of the cache itself pass `--cache-dir`.
pub fn shared_cache_home() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cache-home")
}

/// Timeouts and no Nagle on a client socket.
pub fn configure(stream: &TcpStream) {
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
}

/// Describes how the process ended, for assertion messages.
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => format!("{status}"),
    }
}

// ---- /proc readings -------------------------------------------------------

/// Per-thread CPU time (ns on CPU, from `schedstat`) and voluntary context
/// switches (each one is a wakeup after sleeping) of one process.
#[derive(Clone, Debug, Default)]
pub struct ThreadStats {
    /// tid -> (name, ns on CPU, voluntary context switches)
    pub threads: BTreeMap<u32, (String, u64, u64)>,
}

impl ThreadStats {
    pub fn read(pid: u32) -> ThreadStats {
        let mut threads = BTreeMap::new();
        let dir = format!("/proc/{pid}/task");
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {dir}: {e}")) {
            let Ok(entry) = entry else { continue };
            let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else {
                continue;
            };
            let path = entry.path();
            // A thread may exit between listing and reading: skip it.
            let Ok(schedstat) = std::fs::read_to_string(path.join("schedstat")) else {
                continue;
            };
            let Ok(status) = std::fs::read_to_string(path.join("status")) else {
                continue;
            };
            let run_ns = schedstat
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .expect("schedstat starts with ns on CPU");
            let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string());
            let switches = field("voluntary_ctxt_switches:")
                .and_then(|v| v.parse().ok())
                .expect("status has voluntary_ctxt_switches");
            let name = field("Name:").unwrap_or_default();
            threads.insert(tid, (name, run_ns, switches));
        }
        ThreadStats { threads }
    }

    /// Total ns on CPU over all threads.
    pub fn run_ns(&self) -> u64 {
        self.threads.values().map(|t| t.1).sum()
    }

    /// What happened between `earlier` and `self`: total ns on CPU, total
    /// voluntary switches, and a per-thread description. Threads that
    /// appeared meanwhile count in full.
    pub fn since(&self, earlier: &ThreadStats) -> Delta {
        let mut delta = Delta::default();
        for (tid, (name, run, switches)) in &self.threads {
            let (run0, switches0) = earlier.threads.get(tid).map(|t| (t.1, t.2)).unwrap_or((0, 0));
            let d_run = run.saturating_sub(run0);
            let d_switches = switches.saturating_sub(switches0);
            delta.run_ns += d_run;
            delta.switches += d_switches;
            let _ = writeln!(
                delta.detail,
                "  thread {tid} {name:?}: {:.3} ms on CPU, {d_switches} voluntary switches",
                d_run as f64 / 1e6
            );
        }
        delta
    }
}

#[derive(Debug, Default)]
pub struct Delta {
    pub run_ns: u64,
    pub switches: u64,
    pub detail: String,
}

/// One TCP socket as `/proc/net/tcp` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpSocket {
    /// `ESTABLISHED`, `CLOSE_WAIT` (the peer's FIN arrived, we have not
    /// closed), `LISTEN`, ...
    pub state: &'static str,
    /// Bytes sent but not acknowledged by the peer (for a listener: 0).
    pub send_queue: u64,
    /// Bytes received but not read by the owning process (for a listener:
    /// connections waiting to be accepted).
    pub recv_queue: u64,
}

/// The socket with this local and remote port (remote 0 for a listener).
pub fn tcp_socket(local_port: u16, remote_port: u16) -> Option<TcpSocket> {
    // The kernel builds the table a buffer at a time; sockets that come and
    // go between two reads can make it skip entries. Read it in one call,
    // and look again if the socket is missing.
    for _ in 0..5 {
        let mut file = std::fs::File::open("/proc/net/tcp").ok()?;
        let mut table = vec![0u8; 4 << 20];
        let mut len = 0;
        while len < table.len() {
            match file.read(&mut table[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
        let table = String::from_utf8_lossy(&table[..len]);
        if let Some(socket) = find_tcp_socket(&table, local_port, remote_port) {
            return Some(socket);
        }
    }
    None
}

/// (send queue, receive queue) of [`tcp_socket`].
pub fn tcp_queues(local_port: u16, remote_port: u16) -> Option<(u64, u64)> {
    tcp_socket(local_port, remote_port).map(|s| (s.send_queue, s.recv_queue))
}

fn find_tcp_socket(table: &str, local_port: u16, remote_port: u16) -> Option<TcpSocket> {
    let port = |field: &str| u16::from_str_radix(field.rsplit(':').next()?, 16).ok();
    // `sl local_address rem_address st tx_queue:rx_queue ...`, hex.
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 5 || port(fields[1])? != local_port || port(fields[2])? != remote_port {
            return None;
        }
        let state = match u8::from_str_radix(fields[3], 16).ok()? {
            0x01 => "ESTABLISHED",
            0x02 => "SYN_SENT",
            0x03 => "SYN_RECV",
            0x04 => "FIN_WAIT1",
            0x05 => "FIN_WAIT2",
            0x06 => "TIME_WAIT",
            0x07 => "CLOSE",
            0x08 => "CLOSE_WAIT",
            0x09 => "LAST_ACK",
            0x0A => "LISTEN",
            0x0B => "CLOSING",
            _ => "UNKNOWN",
        };
        let (tx, rx) = fields[4].split_once(':')?;
        Some(TcpSocket {
            state,
            send_queue: u64::from_str_radix(tx, 16).ok()?,
            recv_queue: u64::from_str_radix(rx, 16).ok()?,
        })
    })
}

// ---- Clients ----------------------------------------------------------------

/// Reads `\n`-terminated lines from a stream, with deadlines, never losing
/// bytes when a wait times out.
pub struct LineReader {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl LineReader {
    pub fn new(stream: TcpStream) -> LineReader {
        LineReader { stream, buf: Vec::new() }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Sends `line` plus `\n`.
    pub fn send(&mut self, line: &str) {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.stream.write_all(&bytes).unwrap_or_else(|e| panic!("cannot send {line:?}: {e}"));
    }

    /// The next line (without its `\n`), or `None` if none is complete by
    /// `deadline`. Panics on end-of-stream or a socket error.
    pub fn line_by(&mut self, deadline: Instant) -> Option<String> {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                return Some(String::from_utf8_lossy(&line[..end]).into_owned());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            let wait = (deadline - now).max(Duration::from_millis(1));
            self.stream.set_read_timeout(Some(wait)).unwrap();
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!(
                    "connection closed while waiting for a line (unfinished: {:?})",
                    String::from_utf8_lossy(&self.buf)
                ),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
                Err(e) => panic!("reading a line failed: {e}"),
            }
        }
    }

    /// The next line, waiting at most [`IO_TIMEOUT`].
    pub fn line(&mut self) -> String {
        self.line_by(Instant::now() + IO_TIMEOUT).unwrap_or_else(|| panic!("no complete line within {IO_TIMEOUT:?}"))
    }
}

/// A thread writing a buffer to a stream, reporting how far it got.
pub struct Writer {
    progress: Arc<AtomicUsize>,
    total: usize,
    handle: JoinHandle<io::Result<()>>,
}

impl Writer {
    /// Writes `data` in 64 KiB pieces; then, if `then_shutdown`, shuts the
    /// write side down.
    pub fn start(stream: &TcpStream, data: Arc<Vec<u8>>, then_shutdown: bool) -> Writer {
        let mut stream = stream.try_clone().expect("cannot clone the socket");
        let progress = Arc::new(AtomicUsize::new(0));
        let total = data.len();
        let counter = progress.clone();
        let handle = thread::spawn(move || {
            for piece in data.chunks(64 * 1024) {
                stream.write_all(piece)?;
                counter.fetch_add(piece.len(), Ordering::SeqCst);
            }
            if then_shutdown {
                stream.shutdown(std::net::Shutdown::Write)?;
            }
            Ok(())
        });
        Writer { progress, total, handle }
    }

    pub fn written(&self) -> usize {
        self.progress.load(Ordering::SeqCst)
    }

    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Waits until the writer has finished or made no progress for `quiet`
    /// (the other side stopped taking bytes: backpressure reached us);
    /// returns the bytes written by then. Panics after `limit`.
    pub fn wait_until_stalled(&self, quiet: Duration, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        let mut last = self.written();
        let mut since = Instant::now();
        loop {
            if self.is_finished() {
                return self.written();
            }
            thread::sleep(Duration::from_millis(10));
            let now = self.written();
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                return now;
            }
            assert!(
                Instant::now() < deadline,
                "the writer neither finished nor stalled within {limit:?} ({now} of {} bytes)",
                self.total
            );
        }
    }

    /// Waits for the writer to finish; panics on a write error.
    pub fn join(self) {
        let written = self.written();
        match self.handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("writing failed after {written} of {} bytes: {e}", self.total),
            Err(payload) => std::panic::resume_unwind(payload),
        }
    }
}

/// Reads exactly `len` bytes.
pub fn read_exactly(stream: &mut TcpStream, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match stream.read(&mut buf[got..]) {
            Ok(0) => panic!("end-of-stream after {got} of {len} bytes"),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("reading failed after {got} of {len} bytes: {e}"),
        }
    }
    buf
}

/// Reads until end-of-stream. On an error (a timeout, a reset) returns the
/// bytes read so far with it.
pub fn read_to_eof(stream: &mut TcpStream) -> Result<Vec<u8>, (Vec<u8>, io::Error)> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err((got, e)),
        }
    }
}

/// Asserts two byte strings are equal, naming the first difference instead
/// of printing megabytes.
pub fn assert_same_bytes(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let first = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
    panic!("{what}: got {} bytes, expected {}; first difference at offset {first}", got.len(), want.len());
}

/// `len` pseudo-random bytes from a xorshift64 generator: reproducible from
/// `seed`, and incompressible enough that a dropped, duplicated or
/// reordered piece cannot go unnoticed.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// CLOCK_MONOTONIC in nanoseconds: the clock the host's timers and the
/// guests' `now()` use.
pub fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Raises this process's soft descriptor limit to at least `wanted` (up to
/// the hard limit), so tests with many sockets do not run out. Hosts started
/// afterwards inherit it.
pub fn raise_fd_limit(wanted: u64) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_none_or(|c| c >= wanted) {
        return;
    }
    let target = match limit.maximum {
        Some(max) => wanted.min(max),
        None => wanted,
    };
    let _ = setrlimit(Resource::Nofile, Rlimit { current: Some(target), maximum: limit.maximum });
    let now = getrlimit(Resource::Nofile).current;
    assert!(now.is_none_or(|c| c >= wanted), "need {wanted} file descriptors, the limit is {now:?}");
}
