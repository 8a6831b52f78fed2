//! Settling: after every callback the server acts on what the guest asked
//! for — flush, FIN, close, linger timer, register a socket it made — with
//! syscalls only. The callbacks this causes (`on-close`, `on-writable`,
//! reading after `resume-reading`) go to the deferred queue: no guest is
//! called from inside another's call.

use wasmloop_io::{CloseReason, Settled, UNREGISTERED};
use wasmloop_reactor::{Reactor, Token};

use super::Server;
use super::deferred::Deferred;
use super::slot::GuestKey;
use crate::runtime::{ConnKey, Handle};

impl Server {
    /// After a callback: act on the connections it touched and re-arm the
    /// guest's timer at its earliest deadline.
    pub(super) fn settle(&mut self, reactor: &mut Reactor, g: GuestKey) {
        let Some(state) = self.guests.get(g).and_then(|s| s.state()) else {
            return;
        };
        // Settling makes syscalls only, never calls the guest, so nothing is
        // added to the list meanwhile; it goes back empty, capacity kept.
        let mut dirty = state.dirty.take();
        for &c in &dirty {
            self.settle_connection(reactor, g, c);
        }
        dirty.clear();
        self.settle_datagrams(reactor, g);
        let Some(slot) = self.guests.get_mut(g) else {
            return;
        };
        let Some(state) = slot.state() else {
            return;
        };
        state.dirty.replace(dirty);
        slot.arm_timer(reactor);
    }

    /// Brings one connection's socket in line with its state: flush, FIN,
    /// close, or queue the callbacks the guest asked for.
    pub(super) fn settle_connection(&mut self, reactor: &mut Reactor, g: GuestKey, c: ConnKey) {
        let Some(conn) = self.connection(g, c) else { return };
        let (unregistered, http) = (conn.token == UNREGISTERED, conn.http.is_some());
        // A connect the guest just started: watch it first (outbound.rs).
        if unregistered && !self.register_outbound(reactor, g, c) {
            return;
        }
        if http {
            self.http_settle(reactor, g, c);
        }
        let Some(state) = self.guests.get(g).and_then(|s| s.state()) else { return };
        let Some(conn) = state.connections.get(c) else { return };
        let next = conn.settle(&state.output);
        let token = Token(conn.token);
        match next {
            Settled::Finish(reason, reset) => self.finish(reactor, g, c, reason, reset),
            Settled::Draining { arm_linger } => {
                if arm_linger {
                    reactor.set_timeout(self.config.linger, token);
                }
            }
            Settled::Open { writable, read } => {
                if writable {
                    self.defer(reactor, Deferred::Writable(g, c));
                }
                if read {
                    self.defer(reactor, Deferred::Read(g, c));
                }
            }
        }
    }

    /// Queues `work` for this turn's deferred phase.
    pub(super) fn defer(&mut self, reactor: &mut Reactor, work: Deferred) {
        self.deferred.push(reactor, work);
    }

    /// Removes a connection: deregister, close, and queue `on-close`.
    pub(super) fn finish(&mut self, reactor: &mut Reactor, g: GuestKey, c: ConnKey, reason: CloseReason, reset: bool) {
        let Some(guest) = self.guests.get_mut(g).and_then(|s| s.guest.as_mut()) else {
            return;
        };
        let Some(conn) = guest.state_mut().connections.remove(c) else {
            return;
        };
        guest.state().output.release(conn.buffered());
        self.routes.unwatch(reactor, &conn);
        if reset {
            conn.set_reset_on_close();
        }
        if conn.http.is_some() {
            // The guest knows the request or WebSocket, not the connection.
            return self.http_closed(reactor, g, &conn);
        }
        drop(conn);
        self.defer(reactor, Deferred::Closed(g, c.handle(), reason));
    }
}
