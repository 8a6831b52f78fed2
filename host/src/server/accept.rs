//! Accepting inbound connections: in batches per wakeup, each after its
//! guest's share of the loop allows, handed to the guest as a raw
//! connection (`on-accept`) or to the HTTP state machine (http.rs).

use std::net::TcpStream;
use std::time::Duration;

use wasmloop_reactor::Reactor;

use super::Server;
use super::deferred::Deferred;
use super::listener::{Accepted, Protocol};
use super::routes::token;
use crate::runtime::Handle;

/// Connections accepted per listener per wakeup.
const ACCEPTS_PER_WAKEUP: usize = 64;
/// Pause before retrying accept when out of descriptors.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

impl Server {
    pub(super) fn accept(&mut self, reactor: &mut Reactor, index: usize) {
        for _ in 0..ACCEPTS_PER_WAKEUP {
            // Accepting calls the guest: wait for its share of the loop
            // (the rest stay in the kernel's backlog meanwhile).
            let Some(g) = self.listeners.get(index).map(|l| l.guest) else { return };
            if !self.admit(reactor, g, Deferred::Accept(index)) {
                return;
            }
            let Some(listener) = self.listeners.get_mut(index) else {
                return;
            };
            match listener.accept() {
                Accepted::Stream(stream) => self.adopt(reactor, index, stream),
                Accepted::Drained => return,
                Accepted::RetryLater => {
                    let route = listener.route;
                    reactor.set_timeout(ACCEPT_RETRY, token(route));
                    return;
                }
            }
        }
        self.defer(reactor, Deferred::Accept(index));
    }

    /// A connection from listener `index`: its guest takes it (or refuses
    /// it), then hears of it as the listener's protocol says.
    fn adopt(&mut self, reactor: &mut Reactor, index: usize, stream: TcpStream) {
        let listener = &self.listeners[index];
        let (g, handle, protocol) = (listener.guest, listener.handle, listener.protocol);
        let Some(slot) = self.guests.get_mut(g) else { return };
        let Some(c) = slot.adopt(reactor, &mut self.routes, g, stream) else { return };
        match protocol {
            Protocol::Tcp => {
                self.call(reactor, g, |guest| guest.on_accept(handle, c.handle()));
            }
            Protocol::Http => self.adopt_http(reactor, g, c, false),
            Protocol::WebSocket => self.adopt_http(reactor, g, c, true),
        }
    }
}
