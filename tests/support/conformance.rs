//! What every echo guest and every chat guest must do, whatever language it
//! is written in: the first-party Rust guests' tests and the examples in
//! other languages (`tests/lang_*.rs`) run these same checks, and so does the
//! host on a foreign loop (`tests/foreign_loop.rs`) with the ticker's.

use std::io::Write;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use super::{
    Host, HostCommand, LineReader, Writer, assert_same_bytes, monotonic_ns, raise_fd_limit, random_bytes, read_exactly,
};

/// Messages of many shapes come back byte for byte, one after another.
pub fn echo_round_trips(host: &Host) {
    let mut client = host.connect();
    let messages: [&[u8]; 5] =
        [b"hello\n", b"x", b"no newline at the end", &[0, 1, 2, 0xfe, 0xff, b'\r', b'\n', 0], &[b'z'; 4000]];
    for message in messages {
        client.write_all(message).unwrap();
        let back = read_exactly(&mut client, message.len());
        assert_eq!(back, message, "echo of a {}-byte message", message.len());
    }
}

/// 10 MiB of random bytes, written while reading, come back exactly
/// (the guest must respect short writes and backpressure).
pub fn echo_ten_mib(host: &Host) {
    let mut client = host.connect();
    let data = Arc::new(random_bytes(10 << 20, 0x5eed_0010));
    let writer = Writer::start(&client, data.clone(), false);
    let back = read_exactly(&mut client, data.len());
    writer.join();
    assert_same_bytes(&back, &data, "10 MiB echoed through one connection");
}

/// 100 connections open at once each get their own bytes back.
pub fn echo_hundred_connections(host: &Host) {
    const CONNECTIONS: usize = 100;
    raise_fd_limit(4 * CONNECTIONS as u64);
    let mut clients: Vec<_> = (0..CONNECTIONS).map(|_| host.connect()).collect();
    let start = Arc::new(Barrier::new(CONNECTIONS));
    let workers: Vec<_> = clients
        .drain(..)
        .enumerate()
        .map(|(i, mut client)| {
            let start = start.clone();
            thread::spawn(move || {
                let message = random_bytes(1000 + i, i as u64);
                start.wait();
                client.write_all(&message).unwrap();
                let back = read_exactly(&mut client, message.len());
                assert_same_bytes(&back, &message, &format!("connection {i}"));
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("a connection's echo");
    }
}

/// Lines of the chat's joining handshake start with this.
const SYNC: &str = "sync ";

/// Connects `n` chat clients and returns once the host has accepted all of
/// them (chat has no join notice, and a line sent before a client is
/// accepted never reaches it).
///
/// The last client announces itself until every other client has heard it,
/// which proves they were all accepted (and it was too: its line was read).
/// It then sends a final marker that every other client reads up to, so
/// their streams hold nothing from the handshake afterwards.
pub fn chat_join(host: &Host, n: usize) -> Vec<LineReader> {
    let mut clients: Vec<LineReader> = (0..n).map(|_| LineReader::new(host.connect())).collect();
    let (announcer, others) = clients.split_last_mut().expect("at least one client");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut heard = vec![false; others.len()];
    let mut round = 0;
    while !heard.iter().all(|&h| h) {
        assert!(Instant::now() < deadline, "the chat clients did not all hear each other within 30 s: {heard:?}");
        announcer.send(&format!("{SYNC}{round}"));
        round += 1;
        let round_end = Instant::now() + Duration::from_millis(200);
        for (client, heard) in others.iter_mut().zip(&mut heard) {
            if let Some(line) = client.line_by(round_end) {
                assert!(line.starts_with(SYNC), "unexpected line {line:?}");
                *heard = true;
            }
        }
    }
    announcer.send(&format!("{SYNC}done"));
    for client in others {
        loop {
            let line = client.line();
            assert!(line.starts_with(SYNC), "unexpected line {line:?}");
            if line == format!("{SYNC}done") {
                break;
            }
        }
    }
    clients
}

/// Each line reaches every other client, in order, and never its sender.
pub fn chat_broadcast(host: &Host) {
    let mut clients = chat_join(host, 3);
    let names = ["alice", "bob", "carol"];
    // Senders take turns and everyone else reads each line before the next
    // turn. A line echoed to its own sender would be the first thing that
    // sender reads in a later turn; alice speaks last again so carol's line
    // gets checked too.
    for (turn, &sender) in [0, 1, 2, 0].iter().enumerate() {
        let line = format!("{} says hello (turn {turn})", names[sender]);
        clients[sender].send(&line);
        for (i, client) in clients.iter_mut().enumerate() {
            if i != sender {
                assert_eq!(client.line(), line, "what {} received", names[i]);
            }
        }
    }
}

/// The ticker guest's interval, in milliseconds.
const TICK_INTERVAL_MS: u64 = 50;
/// How late a tick may reach a client, measured from its scheduled time.
const MAX_LATE_NS: u64 = 20_000_000;
const TICKS: usize = 20;

/// The ticker guest, ticking every 50 ms.
pub fn ticker_command() -> HostCommand {
    Host::command("ticker").args(["--guest-config", &TICK_INTERVAL_MS.to_string()])
}

/// One `tick {n} {scheduled_ns} {fired_ns}` line.
struct Tick {
    n: u64,
    scheduled: u64,
    fired: u64,
}

fn parse_tick(line: &str) -> Tick {
    let fields: Vec<&str> = line.split(' ').collect();
    let number = |i: usize| -> u64 {
        fields.get(i).and_then(|f| f.parse().ok()).unwrap_or_else(|| panic!("malformed tick line {line:?}"))
    };
    assert!(fields.len() == 4 && fields[0] == "tick", "malformed tick line {line:?}");
    Tick { n: number(1), scheduled: number(2), fired: number(3) }
}

/// On a host from [`ticker_command`]: ticks are never early, at most 20 ms
/// late, one interval apart, and the guest's clock is CLOCK_MONOTONIC.
pub fn ticks_on_schedule(host: &Host) {
    let mut client = LineReader::new(host.connect());
    let mut previous: Option<Tick> = None;
    let mut worst_late = 0;
    for _ in 0..TICKS {
        let line = client.line();
        // Our own reading of CLOCK_MONOTONIC when the line arrived.
        let arrived = monotonic_ns();
        let tick = parse_tick(&line);
        assert!(
            tick.fired >= tick.scheduled,
            "tick {} fired {} ns before it was due",
            tick.n,
            tick.scheduled - tick.fired
        );
        assert!(
            arrived >= tick.fired,
            "tick {} arrived before it fired: the guest's clock is not CLOCK_MONOTONIC",
            tick.n
        );
        let late = arrived - tick.scheduled;
        assert!(
            late <= MAX_LATE_NS,
            "tick {} reached the client {:.3} ms after it was due (fired {:.3} ms late)",
            tick.n,
            late as f64 / 1e6,
            (tick.fired - tick.scheduled) as f64 / 1e6
        );
        worst_late = worst_late.max(late);
        if let Some(prev) = &previous {
            assert_eq!(tick.n, prev.n + 1, "tick numbers go up by one");
            assert_eq!(
                tick.scheduled - prev.scheduled,
                TICK_INTERVAL_MS * 1_000_000,
                "ticks are scheduled one interval apart"
            );
        }
        previous = Some(tick);
    }
    eprintln!("{TICKS} ticks, worst arrival {:.3} ms after schedule", worst_late as f64 / 1e6);
}
