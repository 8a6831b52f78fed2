//! `host run --workers N`: N loops on N threads, each with its own guest
//! instances and its own `SO_REUSEPORT` listener; and `--listen-fd`, a
//! listening socket handed over by a supervisor.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{self, HOST, Host, Signal, alone, bounded, configure, guest, shared_cache_home};

const LOG_TIMEOUT: Duration = Duration::from_secs(30);

/// `worker N accepted K connections` lines, as (N, K).
fn accepted_per_worker(host: &Host) -> Vec<(usize, u64)> {
    host.log_lines()
        .iter()
        .filter_map(|line| {
            let (_, rest) = line.split_once("worker ")?;
            let (worker, rest) = rest.split_once(" accepted ")?;
            let count = rest.strip_suffix(" connections")?;
            Some((worker.parse().ok()?, count.parse().ok()?))
        })
        .collect()
}

/// Writes `line` and expects it echoed; false if the connection is gone.
fn echoes(conn: &mut TcpStream, line: &[u8]) -> bool {
    let mut back = vec![0; line.len()];
    conn.write_all(line).is_ok() && conn.read_exact(&mut back).is_ok() && back == line
}

#[test]
fn two_workers_share_a_thousand_connections() {
    bounded(Duration::from_secs(180), || {
        let mut host = Host::command("echo").args(["--workers", "2"]).spawn();
        // Both workers listen on the one port the first bind picked.
        let listening = host.wait_for_log_count("listening on", 2, LOG_TIMEOUT);
        assert!(listening.iter().all(|l| l.contains(&host.addr().to_string())), "{listening:?}");
        for i in 0..1000 {
            let mut conn = host.connect();
            let line = format!("connection {i}\n");
            assert!(echoes(&mut conn, line.as_bytes()), "connection {i} was not echoed");
        }
        host.signal(Signal::TERM);
        let status = host.wait_exit(LOG_TIMEOUT);
        assert!(status.success(), "{}; log:\n{}", support::describe(status), host.logs());
        let mut counts = accepted_per_worker(&host);
        counts.sort();
        let logs = host.logs();
        assert_eq!(counts.iter().map(|&(w, _)| w).collect::<Vec<_>>(), [1, 2], "one count per worker:\n{logs}");
        assert_eq!(counts.iter().map(|&(_, n)| n).sum::<u64>(), 1000, "{counts:?}");
        // The kernel hashes each connection's ports: an even split, give or
        // take; one worker with under a tenth would mean no spreading.
        eprintln!("connections per worker: {counts:?}");
        assert!(counts.iter().all(|&(_, n)| n >= 100), "connections per worker: {counts:?}");
    });
}

#[test]
fn a_trap_in_one_worker_leaves_the_other_workers_connections_open() {
    bounded(Duration::from_secs(120), || {
        let mut host = Host::command("faulty").args(["--workers", "2"]).spawn();
        let mut conns: Vec<TcpStream> = (0..24).map(|_| host.connect()).collect();
        for (i, conn) in conns.iter_mut().enumerate() {
            assert!(echoes(conn, format!("hello {i}\n").as_bytes()));
        }
        let mut trap = conns.pop().unwrap();
        trap.write_all(b"panic\n").unwrap();
        host.wait_for_log("trapped in on-data", LOG_TIMEOUT);
        host.wait_for_log("restarting in", LOG_TIMEOUT);
        // The faulted instance had `connections=N` open (the field ends the
        // fault's entry, after its backtrace), all reset; the other worker's
        // are untouched and still echo.
        let torn_down: usize = host
            .logs()
            .split_whitespace()
            .find_map(|w| w.strip_prefix("connections=")?.parse().ok())
            .unwrap_or_else(|| panic!("no connections=N in the log:\n{}", host.logs()));
        let alive = conns.iter_mut().map(|c| echoes(c, b"still there?\n")).filter(|&ok| ok).count();
        let logs = host.logs();
        assert_eq!(alive + torn_down, 24, "{alive} alive, {torn_down} torn down; log:\n{logs}");
        assert!(alive > 0 && torn_down > 1, "{alive} alive, {torn_down} torn down: all on one worker?");
        // One worker faulted, and only its instance restarted.
        let faulted: Vec<&str> = logs.lines().filter(|l| l.contains("trapped in")).collect();
        assert_eq!(faulted.len(), 1, "{logs}");
        let worker = ["worker{id=1}", "worker{id=2}"].into_iter().find(|w| faulted[0].contains(w));
        let worker = worker.unwrap_or_else(|| panic!("fault line names no worker: {}", faulted[0]));
        host.wait_for_log("restarted", LOG_TIMEOUT);
        let logs = host.logs();
        let restarted: Vec<&str> = logs.lines().filter(|l| l.contains("restarted")).collect();
        assert!(restarted.len() == 1 && restarted[0].contains(worker), "{restarted:?}");
        host.assert_running();
    });
}

/// With two loops on one engine, one loop going idle must not stop the
/// epoch ticks that interrupt a runaway callback on the other.
#[test]
fn a_runaway_callback_is_stopped_while_the_other_worker_keeps_serving() {
    let _alone = alone();
    bounded(Duration::from_secs(120), || {
        let mut host = Host::command("faulty").args(["--workers", "2", "--callback-deadline-ms", "200"]).spawn();
        // Connections opened first, while both workers are idle, so some are
        // the other worker's (all 16 on one of two: 1 chance in 65,536).
        let conns: Vec<TcpStream> = (0..16)
            .map(|i| {
                let mut conn = host.connect();
                assert!(echoes(&mut conn, b"hello\n"), "connection {i} was not echoed");
                conn
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let mut spinner = host.connect();
        let started = Instant::now();
        spinner.write_all(b"spin\n").unwrap();
        // Every connection echoes again and again while the runaway spins:
        // the other worker goes busy and idle many times. The runaway's own
        // worker answers none of them until it is stopped.
        let clients: Vec<_> = conns
            .into_iter()
            .map(|mut conn| {
                let stop = stop.clone();
                thread::spawn(move || {
                    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let mut answered = Vec::new();
                    while !stop.load(Ordering::SeqCst) && echoes(&mut conn, b"ping\n") {
                        answered.push(Instant::now());
                    }
                    answered
                })
            })
            .collect();
        let mut rest = Vec::new();
        let _ = spinner.read_to_end(&mut rest);
        let stopped = Instant::now();
        let took = stopped - started;
        stop.store(true, Ordering::SeqCst);
        let served: usize =
            clients.into_iter().map(|c| c.join().unwrap().into_iter().filter(|&at| at < stopped).count()).sum();
        let line = host.wait_for_log("trapped in on-data", LOG_TIMEOUT);
        assert!(line.contains("deadline exceeded"), "{line}");
        assert!(took < Duration::from_secs(2), "the runaway was stopped only after {took:?}");
        assert!(served > 0, "the other worker served nobody while the runaway spun");
        host.assert_running();
    });
}

// ---- --listen-fd ----------------------------------------------------------

/// A supervisor in miniature: Python binds a listening socket, puts it at
/// descriptor 3, sets systemd's `LISTEN_FDS`/`LISTEN_PID` (the pid survives
/// `exec`) and becomes the host. `kind` is `tcp`, `udp` or `unlistened`.
const LAUNCHER: &str = r#"
import ctypes, os, socket, sys
kind, host, args = sys.argv[1], sys.argv[2], sys.argv[3:]
ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG: die with the test
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM)
sock.bind(("127.0.0.1", 0))
if kind == "tcp":
    sock.listen(128)
print(sock.getsockname()[1], flush=True)
if sock.fileno() != 3:
    os.dup2(sock.fileno(), 3)
os.set_inheritable(3, True)  # a socket is close-on-exec in Python
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(host, [host] + args)
"#;

struct Launched {
    child: Child,
    addr: SocketAddr,
    log: mpsc::Receiver<String>,
    lines: Vec<String>,
}

impl Launched {
    fn start(kind: &str, args: &[&str]) -> Launched {
        let mut child = Command::new("python3")
            .args(["-c", LAUNCHER, kind, HOST])
            .args(args)
            .env("XDG_CACHE_HOME", shared_cache_home())
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot run python3");
        let mut port = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut port).unwrap();
        let port: u16 = port.trim().parse().unwrap_or_else(|_| panic!("the launcher printed {port:?}"));
        let (tx, log) = mpsc::channel();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        thread::spawn(move || stderr.lines().map_while(Result::ok).for_each(|l| drop(tx.send(l))));
        Launched { child, addr: SocketAddr::from(([127, 0, 0, 1], port)), log, lines: Vec::new() }
    }

    /// Waits for a line containing `needle`; None if the host's stderr
    /// ended first.
    fn wait_for(&mut self, needle: &str) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) => {
                    self.lines.push(line.clone());
                    if line.contains(needle) {
                        return Some(line);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("no {needle:?} in time; log:\n{}", self.lines.join("\n"))
                }
            }
        }
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn listen_fd_serves_a_socket_handed_over_by_a_supervisor_on_every_worker() {
    bounded(Duration::from_secs(120), || {
        let echo = guest("echo");
        let echo = echo.to_str().unwrap();
        let mut host = Launched::start("tcp", &["run", echo, "--listen-fd", "systemd", "--workers", "2"]);
        host.wait_for("ready").unwrap_or_else(|| panic!("host exited; log:\n{}", host.lines.join("\n")));
        let listening = host.lines.iter().filter(|l| l.contains(&format!("listening on {}", host.addr))).count();
        assert_eq!(listening, 2, "both workers serve the inherited socket; log:\n{}", host.lines.join("\n"));
        for i in 0..20 {
            let mut conn = TcpStream::connect(host.addr).unwrap();
            configure(&conn);
            assert!(echoes(&mut conn, format!("through the supervisor's socket {i}\n").as_bytes()));
        }
        let pid = rustix::process::Pid::from_raw(host.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, Signal::TERM).unwrap();
        host.wait_for("worker 2 accepted").unwrap();
        let status = host.child.wait().unwrap();
        assert!(status.success(), "{status}");
    });
}

#[test]
fn listen_fd_refuses_a_descriptor_that_is_not_a_listening_tcp_socket() {
    bounded(Duration::from_secs(60), || {
        let echo = guest("echo");
        let echo = echo.to_str().unwrap();
        for (kind, reason) in [("udp", "not a TCP (stream) socket"), ("unlistened", "not listening")] {
            let mut host = Launched::start(kind, &["run", echo, "--listen-fd", "3"]);
            let line = host.wait_for("error:").unwrap_or_else(|| panic!("no error line for a {kind} socket"));
            let expected = format!("error: cannot listen on inherited descriptor 3: it is {reason}");
            assert!(line.starts_with(&expected), "{line}");
            assert_eq!(host.child.wait().unwrap().code(), Some(1));
        }
        let mut host = Launched::start("tcp", &["run", echo, "--listen-fd", "7"]);
        let line = host.wait_for("error:").unwrap();
        assert!(line.starts_with("error: cannot listen on inherited descriptor 7: it is not open"), "{line}");
    });
}
