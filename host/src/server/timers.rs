//! Firing a guest's timers. The guest's timers live in its own store (a
//! heap per guest); the loop has one timer per guest, armed at the
//! earliest deadline by `settle`, and when it fires the due timers are
//! called in deadline order, each after the guest's share allows.

use wasmloop_reactor::Reactor;

use super::Server;
use super::deferred::Deferred;
use super::slot::GuestKey;

impl Server {
    /// The guest's loop timer fired (or its postponed timer work runs):
    /// `on-timer` for each timer due now. Timers the callbacks set meanwhile
    /// wait for the next turn (the barrier), so a timer that re-arms itself
    /// at zero delay cannot hold the loop.
    pub(super) fn fire_guest_timers(&mut self, reactor: &mut Reactor, g: GuestKey) {
        let Some(slot) = self.guests.get_mut(g) else {
            return;
        };
        let now = reactor.now();
        // Fired, or (when this is postponed work) to be re-armed by settle.
        if let Some((id, at)) = slot.armed.take()
            && at > now
        {
            reactor.cancel_timer(id);
        }
        let barrier = match slot.state() {
            Some(state) => state.timers.barrier(),
            None => return,
        };
        loop {
            let Some(guest) = self.guests.get_mut(g).and_then(|s| s.guest.as_mut()) else {
                return;
            };
            if guest.state_mut().timers.next_deadline().is_none_or(|at| at > now) {
                break;
            }
            if !self.admit(reactor, g, Deferred::Timers(g)) {
                return;
            }
            let Some(guest) = self.guests.get_mut(g).and_then(|s| s.guest.as_mut()) else {
                return;
            };
            let Some(expired) = guest.state_mut().timers.pop_due(now, barrier) else {
                break;
            };
            let timer = crate::runtime::timer_handle(expired.id);
            if self.call(reactor, g, |guest| guest.on_timer(timer)).is_none() {
                return;
            }
        }
        self.settle(reactor, g);
    }
}
