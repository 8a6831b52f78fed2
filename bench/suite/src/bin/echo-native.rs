//! `echo-native`: the echo benchmark's baseline. The same reactor as `host`
//! (`wasmloop-reactor`), the same per-event work (accept in batches, read a
//! 64 KiB chunk at most 4 times per wakeup, write straight back, queue what
//! the kernel refuses and pause reading until it drains), but the handler is
//! native Rust instead of a call into a WebAssembly guest. `host` + echo
//! guest over this is the cost of dispatching into wasm.
//!
//! `echo-native [--listen ADDR]` prints `listening on ADDR` to stderr.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

use clap::Parser;
use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketFlags, SocketType, sockopt};
use slotmap::{Key, KeyData, SlotMap, new_key_type};
use wasmloop_reactor::{Event, EventLoop, Expired, Handler, Interest, Reactor, Token};

/// Bytes read per `read` call (the host's `READ_CHUNK`).
const READ_CHUNK: usize = 64 * 1024;
/// Reads per connection per wakeup (the host's `READS_PER_WAKEUP`).
const READS_PER_WAKEUP: usize = 4;
/// Connections accepted per wakeup (the host's `ACCEPTS_PER_WAKEUP`).
const ACCEPTS_PER_WAKEUP: usize = 64;
/// Listen backlog (the host's).
const BACKLOG: i32 = 4096;
/// Slot-map keys of live entries have an odd version, so their FFI value is
/// never 0: the listener's token cannot collide with a connection's.
const LISTENER: Token = Token(0);

#[derive(Parser)]
#[command(name = "echo-native", about = "Echo server on wasmloop's reactor with a native handler")]
struct Args {
    /// Address to accept connections on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

new_key_type! {
    struct ConnKey;
}

struct Conn {
    socket: TcpStream,
    /// Echoed bytes the kernel has not taken yet, oldest first.
    pending: Vec<u8>,
    /// Reading stops while `pending` is not empty (TCP flow control then
    /// slows the peer instead of our memory growing).
    paused: bool,
    /// The peer sent EOF: close once `pending` is written.
    close_when_done: bool,
}

enum Deferred {
    /// Read budget used up, or reading resumed: read again (until `EAGAIN`).
    Read(ConnKey),
    Accept,
}

struct Echo {
    listener: TcpListener,
    conns: SlotMap<ConnKey, Conn>,
    buf: Vec<u8>,
    deferred: VecDeque<Deferred>,
}

fn token(c: ConnKey) -> Token {
    Token(c.data().as_ffi())
}

impl Echo {
    fn accept(&mut self, reactor: &mut Reactor) {
        for _ in 0..ACCEPTS_PER_WAKEUP {
            match rustix::net::accept_with(&self.listener, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC) {
                Ok(fd) => {
                    let socket = TcpStream::from(fd);
                    let _ = socket.set_nodelay(true);
                    let c =
                        self.conns.insert(Conn { socket, pending: Vec::new(), paused: false, close_when_done: false });
                    if let Err(e) = reactor.add(&self.conns[c].socket, token(c), Interest::BOTH) {
                        eprintln!("cannot watch a connection: {e}");
                        self.conns.remove(c);
                    }
                }
                Err(Errno::AGAIN) => return,
                Err(Errno::INTR | Errno::CONNABORTED | Errno::PROTO) => {}
                Err(e) => {
                    // Out of descriptors and the like: the benchmark sizes its
                    // limits so this does not happen; say so and move on.
                    eprintln!("accept failed: {}", io::Error::from(e));
                    return;
                }
            }
        }
        self.defer(reactor, Deferred::Accept);
    }

    fn defer(&mut self, reactor: &mut Reactor, work: Deferred) {
        self.deferred.push_back(work);
        reactor.defer();
    }

    /// Reads up to the per-wakeup budget and echoes each chunk. As in the
    /// host, a short read ends the turn unless `drain` (EOF already queued,
    /// or an edge consumed while paused).
    fn read(&mut self, reactor: &mut Reactor, c: ConnKey, drain: bool) {
        for _ in 0..READS_PER_WAKEUP {
            let Some(conn) = self.conns.get_mut(c) else { return };
            if conn.paused {
                return;
            }
            match conn.socket.read(&mut self.buf) {
                Ok(0) => {
                    if conn.pending.is_empty() {
                        self.close(reactor, c);
                    } else {
                        conn.close_when_done = true;
                    }
                    return;
                }
                Ok(n) => {
                    if !on_data(conn, &self.buf[..n]) {
                        self.close(reactor, c);
                        return;
                    }
                    if n < self.buf.len() && !drain {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.close(reactor, c);
                    return;
                }
            }
        }
        self.defer(reactor, Deferred::Read(c));
    }

    /// Room to write: send what is pending; once it is all gone, resume
    /// reading (from the deferred phase, reading until `EAGAIN`, since the
    /// readable edge may have come and gone while paused).
    fn writable(&mut self, reactor: &mut Reactor, c: ConnKey) {
        let Some(conn) = self.conns.get_mut(c) else { return };
        if conn.pending.is_empty() {
            return;
        }
        match flush(conn) {
            Ok(false) => {}
            Ok(true) if conn.close_when_done => self.close(reactor, c),
            Ok(true) => {
                conn.paused = false;
                self.defer(reactor, Deferred::Read(c));
            }
            Err(_) => self.close(reactor, c),
        }
    }

    fn close(&mut self, reactor: &mut Reactor, c: ConnKey) {
        if let Some(conn) = self.conns.remove(c) {
            let _ = reactor.delete(&conn.socket);
        }
    }
}

/// The native handler: what the echo guest's `on-data` does, with the
/// host's `write` (straight to the socket; the rest is kept and reading
/// paused). Returns false if the connection failed.
fn on_data(conn: &mut Conn, data: &[u8]) -> bool {
    if !conn.pending.is_empty() {
        conn.pending.extend_from_slice(data);
        return true;
    }
    let mut sent = 0;
    while sent < data.len() {
        match conn.socket.write(&data[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    if sent < data.len() {
        conn.pending.extend_from_slice(&data[sent..]);
        conn.paused = true;
    }
    true
}

/// Writes pending bytes until the kernel stops taking them; true once none
/// are left.
fn flush(conn: &mut Conn) -> io::Result<bool> {
    let mut sent = 0;
    let result = loop {
        if sent == conn.pending.len() {
            break Ok(true);
        }
        match conn.socket.write(&conn.pending[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    conn.pending.drain(..sent);
    result
}

impl Handler for Echo {
    fn io(&mut self, reactor: &mut Reactor, event: Event) {
        if event.token == LISTENER {
            return self.accept(reactor);
        }
        let c = ConnKey::from(KeyData::from_ffi(event.token.0));
        if event.writable {
            self.writable(reactor, c);
        }
        if event.readable {
            self.read(reactor, c, event.closed);
        }
    }

    fn timer(&mut self, _reactor: &mut Reactor, _timer: Expired) {}

    fn deferred(&mut self, reactor: &mut Reactor) {
        // Only the work queued so far, as in the host.
        for _ in 0..self.deferred.len() {
            match self.deferred.pop_front() {
                Some(Deferred::Read(c)) => self.read(reactor, c, true),
                Some(Deferred::Accept) => self.accept(reactor),
                None => break,
            }
        }
        if !self.deferred.is_empty() {
            reactor.defer();
        }
    }
}

fn bind(address: SocketAddr) -> io::Result<TcpListener> {
    let family = if address.is_ipv4() { AddressFamily::INET } else { AddressFamily::INET6 };
    let fd = rustix::net::socket_with(family, SocketType::STREAM, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC, None)?;
    sockopt::set_socket_reuseaddr(&fd, true)?;
    rustix::net::bind(&fd, &address)?;
    rustix::net::listen(&fd, BACKLOG)?;
    Ok(TcpListener::from(fd))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = bind(args.listen)?;
    let mut event_loop = EventLoop::new()?;
    event_loop.reactor().add(&listener, LISTENER, Interest::READABLE)?;
    eprintln!("listening on {}", listener.local_addr()?);
    let mut echo = Echo { listener, conns: SlotMap::with_key(), buf: vec![0; READ_CHUNK], deferred: VecDeque::new() };
    event_loop.run(&mut echo)?;
    Ok(())
}
