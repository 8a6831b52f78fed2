//! Routes: what a reactor token stands for. A token is a generational
//! slot-map key, so an event for a connection that closed earlier in the
//! same batch can never reach a new connection that reused its slot.

use slotmap::{Key, KeyData, SlotMap, new_key_type};
use wasmloop_io::{Connection, UNREGISTERED};
use wasmloop_reactor::{Reactor, Token};

use super::slot::GuestKey;
use crate::runtime::{ConnKey, UdpKey};

new_key_type! {
    pub(super) struct RouteKey;
}

/// What a reactor token (or timer token) stands for.
#[derive(Clone, Copy)]
pub(super) enum Route {
    Listener(usize),
    Connection(GuestKey, ConnKey),
    /// The protocol timer of an HTTP connection (http.rs).
    HttpTimer(GuestKey, ConnKey),
    /// A guest's UDP socket (datagrams.rs).
    Datagram(GuestKey, UdpKey),
    GuestTimers(GuestKey),
    /// The backoff before restarting a faulted guest.
    Restart(GuestKey),
    /// The drain deadline of an old version after a reload.
    DrainDeadline(GuestKey),
    /// The end of a guest's CPU throttle (fairness.rs).
    Release(GuestKey),
    Signals,
    ReloadSignal,
    /// Module files changed (`--watch`), and the debounce timer.
    Watch,
    WatchQuiet,
    ShutdownDeadline,
}

/// Every route of one loop.
#[derive(Default)]
pub(super) struct Routes(SlotMap<RouteKey, Route>);

/// The reactor token of a route.
pub(super) fn token(key: RouteKey) -> Token {
    Token(key.data().as_ffi())
}

fn route_key(token: Token) -> RouteKey {
    KeyData::from_ffi(token.0).into()
}

impl Routes {
    pub fn insert(&mut self, route: Route) -> RouteKey {
        self.0.insert(route)
    }

    /// The route of an event's token; `None` for one removed meanwhile.
    pub fn get(&self, token: Token) -> Option<Route> {
        self.0.get(route_key(token)).copied()
    }

    /// Points an existing route somewhere else (a connection that moved to
    /// a new version of its guest).
    pub fn repoint(&mut self, token: Token, route: Route) {
        if let Some(old) = self.0.get_mut(route_key(token)) {
            *old = route;
        }
    }

    pub fn remove(&mut self, key: RouteKey) {
        self.0.remove(key);
    }

    pub fn remove_token(&mut self, token: Token) {
        self.0.remove(route_key(token));
    }

    /// Stops watching a connection's socket and drops its routes. Call
    /// before the socket closes: a closed descriptor number can be reused
    /// at once, and epoll would keep watching the old file.
    pub fn unwatch(&mut self, reactor: &Reactor, conn: &Connection) {
        if conn.token != UNREGISTERED {
            let _ = reactor.delete(&conn.transport);
            self.remove_token(Token(conn.token));
        }
        if let Some(http) = &conn.http {
            self.remove_token(Token(http.timer.get()));
        }
    }
}
