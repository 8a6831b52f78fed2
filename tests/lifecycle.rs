//! The host process over its life: graceful shutdown on SIGTERM/SIGINT,
//! sleeping when idle, surviving descriptor exhaustion, and giving back
//! every descriptor it took.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{self, Host, Signal, Writer, alone, assert_same_bytes, bounded, describe, random_bytes};

const MIB: usize = 1 << 20;

/// Polls `condition` every 10 ms until it holds or `limit` passes; returns
/// whether it held.
fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sigterm_sends_all_buffered_output_then_closes_and_exits_0() {
    bounded(Duration::from_secs(120), || {
        // The output buffer holds the whole payload, so the echo takes every
        // byte at once; a long shutdown timeout, so a slow machine still
        // drains.
        let mut host = Host::command("echo")
            .args(["--max-output", &(4 * MIB).to_string()])
            .args(["--shutdown-timeout-ms", "20000"])
            .spawn();
        let mut client = host.connect();
        let data = Arc::new(random_bytes(2 * MIB, 0x5eed_1001));
        let writer = Writer::start(&client, data.clone(), false);
        writer.wait_until_stalled(Duration::from_millis(500), Duration::from_secs(60));
        assert!(writer.is_finished(), "the host stopped taking bytes after {} of {}", writer.written(), data.len());
        writer.join();

        // The guest only echoes what the host has read, and after SIGTERM
        // the host reads no more: wait until every byte left our socket and
        // the host's receive queue is empty.
        let ours = client.local_addr().unwrap().port();
        let theirs = host.addr().port();
        let all_read = eventually(Duration::from_secs(30), || {
            support::tcp_queues(ours, theirs).is_some_and(|(unacked, _)| unacked == 0)
                && support::tcp_queues(theirs, ours).is_some_and(|(_, unread)| unread == 0)
        });
        assert!(
            all_read,
            "the host did not read all the bytes: client (tx, rx) {:?}, host (tx, rx) {:?}",
            support::tcp_queues(ours, theirs),
            support::tcp_queues(theirs, ours)
        );

        host.signal(Signal::TERM);
        let mut back = Vec::new();
        client.read_to_end(&mut back).expect("reading the echo until end-of-stream");
        assert_same_bytes(&back, &data, "bytes echoed before the shutdown close");
        // Exits once drained, without waiting for the 20 s timeout.
        let status = host.wait_exit(Duration::from_secs(10));
        assert!(status.success(), "host ended with {}", describe(status));
        host.wait_for_log("shutting down", Duration::ZERO);
        host.assert_no_errors();
    });
}

#[test]
fn sigterm_with_no_connections_exits_0_promptly() {
    bounded(Duration::from_secs(60), || {
        let mut host = Host::start("echo");
        let sent = Instant::now();
        host.signal(Signal::TERM);
        let status = host.wait_exit(Duration::from_secs(10));
        let took = sent.elapsed();
        assert!(status.success(), "host ended with {}", describe(status));
        assert!(
            took < Duration::from_secs(3),
            "exit took {took:?}: an idle host need not wait for the shutdown timeout"
        );
    });
}

#[test]
fn sigint_with_no_connections_exits_0_promptly() {
    bounded(Duration::from_secs(60), || {
        let mut host = Host::start("echo");
        let sent = Instant::now();
        host.signal(Signal::INT);
        let status = host.wait_exit(Duration::from_secs(10));
        let took = sent.elapsed();
        assert!(status.success(), "host ended with {}", describe(status));
        assert!(took < Duration::from_secs(3), "exit took {took:?}");
    });
}

#[test]
fn an_idle_host_with_open_connections_sleeps() {
    let _alone = alone();
    const WINDOW: Duration = Duration::from_secs(3);
    bounded(Duration::from_secs(60), || {
        let mut host = Host::start("echo");
        // Ten connections, each used once, then left open and quiet.
        let clients: Vec<TcpStream> = (0..10).map(|i| echoed_once(&host, i)).collect();
        let delta = host.activity_over(WINDOW);
        eprintln!(
            "idle for {WINDOW:?}: {:.3} ms on CPU, {} wakeups\n{}",
            delta.run_ns as f64 / 1e6,
            delta.switches,
            delta.detail
        );
        assert!(
            delta.run_ns < 10_000_000,
            "an idle host used {:.3} ms of CPU in {WINDOW:?}:\n{}",
            delta.run_ns as f64 / 1e6,
            delta.detail
        );
        assert!(delta.switches <= 5, "an idle host woke up {} times in {WINDOW:?}:\n{}", delta.switches, delta.detail);
        host.assert_running();
        drop(clients);
    });
}

/// The descriptor limit for the EMFILE tests, and how many clients to
/// open: enough that the host runs out.
const FD_LIMIT: u32 = 64;
const FLOOD: usize = 100;

/// A host limited to [`FD_LIMIT`] descriptors, and [`FLOOD`] connected
/// clients, once the host has logged that it ran out.
///
/// The host fits its connection limit to the descriptor limit it starts
/// with, so it would not run out by its own connections: the limit is
/// lowered under it once it runs, as when something else in the process
/// takes descriptors.
fn flooded_host() -> (Host, usize, Vec<TcpStream>) {
    use rustix::process::{Pid, Resource, Rlimit, prlimit};
    let host = Host::command("echo").spawn();
    let pid = Pid::from_raw(host.pid() as i32).expect("a pid");
    let limit = Some(u64::from(FD_LIMIT));
    prlimit(Some(pid), Resource::Nofile, Rlimit { current: limit, maximum: limit }).expect("lower the host's limit");
    let baseline_fds = host.fd_count();
    // The kernel completes these handshakes whether or not the host can
    // accept them.
    let clients: Vec<TcpStream> = (0..FLOOD).map(|_| host.connect()).collect();
    host.wait_for_log("accept failed", Duration::from_secs(30));
    (host, baseline_fds, clients)
}

#[test]
fn running_out_of_descriptors_neither_spins_nor_stops_the_loop() {
    bounded(Duration::from_secs(120), || {
        let (mut host, baseline_fds, clients) = flooded_host();

        let delta = host.activity_over(Duration::from_secs(1));
        assert!(
            delta.run_ns < 300_000_000,
            "out of descriptors, the host used {:.1} ms of CPU in 1 s:\n{}",
            delta.run_ns as f64 / 1e6,
            delta.detail
        );
        host.assert_running();

        // Once the clients leave and descriptors free up, a new client is
        // served.
        drop(clients);
        assert!(
            eventually(Duration::from_secs(10), || host.fd_count() <= baseline_fds),
            "the host kept {} descriptors after all clients left ({baseline_fds} at start)",
            host.fd_count()
        );
        let mut client = host.connect();
        client.write_all(b"ping").unwrap();
        let mut back = [0u8; 4];
        client.read_exact(&mut back).expect("echo after recovery");
        assert_eq!(&back, b"ping");
        host.assert_running();
        host.assert_no_errors();
    });
}

#[test]
fn out_of_descriptors_every_waiting_client_is_served_or_closed_promptly() {
    bounded(Duration::from_secs(120), || {
        let (host, _, mut clients) = flooded_host();
        // The host promises (server/listener.rs) to accept and close what it
        // cannot serve, so a client gets a prompt close instead of hanging.
        for client in &mut clients {
            let _ = client.write_all(b"?");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let (mut served, mut closed, mut hanging) = (0, 0, Vec::new());
        for (i, client) in clients.iter_mut().enumerate() {
            let left = deadline.saturating_duration_since(Instant::now());
            client.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
            let mut byte = [0u8];
            match client.read(&mut byte) {
                Ok(1) => served += 1,
                Ok(_) => closed += 1,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => closed += 1,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => hanging.push(i),
                Err(e) => panic!("client {i}: {e}"),
            }
        }
        assert!(served > 0, "no client was served");
        // For a listening socket the receive queue is the accept backlog.
        let backlog = support::tcp_queues(host.addr().port(), 0).map(|(_, queued)| queued);
        assert!(
            hanging.is_empty(),
            "{} of {FLOOD} clients got neither an echo nor a close within 5 s \
             ({served} served, {closed} closed): clients {hanging:?}; the host's listen \
             queue still holds {backlog:?} connections it has not accepted",
            hanging.len()
        );
        host.assert_no_errors();
    });
}

#[test]
fn ten_thousand_connections_leave_no_descriptor_behind() {
    const CYCLES: usize = 10_000;
    bounded(Duration::from_secs(90), || {
        let host = Host::start("echo");
        let baseline = host.fd_count();
        let start = Instant::now();
        for i in 0..CYCLES {
            let mut client = host.connect();
            let byte = [i as u8];
            client.write_all(&byte).unwrap();
            let mut back = [0u8];
            client.read_exact(&mut back).unwrap_or_else(|e| panic!("cycle {i}: {e}"));
            assert_eq!(back, byte, "cycle {i}");
        }
        eprintln!("{CYCLES} cycles in {:?}", start.elapsed());
        let settled = eventually(Duration::from_secs(10), || host.fd_count() == baseline);
        assert!(
            settled,
            "after {CYCLES} connections closed the host has {} descriptors, {baseline} before",
            host.fd_count()
        );
        host.assert_no_errors();
    });
}

// ---- Descriptors shared fairly ------------------------------------------------

/// The host's descriptor limits (soft, hard), from `/proc/PID/limits`.
fn fd_limits(host: &Host) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", host.pid())).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("a `Max open files` line");
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields[3].to_string(), fields[4].to_string())
}

#[test]
fn the_host_raises_its_soft_descriptor_limit_to_the_hard_one() {
    bounded(Duration::from_secs(120), || {
        let host = Host::command("echo").soft_fd_limit(256).spawn();
        let (soft, hard) = fd_limits(&host);
        assert_ne!(hard, "256", "the test needs a hard limit above 256");
        assert_eq!(soft, hard, "the soft limit was left at {soft}, under the hard one");
        assert_eq!(host.count_log("descriptor limit"), 0, "the default limits fit; log:\n{}", host.logs());
    });
}

/// A config of two echo guests, `flooded` and `other`, in a scratch file.
fn two_echo_guests() -> std::path::PathBuf {
    let echo = support::guest("echo");
    let mut toml = String::new();
    for name in ["flooded", "other"] {
        toml.push_str(&format!(
            "[[guest]]\nname = \"{name}\"\nmodule = {:?}\nlisten = [\"127.0.0.1:0\"]\n\n",
            echo.to_str().unwrap()
        ));
    }
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("lifecycle-two-echo-guests.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

#[test]
fn a_connection_flood_to_one_guest_leaves_descriptors_for_the_other() {
    const LIMIT: u32 = 256;
    bounded(Duration::from_secs(120), || {
        support::raise_fd_limit(4 * LIMIT as u64);
        let host = Host::with_config(two_echo_guests()).fd_limit(LIMIT).spawn();
        // One line says what was lowered, from what to what.
        let warning = host.wait_for_log("descriptor limit", Duration::from_secs(10));
        assert_eq!(host.count_log("descriptor limit"), 1, "one warning line; log:\n{}", host.logs());
        assert!(warning.contains("WARN") && warning.contains(&format!("({LIMIT} open files")), "{warning}");
        let share = |guest: &str| -> usize {
            let (_, rest) = warning.split_once(&format!("`{guest}` 10000 -> ")).unwrap_or_else(|| panic!("{warning}"));
            rest.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
        };
        let (flooded_share, other_share) = (share("flooded"), share("other"));
        assert_eq!(flooded_share, other_share, "even shares: {warning}");
        assert!(2 * flooded_share < LIMIT as usize, "{warning}");

        // Far more connections to one guest than the process may open.
        let flooded = host.addr_of("flooded");
        let mut clients: Vec<TcpStream> = (0..2 * LIMIT as usize)
            .map(|_| TcpStream::connect_timeout(&flooded, Duration::from_secs(10)).unwrap())
            .collect();
        host.wait_for_log("at its connection limit", Duration::from_secs(30));

        // The other guest still accepts and serves.
        let mut other = TcpStream::connect_timeout(&host.addr_of("other"), Duration::from_secs(10)).unwrap();
        support::configure(&other);
        other.write_all(b"ping").unwrap();
        let mut back = [0u8; 4];
        other.read_exact(&mut back).expect("the other guest echoes beside the flood");
        assert_eq!(&back, b"ping");
        // And so does the flooded one, on a connection within its share.
        support::configure(&clients[0]);
        clients[0].write_all(b"pong").unwrap();
        clients[0].read_exact(&mut back).expect("the flooded guest serves its first connection");
        assert_eq!(&back, b"pong");
        assert!(host.fd_count() < LIMIT as usize, "{} descriptors open", host.fd_count());
        assert_eq!(host.count_log("accept failed"), 0, "the process never ran out; log:\n{}", host.logs());
        host.assert_no_errors();
    });
}

// ---- SIGHUP before the loops handle it ------------------------------------------

/// The time of day (seconds since midnight UTC) of a log line, or of now.
fn time_of_day(line: Option<&str>) -> f64 {
    match line {
        Some(line) => {
            let stamp = line.split_whitespace().next().and_then(|s| s.strip_suffix('Z')).expect("a timestamp");
            let (_, time) = stamp.split_once('T').expect("a time");
            let parts: Vec<f64> = time.split(':').map(|p| p.parse().unwrap()).collect();
            parts[0] * 3600.0 + parts[1] * 60.0 + parts[2]
        }
        None => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
            (now.as_secs() % 86_400) as f64 + f64::from(now.subsec_nanos()) / 1e9
        }
    }
}

#[test]
fn a_sighup_while_the_guests_load_neither_ends_the_host_nor_is_lost() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::sync::mpsc;

    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    bounded(Duration::from_secs(120), || {
        // The admin listener starts before any guest loads; compiling
        // afresh (no cache) keeps the loops from handling signals a while.
        let mut child = Killed(
            Command::new(support::HOST)
                .arg("run")
                .arg(support::guest("echo"))
                .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--no-cache"])
                .env_remove("RUST_LOG")
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start the host"),
        );
        let (tx, lines) = mpsc::channel::<String>();
        let stderr = child.0.stderr.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut log = Vec::new();
        let until = |needle: &str, log: &mut Vec<String>| -> String {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match lines.recv_timeout(left) {
                    Ok(line) => {
                        log.push(line.clone());
                        if line.contains(needle) {
                            return line;
                        }
                    }
                    Err(e) => panic!("no {needle:?} line ({e}); the host ended? log:\n{}", log.join("\n")),
                }
            }
        };
        until("admin listening on", &mut log);
        assert!(!log.iter().any(|l| l.ends_with(" ready")), "too late: {log:?}");
        let signalled = time_of_day(None);
        rustix::process::kill_process(rustix::process::Pid::from_raw(child.0.id() as i32).unwrap(), Signal::HUP)
            .unwrap();
        let ready = until(" ready", &mut log);
        assert!(time_of_day(Some(&ready)) > signalled, "the signal came after `ready`: {log:?}");
        // Not lost: once the loop handles signals, it reloads.
        until("SIGHUP: reloading", &mut log);
        let listening = log
            .iter()
            .filter(|l| !l.contains("admin listening"))
            .find_map(|l| l.split("listening on ").nth(1))
            .expect("a listening line");
        let addr: std::net::SocketAddr = listening.split_whitespace().next().unwrap().parse().unwrap();
        let mut client = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
        support::configure(&client);
        client.write_all(b"ping").unwrap();
        let mut back = [0u8; 4];
        client.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"ping");
        assert!(child.0.try_wait().unwrap().is_none(), "the host ended; log:\n{}", log.join("\n"));
    });
}

// ---- One configuration path: the flags and the config file alike. ----------

/// A config of one echo guest, `echo`, with `more` after its keys (say, a
/// `[guest.limits]` table), and host-wide `top` lines before it.
fn one_echo_guest(file: &str, top: &str, more: &str) -> std::path::PathBuf {
    let echo = support::guest("echo");
    let toml = format!(
        "{top}\n[[guest]]\nname = \"echo\"\nmodule = {:?}\nlisten = [\"127.0.0.1:0\"]\n{more}\n",
        echo.to_str().unwrap()
    );
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(file);
    std::fs::write(&path, toml).unwrap();
    path
}

/// A connection to the echo guest that has had `byte` echoed back.
fn echoed_once(host: &Host, byte: u8) -> TcpStream {
    let mut client = host.connect();
    client.write_all(&[byte]).unwrap();
    let mut back = [0u8];
    client.read_exact(&mut back).unwrap();
    assert_eq!(back, [byte]);
    client
}

/// Two connections are served and the third is closed at once (the guest
/// is at its limit of two).
fn serves_two_connections_and_closes_the_third(host: &Host) {
    let held: Vec<TcpStream> = (0..2u8).map(|i| echoed_once(host, i)).collect();
    let mut third = host.connect();
    third.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = third.write_all(b"x");
    match third.read(&mut [0u8; 1]) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("the third connection was served: {other:?}; log:\n{}", host.logs()),
    }
    host.wait_for_log("at its connection limit (2)", Duration::from_secs(10));
    drop(held);
}

#[test]
fn a_limit_from_a_flag_and_the_same_key_in_the_config_file_act_alike() {
    bounded(Duration::from_secs(120), || {
        let by_flag = Host::command("echo").args(["--max-connections", "2"]).spawn();
        serves_two_connections_and_closes_the_third(&by_flag);
        let file = one_echo_guest("lifecycle-limit-by-key.toml", "", "[guest.limits]\nmax_connections = 2");
        let by_key = Host::with_config(file).spawn();
        serves_two_connections_and_closes_the_third(&by_key);
    });
}

#[test]
fn a_host_wide_flag_given_with_a_config_file_wins_over_the_file() {
    bounded(Duration::from_secs(120), || {
        // The file would wait a minute for output to drain; the flag says 300 ms.
        let file = one_echo_guest("lifecycle-flag-wins.toml", "shutdown_timeout_ms = 60000", "");
        let mut host = Host::with_config(file).args(["--shutdown-timeout-ms", "300"]).spawn();
        // A client that sends and never reads: the echo fills the kernel's
        // buffers, then the host's, and cannot drain.
        let client = host.connect();
        let writer = Writer::start(&client, Arc::new(vec![7; 32 * MIB]), false);
        let mut last = 0;
        assert!(
            eventually(Duration::from_secs(30), || {
                thread::sleep(Duration::from_millis(200));
                let now = writer.written();
                std::mem::replace(&mut last, now) == now && now > 0
            }),
            "the client's writes never stalled"
        );
        let sent = Instant::now();
        host.signal(Signal::TERM);
        host.wait_for_log("shutdown timeout: closing connections that did not drain", Duration::from_secs(10));
        let status = host.wait_exit(Duration::from_secs(10));
        let took = sent.elapsed();
        assert!(status.success(), "host ended with {}", describe(status));
        assert!(took < Duration::from_secs(10), "exit took {took:?}: the file's 60 s, not the flag's 300 ms");
        drop(client);
    });
}
