//! Outbound TCP: the server's half of `outbound.connect`.
//!
//! The import (guest_io/sockets.rs) checks the allowlist and the limits,
//! starts a non-blocking connect and puts the connection in the guest's
//! table, unregistered, on the dirty list. Right after the callback the
//! server registers it (both directions, edge-triggered) and arms the
//! connect timeout. The first event on the socket settles the connect:
//! `SO_ERROR` says how it went. Success keeps the connection (output the
//! guest wrote meanwhile is flushed now); failure removes it without an
//! `on-close`. Either way the guest hears `on-connect` from the deferred
//! phase, and only after that anything else about the connection: data that
//! arrived with the connect is read right after `on-connect` returns.

use std::io;
use std::time::Duration;

use rustix::io::Errno;
use tracing::{debug, warn};
use wasmloop_reactor::{Interest, Reactor, Token};

use super::Server;
use super::deferred::Deferred;
use super::routes::{Route, token};
use super::slot::GuestKey;
use crate::runtime::Handle;
use crate::runtime::bindings::ConnectError;
use crate::runtime::{ConnKey, GuestIo, connect_error};

/// How long a connect may take before it fails with `timed-out`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Server {
    /// Registers an outbound connection the guest started in the callback
    /// that just returned, and arms its connect timeout. Returns false if
    /// the connection is gone (it could not be registered; the guest gets
    /// `on-connect(err(other))`).
    pub(super) fn register_outbound(&mut self, reactor: &mut Reactor, g: GuestKey, c: ConnKey) -> bool {
        let Some(guest) = self.guests.get_mut(g).and_then(|s| s.guest.as_mut()) else { return false };
        let Some(conn) = guest.state_mut().connections.get_mut(c) else { return false };
        if conn.abort.get() {
            // Aborted in the callback that started it: settling finishes it
            // at once, nothing to watch.
            return true;
        }
        let route = self.routes.insert(Route::Connection(g, c));
        conn.token = token(route).0;
        if let Err(e) = reactor.add(&conn.transport, Token(conn.token), Interest::BOTH) {
            warn!(guest = &**guest.name(), "cannot watch an outbound connection: {e}");
            self.fail_connect(reactor, g, c, ConnectError::Other);
            return false;
        }
        conn.connect_timer.set(Some(reactor.set_timeout(CONNECT_TIMEOUT, Token(conn.token))));
        true
    }

    /// Whether `c` is an outbound connection whose connect is in progress.
    pub(super) fn is_connecting(&self, g: GuestKey, c: ConnKey) -> bool {
        self.connection(g, c).is_some_and(|conn| conn.connecting.get())
    }

    /// An event on a connecting socket: the connect finished, one way or
    /// the other (or the event is spurious and it goes on).
    pub(super) fn connect_ready(&mut self, reactor: &mut Reactor, g: GuestKey, c: ConnKey) {
        let Some(conn) = self.connection(g, c) else { return };
        let outcome = match rustix::net::sockopt::socket_error(&conn.transport) {
            Ok(Ok(())) => match conn.transport.peer_addr() {
                Ok(_) => Ok(()),
                // No error and no peer: still connecting.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => {
                    Err(e.raw_os_error().map_or(ConnectError::Other, |n| connect_error(Errno::from_raw_os_error(n))))
                }
            },
            Ok(Err(errno)) | Err(errno) => Err(connect_error(errno)),
        };
        match outcome {
            Ok(()) => self.connected(reactor, g, c),
            Err(error) => self.fail_connect(reactor, g, c, error),
        }
    }

    /// The connect succeeded: from now on `c` is like an accepted
    /// connection. `on-connect` is queued first, then whatever settling
    /// queues (`on-writable`, `on-close` for a close asked for meanwhile).
    fn connected(&mut self, reactor: &mut Reactor, g: GuestKey, c: ConnKey) {
        let Some(conn) = self.connection(g, c) else { return };
        conn.connecting.set(false);
        if let Some(id) = conn.connect_timer.take() {
            reactor.cancel_timer(id);
        }
        self.defer(reactor, Deferred::Connected(g, c, Ok(())));
        // Sends what the guest wrote while connecting.
        self.settle_connection(reactor, g, c);
    }

    /// The connect failed (or timed out, or could not be watched): remove
    /// the connection and queue `on-connect(err)`. No `on-close` follows.
    fn fail_connect(&mut self, reactor: &mut Reactor, g: GuestKey, c: ConnKey, error: ConnectError) {
        let Some(guest) = self.guests.get_mut(g).and_then(|s| s.guest.as_mut()) else { return };
        let state = guest.state_mut();
        let Some(conn) = state.connections.remove(c) else { return };
        debug!(guest = &*state.name, "connect failed: {error:?}");
        state.output.release(conn.buffered());
        if let Some(id) = conn.connect_timer.take() {
            reactor.cancel_timer(id);
        }
        self.routes.unwatch(reactor, &conn);
        drop(conn);
        self.defer(reactor, Deferred::Connected(g, c, Err(error)));
    }

    /// A connection's timer fired. If it is still connecting, the connect
    /// timed out: returns true. Otherwise the timer is another one (linger).
    pub(super) fn connect_timed_out(&mut self, reactor: &mut Reactor, g: GuestKey, c: ConnKey) -> bool {
        if !self.is_connecting(g, c) {
            return false;
        }
        self.fail_connect(reactor, g, c, ConnectError::TimedOut);
        true
    }

    /// The deferred `on-connect`. On success, bytes that arrived with the
    /// connect are read right after (their edge came while connecting).
    pub(super) fn deliver_connect(
        &mut self,
        reactor: &mut Reactor,
        g: GuestKey,
        c: ConnKey,
        outcome: Result<(), ConnectError>,
    ) {
        if self.call(reactor, g, |guest| guest.on_connect(c.handle(), outcome)).is_some() && outcome.is_ok() {
            self.read(reactor, g, c, true);
        }
    }
}

/// A faulted guest's pending connects: cancel their timers (the connections
/// themselves are closed with the others).
pub(super) fn cancel_connect_timers(reactor: &mut Reactor, state: &GuestIo) {
    for conn in state.connections.values() {
        if let Some(id) = conn.connect_timer.take() {
            reactor.cancel_timer(id);
        }
    }
}
