//! The real `host` binary, run on loopback: started, waited for, read
//! (its log, its /proc entries) and killed.

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::clients::configure;
use super::guests::guest;
use super::measure::{Delta, ThreadStats};
use super::process::{Signal, signal_pid};
use super::watchdog;

/// The `host` binary cargo built for this test run.
pub const HOST: &str = env!("CARGO_BIN_EXE_host");

/// How long a host may take from spawn to its `ready` line: it compiles the
/// guest first, and a 12–19 MB JavaScript or Python component takes 20–40 s
/// in the debug host on a loaded 2-core machine (then it is cached).
const READY_TIMEOUT: Duration = Duration::from_secs(300);

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
        watchdog::started_child(pid);

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
        watchdog::ended_child(pid);
    }
}

/// The `XDG_CACHE_HOME` of every host the tests start (so the compiled
/// cache lives under `target/`, not in the user's home), shared by all tests
/// as by hosts on one machine. Tests of the cache itself pass `--cache-dir`.
pub fn shared_cache_home() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cache-home")
}
