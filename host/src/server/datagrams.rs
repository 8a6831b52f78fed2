//! UDP: the server's half of `datagrams`.
//!
//! The imports (guest_io/sockets.rs) bind and close sockets in the guest's
//! table; after each callback the server registers the new ones (readable,
//! edge-triggered) and deregisters, then closes, the closed ones. Incoming
//! datagrams are read into the server's read buffer, a bounded number per
//! wakeup (the rest in the deferred phase, like connection reads); those
//! from peers not on the guest's allowlist are dropped, the others become
//! `on-datagram` calls if the guest exports `datagram-callbacks`.

use std::io;

use tracing::{debug, warn};
use wasmloop_reactor::{Interest, Reactor, Token};

use super::Server;
use super::deferred::Deferred;
use super::routes::{Route, Routes, token};
use super::slot::GuestKey;
use crate::runtime::Handle;
use crate::runtime::{GuestIo, UdpKey, UdpSocket};
use wasmloop_io::UNREGISTERED;

/// Datagrams received per socket per wakeup, so one busy socket cannot
/// starve the rest of the loop.
const DATAGRAMS_PER_WAKEUP: usize = 64;

impl Server {
    /// After a callback: registers the UDP sockets the guest bound and
    /// deregisters and closes the ones it closed.
    pub(super) fn settle_datagrams(&mut self, reactor: &mut Reactor, g: GuestKey) {
        let Some(guest) = self.guests.get_mut(g).and_then(|s| s.guest.as_mut()) else { return };
        let GuestIo { name, udp, udp_new, udp_closed, .. } = guest.state_mut();
        for socket in udp_closed.drain(..) {
            forget(reactor, &mut self.routes, socket);
        }
        for k in udp_new.drain(..) {
            // Closed again in the same callback: already forgotten above.
            let Some(socket) = udp.get_mut(k) else { continue };
            if socket.token != UNREGISTERED {
                continue;
            }
            let route = self.routes.insert(Route::Datagram(g, k));
            socket.token = token(route).0;
            if let Err(e) = reactor.add(&socket.socket, token(route), Interest::READABLE) {
                // Rare (out of kernel memory); the guest's handle dies and
                // its next call on it says so.
                warn!(guest = &**name, "cannot watch a UDP socket, closing it: {e}");
                self.routes.remove(route);
                udp.remove(k);
            }
        }
    }

    /// Reads datagrams on `k` until the socket is drained or the per-wakeup
    /// budget is spent (then the rest waits for the deferred phase).
    pub(super) fn receive_datagrams(&mut self, reactor: &mut Reactor, g: GuestKey, k: UdpKey) {
        let mut buf = std::mem::take(&mut self.read_buf);
        let mut budget_left = true;
        for round in 0..=DATAGRAMS_PER_WAKEUP {
            if round == DATAGRAMS_PER_WAKEUP {
                budget_left = false;
                break;
            }
            if !self.admit(reactor, g, Deferred::Datagrams(g, k)) {
                break;
            }
            let Some(guest) = self.guests.get(g).and_then(|s| s.guest.as_ref()) else { break };
            let state = guest.state();
            let Some(socket) = state.udp.get(k) else { break };
            let (len, peer) = match socket.socket.recv_from(&mut buf) {
                Ok(received) => received,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    debug!(guest = &*state.name, "UDP receive failed: {e}");
                    break;
                }
            };
            if !state.grants.connect.allows(peer) {
                debug!(guest = &*state.name, "dropped a datagram from {peer}: not on the allowlist");
                continue;
            }
            if !guest.has_datagrams() {
                // Send-only socket: the guest cannot take datagrams.
                continue;
            }
            let peer = peer.to_string();
            if self.call(reactor, g, |guest| guest.on_datagram(k.handle(), &peer, &buf[..len])).is_none() {
                break;
            }
        }
        self.read_buf = buf;
        if !budget_left {
            self.defer(reactor, Deferred::Datagrams(g, k));
        }
    }
}

/// Deregisters, then closes, a UDP socket.
fn forget(reactor: &mut Reactor, routes: &mut Routes, socket: UdpSocket) {
    if socket.token != UNREGISTERED {
        let _ = reactor.delete(&socket.socket);
        routes.remove_token(Token(socket.token));
    }
    drop(socket);
}

/// A faulted guest's UDP sockets: deregister and close them all.
pub(super) fn close_all(reactor: &mut Reactor, routes: &mut Routes, state: &mut GuestIo) {
    for socket in state.udp_closed.drain(..) {
        forget(reactor, routes, socket);
    }
    state.udp_new.clear();
    for (_, socket) in state.udp.drain() {
        forget(reactor, routes, socket);
    }
}
