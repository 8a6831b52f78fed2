//! After a guest faults: its slot is torn down (connections reset, store
//! dropped) and its fault policy applies (`on-fault`: restart after a
//! backoff, stay stopped, or stop the host; faults.rs counts the backoff
//! and the crash loop).

use wasmloop_reactor::Reactor;

use super::Server;
use super::slot::GuestKey;
use crate::runtime::Fault;

impl Server {
    /// A guest faulted: log it, close its connections, drop its instance,
    /// then apply its fault policy.
    pub(super) fn tear_down(&mut self, reactor: &mut Reactor, g: GuestKey, fault: &Fault) {
        let Some(slot) = self.guests.get_mut(g) else { return };
        if slot.tear_down(reactor, &mut self.routes, fault) {
            self.apply_fault_policy(reactor, g);
        }
    }

    /// Restart after a backoff (or stop in a crash loop), stay stopped, or
    /// stop the host.
    pub(super) fn apply_fault_policy(&mut self, reactor: &mut Reactor, g: GuestKey) {
        let Some(slot) = self.guests.get_mut(g) else { return };
        if slot.draining.is_some() {
            // An old version after a reload: nothing to restart.
            return self.retire_if_drained(reactor, g);
        }
        if let Some(reason) = slot.apply_fault_policy(reactor) {
            self.exit_reason = Some(reason);
            reactor.stop();
        }
        self.stop_if_done(reactor);
    }

    /// The backoff after a fault ran out: start a fresh instance. A failed
    /// start counts as a fault, so a guest whose `init` keeps trapping ends
    /// in a crash loop.
    pub(super) fn restart(&mut self, reactor: &mut Reactor, g: GuestKey) {
        let Some(slot) = self.guests.get_mut(g) else { return };
        if slot.guest.is_some() || self.shutting_down {
            return;
        }
        if slot.restart(&self.runtime) {
            self.settle(reactor, g);
        } else {
            self.apply_fault_policy(reactor, g);
        }
    }
}
