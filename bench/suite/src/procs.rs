//! Starting the contenders as processes, waiting until they serve, and
//! reading what the kernel knows of them (`/proc`).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Where the built pieces are; `bench/run` builds them first.
pub struct Paths {
    pub root: PathBuf,
}

impl Paths {
    pub fn find() -> Paths {
        // The binary is target/release/bench; the workspace is two up.
        let exe = std::env::current_exe().expect("the bench binary's path");
        let root = exe.ancestors().nth(3).expect("target/release/bench lives in the workspace").to_path_buf();
        Paths { root }
    }

    /// A binary cargo built with `--release` (`host`, `echo-native`, ...).
    pub fn bin(&self, name: &str) -> PathBuf {
        self.root.join("target/release").join(name)
    }

    /// A guest built with `--profile guest` (`echo`, `http_hello`, ...).
    pub fn guest(&self, name: &str) -> PathBuf {
        self.root.join("target/wasm32-wasip2/guest").join(format!("{name}.wasm"))
    }

    /// A scratch directory for this run (cache dirs, configs), emptied.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let dir = self.root.join("target/bench-scratch").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating a scratch directory");
        dir
    }
}

/// A server process, killed on drop.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    /// stderr lines up to and including the readiness line (where `host`
    /// names its listeners, the admin one too).
    pub startup: Vec<String>,
    /// stderr lines after the readiness line (for diagnostics).
    lines: mpsc::Receiver<String>,
}

/// How long a server may take to become ready (it may compile a guest).
const READY: Duration = Duration::from_secs(120);

impl Server {
    /// Starts `cmd` and waits for a stderr line saying `listening on ADDR`
    /// (what `host` and our native servers print) and, if `ready_word` is
    /// given, a later line containing it.
    pub fn spawn_logged(mut cmd: Command, ready_word: Option<&str>) -> anyhow::Result<Server> {
        let program = format!("{:?}", cmd.get_program());
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env("NO_COLOR", "1")
            .spawn()
            .with_context(|| format!("cannot start {program}"))?;
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + READY;
        let mut addr = None;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => {
                    let _ = child.kill();
                    bail!("{program} did not become ready; it said:\n{}", seen.join("\n"));
                }
            };
            if addr.is_none() {
                addr = line
                    .split("listening on ")
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|a| a.parse::<SocketAddr>().ok());
            }
            let ready = addr.is_some() && ready_word.is_none_or(|w| line.contains(w));
            seen.push(line);
            if ready {
                break;
            }
        }
        Ok(Server { child, addr: addr.expect("set above"), startup: seen, lines: rx })
    }

    /// Starts `cmd` (which logs nothing we can read) and waits until `addr`
    /// accepts connections.
    pub fn spawn_at(mut cmd: Command, addr: SocketAddr) -> anyhow::Result<Server> {
        let program = format!("{:?}", cmd.get_program());
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {program}"))?;
        let (_tx, rx) = mpsc::channel();
        let mut server = Server { child, addr, startup: Vec::new(), lines: rx };
        let deadline = Instant::now() + READY;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                bail!("{program} exited ({status}) before listening on {addr}");
            }
            if Instant::now() > deadline {
                bail!("{program} did not listen on {addr} within {READY:?}");
            }
            thread::sleep(Duration::from_millis(10));
        }
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// stderr lines printed since readiness (or since the last call).
    pub fn new_lines(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    /// The warnings and errors among [`Server::new_lines`].
    pub fn problems(&self) -> Vec<String> {
        let mut lines = self.new_lines();
        lines.retain(|line| {
            let lower = line.to_ascii_lowercase();
            lower.contains("warn") || lower.contains("error")
        });
        lines
    }

    /// Resident set size, KiB.
    pub fn rss_kib(&self) -> u64 {
        status_field(self.pid(), "VmRSS:").unwrap_or(0)
    }

    /// CPU time (user + system) and context switches (voluntary +
    /// involuntary, all threads) so far.
    pub fn usage(&self) -> Usage {
        Usage::of(self.pid())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process's CPU time and wakeups, summed over its threads.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub cpu: Duration,
    /// Context switches: each time a thread of the process went to sleep
    /// and woke (voluntary) or was preempted (involuntary).
    pub switches: u64,
}

impl Usage {
    pub fn of(pid: u32) -> Usage {
        let mut usage = Usage::default();
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return usage };
        let ticks = rustix::param::clock_ticks_per_second() as u64;
        for task in tasks.filter_map(Result::ok) {
            let path = task.path();
            if let Ok(stat) = std::fs::read_to_string(path.join("stat")) {
                // Fields after the `(comm)`: utime is the 14th field of the
                // line, stime the 15th.
                let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
                let fields: Vec<&str> = after.split_whitespace().collect();
                let utime: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0);
                let stime: u64 = fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
                usage.cpu += Duration::from_nanos((utime + stime) * 1_000_000_000 / ticks);
            }
            usage.switches += status_field_at(&path.join("status"), "voluntary_ctxt_switches:").unwrap_or(0);
            usage.switches += status_field_at(&path.join("status"), "nonvoluntary_ctxt_switches:").unwrap_or(0);
        }
        usage
    }

    pub fn since(&self, earlier: &Usage) -> Usage {
        Usage { cpu: self.cpu.saturating_sub(earlier.cpu), switches: self.switches.saturating_sub(earlier.switches) }
    }
}

fn status_field(pid: u32, key: &str) -> Option<u64> {
    status_field_at(Path::new(&format!("/proc/{pid}/status")), key)
}

fn status_field_at(path: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find(|l| l.starts_with(key))?.split_whitespace().nth(1)?.parse().ok()
}

/// Whether `program` is on PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {program}")).output().is_ok_and(|o| o.status.success())
}
