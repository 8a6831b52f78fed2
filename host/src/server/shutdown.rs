//! Graceful shutdown (SIGINT/SIGTERM): stop accepting, tell every guest,
//! close each connection once its output drained, and stop the loop when
//! none is left; at the shutdown timeout, or a second signal, reset the
//! rest.

use tracing::{info, warn};
use wasmloop_reactor::Reactor;

use super::Server;
use super::routes::{Route, token};
use super::slot::GuestKey;

impl Server {
    /// SIGINT/SIGTERM: stop accepting, tell every guest, close connections
    /// once their output drained, and stop the loop when all are gone or the
    /// shutdown timeout passes. A second signal stops at once.
    pub(super) fn begin_shutdown(&mut self, reactor: &mut Reactor) {
        if self.shutting_down {
            warn!("second signal: stopping now");
            return self.abort_all(reactor);
        }
        self.shutting_down = true;
        info!("shutting down: no new connections");
        for listener in self.listeners.drain(..) {
            let _ = reactor.delete(&listener.socket);
            self.routes.remove(listener.route);
        }
        let guests: Vec<GuestKey> = self.guests.keys().collect();
        for &g in &guests {
            self.call(reactor, g, |guest| guest.on_shutdown());
        }
        for &g in &guests {
            self.close_all(reactor, g);
        }
        let route = self.routes.insert(Route::ShutdownDeadline);
        reactor.set_timeout(self.config.shutdown_timeout, token(route));
        self.stop_if_done(reactor);
    }

    /// Closes every connection of instance `g` gracefully (output is sent
    /// first, within the linger time), with reason `host-shutdown`.
    pub(super) fn close_all(&mut self, reactor: &mut Reactor, g: GuestKey) {
        if let Some(slot) = self.guests.get(g) {
            slot.close_all();
        }
        self.settle(reactor, g);
    }

    /// The shutdown timeout passed, or a second signal came: reset every
    /// connection and stop the loop.
    pub(super) fn abort_all(&mut self, reactor: &mut Reactor) {
        for slot in self.guests.values_mut() {
            slot.abort_all(reactor, &mut self.routes);
        }
        reactor.stop();
    }

    /// While shutting down: stops the loop once no connection and no
    /// deferred work is left.
    pub(super) fn stop_if_done(&mut self, reactor: &mut Reactor) {
        if !self.shutting_down {
            return;
        }
        let open: usize = self.guests.values().filter_map(|s| s.state()).map(|s| s.connections.len()).sum();
        if open == 0 && self.deferred.is_empty() {
            info!("all connections closed; exiting");
            reactor.stop();
        }
    }
}
