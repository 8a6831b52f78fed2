//! Readings of what a process does, from /proc: CPU time and wakeups per
//! thread, TCP queues; and the monotonic clock the host's timers use.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{ErrorKind, Read};

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

/// CLOCK_MONOTONIC in nanoseconds: the clock the host's timers and the
/// guests' `now()` use.
pub fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}
