//! Outbound sockets on the real host: the relay guest (TCP connect through
//! the allowlist) and the udp_echo guest (UDP on a granted address).

use std::io::{ErrorKind, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{
    self, Host, IO_TIMEOUT, Signal, Writer, assert_same_bytes, bounded, random_bytes, read_exactly, read_to_eof,
};

const MIB: usize = 1 << 20;

/// How long a log line the test waits for may take.
const LOG_TIMEOUT: Duration = Duration::from_secs(30);

/// A relay host forwarding to `upstream`, allowed (or not) to connect there.
fn relay(upstream: SocketAddr, allow: &[String]) -> Host {
    let mut args = vec!["--guest-config".to_string(), upstream.to_string()];
    for rule in allow {
        args.push("--connect".into());
        args.push(rule.clone());
    }
    Host::command("relay").args(args).spawn()
}

/// Stops `host` with SIGTERM and waits until its last log line is read, so
/// every line it logged before is in `host.logs()`.
fn stop_and_collect_logs(host: &mut Host) -> Vec<String> {
    host.signal(Signal::TERM);
    host.wait_for_log("exiting", LOG_TIMEOUT);
    host.log_lines()
}

#[test]
fn the_relay_pipes_bytes_both_ways_to_an_allowed_upstream() {
    bounded(Duration::from_secs(90), || {
        let upstream = Host::start("echo");
        let relay = relay(upstream.addr(), &[upstream.addr().to_string()]);
        let mut client = relay.connect();
        for message in [&b"hello\n"[..], b"x", &[0, 1, 2, 0xff, b'\n'], &[b'z'; 4000]] {
            client.write_all(message).unwrap();
            assert_eq!(read_exactly(&mut client, message.len()), message, "a {}-byte message", message.len());
        }
        // The client half-closes: the relay passes the FIN upstream, the echo
        // closes, and the relay closes the client.
        client.shutdown(Shutdown::Write).unwrap();
        let rest = read_to_eof(&mut client).unwrap_or_else(|(got, e)| panic!("after {} bytes: {e}", got.len()));
        assert!(rest.is_empty(), "nothing more expected, got {} bytes", rest.len());
        relay.assert_no_errors();
        upstream.assert_no_errors();
    });
}

#[test]
fn one_mib_goes_through_the_relay_and_back_byte_exact() {
    bounded(Duration::from_secs(120), || {
        let upstream = Host::start("echo");
        // Small output buffers on both hosts, so backpressure (partial
        // writes, paused reading, on-writable) happens all along the way.
        let relay = Host::command("relay")
            .args(["--guest-config", &upstream.addr().to_string(), "--connect", &upstream.addr().to_string()])
            .args(["--max-output", "16384"])
            .spawn();
        let mut client = relay.connect();
        let data = Arc::new(random_bytes(MIB, 0x0a7b_0001));
        // Written at once: the first bytes may reach the relay while its
        // upstream connect is still in progress.
        let writer = Writer::start(&client, data.clone(), true);
        let back = read_to_eof(&mut client).unwrap_or_else(|(got, e)| panic!("after {} bytes: {e}", got.len()));
        writer.join();
        assert_same_bytes(&back, &data, "1 MiB through relay -> echo -> relay");
        relay.assert_no_errors();
        upstream.assert_no_errors();
    });
}

#[test]
fn a_relay_without_the_grant_closes_clients_and_logs_the_denial_once() {
    bounded(Duration::from_secs(90), || {
        let upstream = Host::start("echo");
        // Allowed: some other port on the same address, not the upstream.
        let other = SocketAddr::new(upstream.addr().ip(), upstream.addr().port().wrapping_add(1).max(1));
        let mut relay = relay(upstream.addr(), &[other.to_string()]);
        for _ in 0..2 {
            let mut client = relay.connect();
            let got = read_to_eof(&mut client).unwrap_or_else(|(got, e)| panic!("after {} bytes: {e}", got.len()));
            assert!(got.is_empty(), "a denied relay sends nothing, got {} bytes", got.len());
        }
        let lines = stop_and_collect_logs(&mut relay);
        let address = upstream.addr().to_string();
        let denials: Vec<&String> =
            lines.iter().filter(|l| l.contains("denied") && l.contains(&address) && !l.contains(" guest: ")).collect();
        assert_eq!(denials.len(), 1, "expected one denial line for {address}; log:\n{}", relay.logs());
        assert!(denials[0].contains("WARN"), "the denial is a warning: {}", denials[0]);
        assert!(denials[0].contains(r#"guest="relay""#), "the denial names the guest: {}", denials[0]);
        // The guest saw both refusals.
        let refusals = lines.iter().filter(|l| l.contains("cannot connect") && l.contains("address not allowed"));
        assert_eq!(refusals.count(), 2, "log:\n{}", relay.logs());
        // No traffic reached the upstream.
        assert_eq!(upstream.log_lines().iter().filter(|l| l.contains(" ERROR ")).count(), 0);
    });
}

#[test]
fn a_relay_to_an_allowed_but_closed_port_is_refused() {
    bounded(Duration::from_secs(90), || {
        // A port nobody listens on: bound, then closed.
        let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let relay = relay(closed, &[closed.to_string()]);
        let mut client = relay.connect();
        let got = read_to_eof(&mut client).unwrap_or_else(|(got, e)| panic!("after {} bytes: {e}", got.len()));
        assert!(got.is_empty(), "got {} bytes", got.len());
        let line = relay.wait_for_log("connect to", LOG_TIMEOUT);
        assert!(line.contains("connection refused"), "the guest learns `refused`: {line}");
        relay.assert_no_errors();
    });
}

/// A listener whose accept queue is full, so a connect to it gets no answer
/// (Linux drops the SYN) until the test accepts.
struct Unanswered {
    listener: TcpListener,
    /// The connection filling the queue.
    _filler: std::net::TcpStream,
}

impl Unanswered {
    fn new() -> Unanswered {
        use rustix::net::{AddressFamily, SocketType};
        let fd = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        rustix::net::bind(&fd, &any).unwrap();
        // Backlog 0 still queues one connection; the next SYN is dropped.
        rustix::net::listen(&fd, 0).unwrap();
        let listener = TcpListener::from(fd);
        let filler = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        Unanswered { listener, _filler: filler }
    }

    fn addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap()
    }

    /// Waits (bounded) until some socket is stuck connecting to this
    /// listener: `SYN_SENT` towards its port in `/proc/net/tcp`.
    fn wait_for_a_pending_connect(&self) {
        let port = format!(":{:04X}", self.addr().port());
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
            // `sl local_address rem_address st ...`; state 02 is SYN_SENT.
            let pending = table.lines().skip(1).any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.len() > 3 && fields[2].ends_with(&port) && fields[3] == "02"
            });
            if pending {
                return;
            }
            assert!(Instant::now() < deadline, "no connect to {} pending within {IO_TIMEOUT:?}", self.addr());
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[test]
fn bytes_written_while_connecting_are_sent_once_connected() {
    bounded(Duration::from_secs(90), || {
        let upstream = Unanswered::new();
        let relay = relay(upstream.addr(), &[upstream.addr().to_string()]);
        let mut client = relay.connect();
        upstream.wait_for_a_pending_connect();
        // The relay writes this to its upstream connection while the connect
        // waits for an answer (the next SYN goes out after ~1 s).
        client.write_all(b"sent before the upstream answered\n").unwrap();
        // Let the relay's connect through: take the filler out of the queue;
        // the relay's SYN is retransmitted and queued.
        let (_filler, _) = upstream.listener.accept().unwrap();
        let (mut server_side, from) = upstream.listener.accept().unwrap();
        server_side.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        assert!(from.ip().is_loopback(), "{from}");
        let expected = b"sent before the upstream answered\n";
        assert_eq!(read_exactly(&mut server_side, expected.len()), expected);
        // And the other way.
        server_side.write_all(b"reply\n").unwrap();
        assert_eq!(read_exactly(&mut client, 6), b"reply\n");
        relay.assert_no_errors();
    });
}

#[test]
fn a_connect_that_gets_no_answer_times_out() {
    bounded(Duration::from_secs(90), || {
        let upstream = Unanswered::new();
        let relay = relay(upstream.addr(), &[upstream.addr().to_string()]);
        let started = Instant::now();
        let mut client = relay.connect();
        let got = read_to_eof(&mut client).unwrap_or_else(|(got, e)| panic!("after {} bytes: {e}", got.len()));
        assert!(got.is_empty());
        let waited = started.elapsed();
        let line = relay.wait_for_log("connect to", LOG_TIMEOUT);
        assert!(line.contains("connect timed out"), "the guest learns `timed-out`: {line}");
        assert!(waited >= Duration::from_secs(9), "the connect timeout is 10 s, the client waited {waited:?}");
        relay.assert_no_errors();
    });
}

// ---- UDP ----------------------------------------------------------------

/// A test-side UDP socket with a bounded read timeout.
fn udp_peer() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    socket
}

/// A udp_echo host bound to a granted `127.0.0.1:0`, allowed to talk to
/// `peer`; returns it with the address it bound.
fn udp_echo(peer: SocketAddr) -> (Host, SocketAddr) {
    let host = Host::command("udp_echo")
        .args(["--udp", "127.0.0.1:0", "--guest-config", "127.0.0.1:0", "--connect", &peer.to_string()])
        .spawn();
    let line = host.wait_for_log("udp-echo bound to", LOG_TIMEOUT);
    let bound = line
        .split("bound to ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    (host, bound)
}

#[test]
fn datagrams_come_back_from_the_udp_echo() {
    bounded(Duration::from_secs(90), || {
        let peer = udp_peer();
        let (host, echo) = udp_echo(peer.local_addr().unwrap());
        let mut buf = vec![0u8; 65_536];
        for (i, len) in [1usize, 0, 100, 1400, 60_000].into_iter().enumerate() {
            let datagram = random_bytes(len, i as u64 + 1);
            peer.send_to(&datagram, echo).unwrap();
            let (n, from) = peer.recv_from(&mut buf).unwrap_or_else(|e| panic!("no echo of {len} bytes: {e}"));
            assert_eq!(from, echo, "the echo comes from the bound address");
            assert_same_bytes(&buf[..n], &datagram, "echoed datagram");
        }
        host.assert_no_errors();
    });
}

#[test]
fn datagrams_from_peers_not_on_the_allowlist_get_no_reply() {
    bounded(Duration::from_secs(90), || {
        let allowed = udp_peer();
        let stranger = udp_peer();
        let (mut host, echo) = udp_echo(allowed.local_addr().unwrap());
        stranger.send_to(b"from a stranger", echo).unwrap();
        // The host reads its socket in order: once the allowed peer's echo is
        // back, the stranger's datagram was handled before it.
        allowed.send_to(b"from a friend", echo).unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = allowed.recv_from(&mut buf).expect("the allowed peer gets its echo");
        assert_eq!(&buf[..n], b"from a friend");
        stranger.set_nonblocking(true).unwrap();
        match stranger.recv_from(&mut buf) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            other => panic!("the stranger got {other:?}"),
        }
        // Dropped by the host, not refused by the allowlist on the way back:
        // neither the guest nor a denied send-to mentions the stranger.
        let stranger_addr = stranger.local_addr().unwrap().to_string();
        let lines = stop_and_collect_logs(&mut host);
        let mentions: Vec<&String> = lines.iter().filter(|l| l.contains(&stranger_addr)).collect();
        assert!(mentions.is_empty(), "the stranger's datagram reached the guest: {mentions:?}");
    });
}

#[test]
fn binding_an_address_that_is_not_granted_is_denied() {
    bounded(Duration::from_secs(90), || {
        // Granted: 127.0.0.1:0; asked for: 127.0.0.2:0.
        let mut cmd = std::process::Command::new(support::HOST);
        cmd.args([
            "run",
            support::guest("udp_echo").to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--udp",
            "127.0.0.1:0",
            "--guest-config",
            "127.0.0.2:0",
        ])
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1");
        let out = support::run_bounded(cmd, Duration::from_secs(60)).expect("running host");
        assert!(!out.status.success(), "the host should not start; stderr:\n{}", out.stderr);
        assert!(out.stderr.contains("address not allowed"), "the guest's init names the refusal:\n{}", out.stderr);
        assert!(out.stderr.contains("UDP bind on 127.0.0.2:0 denied"), "the host logs the denial:\n{}", out.stderr);
    });
}
