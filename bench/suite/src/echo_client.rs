//! A closed-loop echo load generator: N connections, each sends a message,
//! waits until all of it came back, and sends the next at once. One thread
//! on `wasmloop-reactor` (edge-triggered epoll), so it takes one core and
//! leaves the other to the server.
//!
//! It is kept as lean as the servers it drives, so it is less likely to be
//! the bottleneck: per round trip one `write` and one `read` (a read that
//! returns the rest of the reply ends the round trip without the extra read
//! that would return `EAGAIN`), no timers, no allocation.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use hdrhistogram::Histogram;
use wasmloop_reactor::{Event, EventLoop, Expired, Handler, Interest, Reactor, Token};

/// How long opening one connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a round trip may still take after the window closed before the
/// run counts as failed (a server that stopped answering).
const GRACE: Duration = Duration::from_secs(10);
/// The timer that ends a run whose server stopped answering.
const GIVE_UP: Token = Token(u64::MAX - 1);

#[derive(Clone, Debug)]
pub struct Load {
    pub connections: usize,
    /// Bytes per message.
    pub size: usize,
    /// Round trips before the window are not counted.
    pub warmup: Duration,
    pub window: Duration,
    /// Pin the client's thread to this CPU.
    pub cpu: Option<usize>,
}

pub struct Outcome {
    /// Round trips that completed inside the window.
    pub round_trips: u64,
    /// Round trips over the whole run, warm-up included.
    pub total_round_trips: u64,
    pub window: Duration,
    /// Latency of the window's round trips (first byte sent to last byte
    /// back), nanoseconds.
    pub latency: Histogram<u64>,
}

impl Outcome {
    pub fn per_second(&self) -> f64 {
        self.round_trips as f64 / self.window.as_secs_f64()
    }

    pub fn percentile_micros(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }
}

/// Runs `load` against the echo server at `addr` on a thread of its own and
/// waits for the result.
pub fn run(addr: SocketAddr, load: &Load) -> anyhow::Result<Outcome> {
    let load = load.clone();
    std::thread::Builder::new()
        .name("echo-client".into())
        .spawn(move || {
            if let Some(cpu) = load.cpu {
                let mut set = rustix::thread::CpuSet::new();
                set.set(cpu);
                if let Err(e) = rustix::thread::sched_setaffinity(None, &set) {
                    eprintln!("cannot pin the echo client to CPU {cpu}: {e}");
                }
            }
            drive(addr, &load)
        })
        .context("starting the client thread")?
        .join()
        .map_err(|_| anyhow!("the echo client panicked"))?
}

struct Conn {
    socket: TcpStream,
    /// Bytes of the current message written so far.
    written: usize,
    /// Bytes of its echo read so far.
    received: usize,
    sent_at: Instant,
    /// A round trip is in flight.
    busy: bool,
}

struct Client {
    conns: Vec<Conn>,
    message: Vec<u8>,
    buf: Vec<u8>,
    /// The window: round trips completing in `[from, until)` count; none
    /// start at or after `until`.
    from: Instant,
    until: Instant,
    /// Connections with a round trip in flight.
    active: usize,
    outcome: Outcome,
    error: Option<anyhow::Error>,
}

fn histogram() -> Histogram<u64> {
    // 1 ns to 1 minute, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

fn drive(addr: SocketAddr, load: &Load) -> anyhow::Result<Outcome> {
    let mut event_loop: EventLoop<Client> = EventLoop::new()?;
    let mut conns = Vec::with_capacity(load.connections);
    for i in 0..load.connections {
        let socket = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            .with_context(|| format!("connection {} of {} to {addr}", i + 1, load.connections))?;
        socket.set_nodelay(true)?;
        socket.set_nonblocking(true)?;
        event_loop.reactor().add(&socket, Token(i as u64), Interest::BOTH)?;
        conns.push(Conn { socket, written: 0, received: 0, sent_at: Instant::now(), busy: false });
    }
    let start = Instant::now();
    let from = start + load.warmup;
    let until = from + load.window;
    event_loop.reactor().set_deadline(until + GRACE, GIVE_UP);
    let mut client = Client {
        conns,
        message: (0..load.size).map(|i| (i % 251) as u8).collect(),
        buf: vec![0; load.size],
        from,
        until,
        active: 0,
        outcome: Outcome { round_trips: 0, total_round_trips: 0, window: load.window, latency: histogram() },
        error: None,
    };
    for i in 0..client.conns.len() {
        client.send(i);
    }
    if client.error.is_none() && client.active > 0 {
        event_loop.run(&mut client)?;
    }
    match client.error {
        Some(e) => Err(e),
        None => Ok(client.outcome),
    }
}

impl Client {
    /// Starts the next round trip on connection `i`.
    fn send(&mut self, i: usize) {
        let conn = &mut self.conns[i];
        conn.sent_at = Instant::now();
        conn.written = 0;
        conn.received = 0;
        conn.busy = true;
        self.active += 1;
        self.write_more(i);
    }

    /// Writes what the kernel takes of the current message; a writable edge
    /// brings the rest.
    fn write_more(&mut self, i: usize) {
        let conn = &mut self.conns[i];
        while conn.busy && conn.written < self.message.len() {
            match conn.socket.write(&self.message[conn.written..]) {
                Ok(n) => conn.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.fail(anyhow!("writing to the server: {e}")),
            }
        }
    }

    /// Reads the echo; a short read means the socket is drained for now (the
    /// next bytes raise a new edge), a complete echo ends the round trip.
    fn read_more(&mut self, reactor: &mut Reactor, i: usize) {
        loop {
            let conn = &mut self.conns[i];
            let want = self.message.len() - conn.received;
            if !conn.busy || want == 0 {
                return;
            }
            match conn.socket.read(&mut self.buf[conn.received..]) {
                Ok(0) => return self.fail(anyhow!("the server closed a connection")),
                Ok(n) => {
                    conn.received += n;
                    if n == want {
                        return self.complete(reactor, i);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.fail(anyhow!("reading from the server: {e}")),
            }
        }
    }

    fn complete(&mut self, reactor: &mut Reactor, i: usize) {
        let done = Instant::now();
        if self.outcome.total_round_trips == 0 && self.buf != self.message {
            return self.fail(anyhow!("the server echoed different bytes"));
        }
        let conn = &mut self.conns[i];
        conn.busy = false;
        self.active -= 1;
        self.outcome.total_round_trips += 1;
        if done >= self.from && done < self.until {
            self.outcome.round_trips += 1;
            self.outcome.latency.saturating_record(done.duration_since(conn.sent_at).as_nanos() as u64);
        }
        if done < self.until {
            self.send(i);
        } else if self.active == 0 {
            reactor.stop();
        }
    }

    fn fail(&mut self, error: anyhow::Error) {
        self.error.get_or_insert(error);
        for conn in &mut self.conns {
            conn.busy = false;
        }
    }
}

impl Handler for Client {
    fn io(&mut self, reactor: &mut Reactor, event: Event) {
        if self.error.is_some() {
            return reactor.stop();
        }
        let i = event.token.0 as usize;
        if event.writable {
            self.write_more(i);
        }
        if event.readable {
            self.read_more(reactor, i);
        }
        if self.error.is_some() {
            reactor.stop();
        }
    }

    fn timer(&mut self, reactor: &mut Reactor, timer: Expired) {
        if timer.token == GIVE_UP {
            self.fail(anyhow!("the server stopped echoing (no reply within {GRACE:?} after the window)"));
            reactor.stop();
        }
    }
}
