//! Reading a connection and handing the bytes to its guest: `on-data`, or
//! the HTTP state machine (http.rs). Every read goes into one shared
//! buffer, so an idle connection holds no read buffer of its own.

use std::io;

use wasmloop_io::{CloseReason, close_reason};
use wasmloop_reactor::Reactor;

use super::Server;
use super::deferred::Deferred;
use super::slot::GuestKey;
use crate::runtime::bindings::EofAction;
use crate::runtime::{ConnKey, Handle};

/// Bytes read per `read` call and per `on-data`.
pub(super) const READ_CHUNK: usize = 64 * 1024;
/// Reads per connection per wakeup, so one busy peer cannot starve others.
const READS_PER_WAKEUP: usize = 4;

impl Server {
    /// Reads up to the per-wakeup budget and hands each chunk to the guest.
    ///
    /// A short read normally means the socket is drained, and saves the
    /// `EAGAIN` read: new bytes raise a new edge. Not when `drain` is set:
    /// the peer's FIN is already queued (no edge will follow it), or an edge
    /// was consumed while reading was paused. Then read until `EAGAIN`.
    pub(super) fn read(&mut self, reactor: &mut Reactor, g: GuestKey, c: ConnKey, drain: bool) {
        let http = self.connection(g, c).and_then(|conn| conn.http.as_deref());
        if http.is_some_and(|h| !h.input.borrow().is_empty()) {
            // Pipelined input left from before comes first.
            self.http_input(reactor, g, c, &mut []);
        }
        let http = self.connection(g, c).is_some_and(|conn| conn.http.is_some());
        let mut buf = std::mem::take(&mut self.read_buf);
        let mut budget_left = true;
        for round in 0..=READS_PER_WAKEUP {
            if round == READS_PER_WAKEUP {
                budget_left = false;
                break;
            }
            let Some(conn) = self.connection(g, c) else {
                break;
            };
            if conn.paused.get() || conn.eof.get() || conn.closing.borrow().is_some() {
                break;
            }
            // The guest is past its share of the loop: read when it has one
            // again (the bytes wait in the kernel, or in the HTTP input).
            if !self.admit(reactor, g, Deferred::Read(g, c)) {
                break;
            }
            let Some(conn) = self.connection(g, c) else {
                break;
            };
            let read = conn.read(&mut buf);
            if let (Ok(n), Some(metrics)) = (&read, self.metrics_of(g)) {
                metrics.bytes_in.add(*n as u64);
            }
            match read {
                Ok(0) if http => {
                    self.http_eof(reactor, g, c);
                    break;
                }
                Ok(0) => {
                    conn.eof.set(true);
                    let action = self.call(reactor, g, |guest| guest.on_eof(c.handle()));
                    if action == Some(EofAction::Close)
                        && let Some(conn) = self.connection(g, c)
                    {
                        conn.closing.borrow_mut().get_or_insert(CloseReason::PeerClosed);
                        self.settle_connection(reactor, g, c);
                    }
                    break;
                }
                Ok(n) if http => {
                    self.http_input(reactor, g, c, &mut buf[..n]);
                    // Stopped for the guest's share of the loop: what is
                    // left of the input waits with the socket.
                    if !self.admit(reactor, g, Deferred::Read(g, c)) {
                        break;
                    }
                    if n < buf.len() && !drain {
                        break;
                    }
                }
                Ok(n) => {
                    self.call(reactor, g, |guest| guest.on_data(c.handle(), &buf[..n]));
                    if n < buf.len() && !drain {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.finish(reactor, g, c, close_reason(&e), true);
                    break;
                }
            }
        }
        self.read_buf = buf;
        if !budget_left {
            self.defer(reactor, Deferred::Read(g, c));
        }
    }
}
