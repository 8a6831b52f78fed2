//! A connection as the host keeps it for its owner (a guest or a native
//! handler): the transport, the output buffer, and the state the owner's
//! calls change.
//!
//! The guest's `write` runs inside a host import that can only borrow the
//! store immutably while it also borrows the guest's memory (the bytes are
//! written straight from there, without a copy). So the fields `write`
//! touches use `Cell`/`RefCell`: single-threaded interior mutability.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::TcpStream;

use wasmloop_reactor::TimerId;

use crate::budget::OutputBudget;
use crate::error::{CloseReason, close_reason};
use crate::http::HttpConn;
use crate::output::Output;
use crate::transport::Transport;

/// The `token` of a connection (or UDP socket) not yet registered with the
/// reactor: an outbound connect made inside a callback is registered right
/// after it. As a route key it names no slot (index `u32::MAX`), unlike 0,
/// which slotmap reads as slot 0.
pub const UNREGISTERED: u64 = u64::MAX;

/// Capacity kept by an emptied output buffer; anything above is released so
/// 10,000 idle connections do not each hold a burst's worth of memory.
const RETAINED_OUTPUT: usize = 64 * 1024;

pub struct Connection {
    /// What carries the bytes: everything below reads and writes through it.
    pub transport: Transport,
    /// The reactor token (route) this connection is registered under.
    pub token: u64,
    output: RefCell<VecDeque<u8>>,
    max_output: usize,
    /// A write failed; the host finishes the connection with this reason
    /// after the current callback.
    pub failed: RefCell<Option<CloseReason>>,
    /// Reading is paused by the guest.
    pub paused: Cell<bool>,
    /// End-of-stream was read; no more `on-data`.
    pub eof: Cell<bool>,
    /// The guest asked for `on-writable` once the buffer drains.
    pub notify_writable: Cell<bool>,
    /// The guest asked for a half-close; `write_shut` once the FIN is sent.
    pub shutdown_requested: Cell<bool>,
    pub write_shut: Cell<bool>,
    /// Closing: set by `close`/`abort`, end-of-stream or host shutdown. The
    /// reason `on-close` will carry.
    pub closing: RefCell<Option<CloseReason>>,
    /// `abort`: discard output and reset.
    pub abort: Cell<bool>,
    /// `resume-reading` was called: bytes may be waiting.
    pub resumed: Cell<bool>,
    /// A linger timer bounds the flushing of a closing connection.
    pub linger_armed: Cell<bool>,
    /// An outbound connect in progress: nothing is written to the socket
    /// (output is only buffered) and the guest has not had `on-connect` yet.
    pub connecting: Cell<bool>,
    /// The timer bounding the connect, while `connecting`.
    pub connect_timer: Cell<Option<TimerId>>,
    /// A read waits for the guest's CPU share (server/fairness.rs): new
    /// edges are left to it, so a peer's packets cannot queue more work.
    pub read_postponed: Cell<bool>,
    /// Accepted on an HTTP or WebSocket listener: the host speaks the
    /// protocol, and the guest sees requests instead of bytes.
    pub http: Option<Box<HttpConn>>,
}

impl Connection {
    pub fn new(socket: TcpStream, token: u64, max_output: usize) -> Connection {
        Connection {
            transport: Transport::Tcp(socket),
            token,
            output: RefCell::new(VecDeque::new()),
            max_output,
            failed: RefCell::new(None),
            paused: Cell::new(false),
            eof: Cell::new(false),
            read_postponed: Cell::new(false),
            notify_writable: Cell::new(false),
            shutdown_requested: Cell::new(false),
            write_shut: Cell::new(false),
            closing: RefCell::new(None),
            abort: Cell::new(false),
            resumed: Cell::new(false),
            linger_armed: Cell::new(false),
            connecting: Cell::new(false),
            connect_timer: Cell::new(None),
            http: None,
        }
    }

    /// An outbound connection whose non-blocking connect is in progress, not
    /// yet registered with the reactor.
    pub fn outbound(socket: TcpStream, max_output: usize) -> Connection {
        let conn = Connection::new(socket, UNREGISTERED, max_output);
        conn.connecting.set(true);
        conn
    }

    /// Whether the guest may still write.
    pub fn accepts_output(&self) -> bool {
        self.closing.borrow().is_none() && !self.shutdown_requested.get() && self.failed.borrow().is_none()
    }

    pub fn buffered(&self) -> usize {
        self.output.borrow().len()
    }

    /// The guest's `write`: straight to the socket when nothing is queued,
    /// the rest into the buffer up to the connection's and the guest's
    /// limits. Returns the bytes taken. While connecting, everything goes to
    /// the buffer.
    pub fn write(&self, data: &[u8], budget: &OutputBudget) -> usize {
        let mut output = self.output.borrow_mut();
        let mut sent = 0;
        if output.is_empty() && !self.connecting.get() {
            match self.transport.write(data) {
                Ok(n) => {
                    sent = n;
                    budget.sent(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.fail(&e);
                    return 0;
                }
            }
        }
        let room = self.max_output.saturating_sub(output.len()).min(budget.room());
        let queued = (data.len() - sent).min(room);
        output.extend(&data[sent..sent + queued]);
        budget.take(queued);
        sent + queued
    }

    /// Room left in the output buffer, under the connection's and the
    /// guest's limits.
    pub fn room(&self, budget: &OutputBudget) -> usize {
        self.max_output.saturating_sub(self.output.borrow().len()).min(budget.room())
    }

    /// Writes `parts` in order, all or nothing: false (and nothing written)
    /// if what the kernel might refuse could not be buffered. Used for
    /// framed protocol output, where half a frame would corrupt the stream.
    pub fn write_all(&self, parts: &[&[u8]], budget: &OutputBudget) -> bool {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        total <= self.room(budget) && self.write_parts(parts, total, budget)
    }

    /// Like [`Connection::write_all`] for the host's own small protocol
    /// output: bounded by this connection's buffer only (see
    /// [`Output::write_control`]), still counted in `budget`.
    pub fn write_control(&self, parts: &[&[u8]], budget: &OutputBudget) -> bool {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        total <= self.max_output.saturating_sub(self.buffered()) && self.write_parts(parts, total, budget)
    }

    fn write_parts(&self, parts: &[&[u8]], total: usize, budget: &OutputBudget) -> bool {
        let mut output = self.output.borrow_mut();
        let mut sent = 0;
        if output.is_empty() && !self.connecting.get() {
            let slices: [IoSlice<'_>; 4] = std::array::from_fn(|i| IoSlice::new(parts.get(i).copied().unwrap_or(&[])));
            let count = parts.len().min(4);
            match self.transport.write_vectored(&slices[..count]) {
                Ok(n) => {
                    sent = n;
                    budget.sent(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.fail(&e);
                    return true;
                }
            }
        }
        let mut skip = sent;
        for part in parts {
            let start = skip.min(part.len());
            skip -= start;
            output.extend(&part[start..]);
        }
        budget.take(total - sent);
        true
    }

    /// Sends buffered output until the kernel stops taking it. Returns true
    /// once the buffer is empty; never while still connecting.
    pub fn flush(&self, budget: &OutputBudget) -> bool {
        if self.connecting.get() {
            return false;
        }
        let mut output = self.output.borrow_mut();
        while !output.is_empty() {
            let (a, b) = output.as_slices();
            match self.transport.write_vectored(&[IoSlice::new(a), IoSlice::new(b)]) {
                Ok(n) => {
                    output.drain(..n);
                    budget.release(n);
                    budget.sent(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    budget.release(output.len());
                    output.clear();
                    drop(output);
                    self.fail(&e);
                    return true;
                }
            }
        }
        if output.capacity() > RETAINED_OUTPUT {
            *output = VecDeque::new();
        }
        true
    }

    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.transport.read(buf)
    }

    /// Sends FIN (after the caller flushed the buffer).
    pub fn shut_write(&self) {
        if !self.write_shut.replace(true) {
            let _ = self.transport.shutdown_write();
        }
    }

    /// Records a socket error as the reason to finish the connection.
    pub fn fail(&self, error: &io::Error) {
        let mut failed = self.failed.borrow_mut();
        if failed.is_none() {
            *failed = Some(close_reason(error));
        }
    }

    /// Makes the coming close send a reset instead of a FIN.
    pub fn set_reset_on_close(&self) {
        self.transport.set_reset_on_close();
    }
}

/// What the host must do with a connection after the guest touched it or
/// the socket became writable.
pub enum Settled {
    /// Close it now (with a reset if the flag is set) and report `reason`.
    Finish(CloseReason, bool),
    /// Closing, output still queued; arm the linger timer if not yet armed.
    Draining { arm_linger: bool },
    /// Open; queue `on-writable` and/or a read for the deferred phase.
    Open { writable: bool, read: bool },
}

impl Connection {
    /// Flushes output and turns the connection's flags into the next step.
    pub fn settle(&self, budget: &OutputBudget) -> Settled {
        if self.abort.get() {
            return Settled::Finish(CloseReason::Local, true);
        }
        let drained = self.flush(budget);
        if let Some(reason) = self.failed.borrow_mut().take() {
            return Settled::Finish(reason, true);
        }
        let closing = self.closing.borrow().clone();
        if !drained {
            return Settled::Draining { arm_linger: closing.is_some() && !self.linger_armed.replace(true) };
        }
        if let Some(reason) = closing {
            return Settled::Finish(reason, false);
        }
        if self.shutdown_requested.get() {
            self.shut_write();
        }
        Settled::Open {
            writable: self.notify_writable.replace(false),
            read: self.resumed.replace(false) && !self.paused.get(),
        }
    }
}

/// A connection's output under its owner's budget, as the protocol code
/// writes it.
pub struct Out<'a> {
    pub conn: &'a Connection,
    pub budget: &'a OutputBudget,
}

impl Output for Out<'_> {
    fn open(&self) -> bool {
        self.conn.accepts_output()
    }

    fn closing(&self) -> bool {
        self.conn.closing.borrow().is_some()
    }

    fn room(&self) -> usize {
        self.conn.room(self.budget)
    }

    fn buffered(&self) -> usize {
        self.conn.buffered()
    }

    fn write_all(&self, parts: &[&[u8]]) -> bool {
        self.conn.write_all(parts, self.budget)
    }

    fn write_control(&self, parts: &[&[u8]]) -> bool {
        self.conn.write_control(parts, self.budget)
    }

    fn close(&self, reason: CloseReason) {
        self.conn.closing.borrow_mut().get_or_insert(reason);
    }

    fn shut_write(&self) {
        self.conn.shutdown_requested.set(true);
    }

    fn set_paused(&self, paused: bool) {
        self.conn.paused.set(paused);
    }

    fn resume(&self) {
        self.conn.resumed.set(true);
    }
}

impl Connection {
    /// This connection's output under `budget`, for protocol code.
    pub fn out<'a>(&'a self, budget: &'a OutputBudget) -> Out<'a> {
        Out { conn: self, budget }
    }

    /// The HTTP state of a connection accepted on an HTTP or WebSocket
    /// listener.
    pub fn http(&self) -> Result<&HttpConn, crate::ErrorCode> {
        self.http.as_deref().ok_or(crate::ErrorCode::InvalidHandle)
    }
}
