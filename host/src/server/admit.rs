//! Admission: before a guest is called — at an accept, a read, a due timer,
//! a datagram, a deferred callback, each HTTP request and WebSocket
//! message — the server asks its slot's gate (fairness.rs). Work that may
//! not run now is postponed: to the next turn's deferred phase, or held
//! in the slot until its throttle ends; a lasting overrun is a fault.

use wasmloop_reactor::Reactor;

use super::Server;
use super::deferred::Deferred;
use super::fairness::Gate;
use super::slot::GuestKey;

impl Server {
    /// Whether guest `g` may run a callback now (see `GuestSlot::gate`).
    pub(super) fn gate(&mut self, reactor: &Reactor, g: GuestKey) -> Gate {
        let deferred_phase = self.deferred.running;
        self.guests.get_mut(g).map_or(Gate::Open, |slot| slot.gate(reactor.now(), deferred_phase))
    }

    /// [`Server::gate`], postponing `work` if the gate is not open.
    pub(super) fn admit(&mut self, reactor: &mut Reactor, g: GuestKey, work: Deferred) -> bool {
        let gate = self.gate(reactor, g);
        if gate == Gate::Open {
            return true;
        }
        self.postpone(reactor, g, gate, work);
        false
    }

    /// `work` of guest `g` waits: for the next turn, or until the guest's
    /// throttle ends. A lasting overrun is the guest's fault.
    pub(super) fn postpone(&mut self, reactor: &mut Reactor, g: GuestKey, gate: Gate, work: Deferred) {
        if gate != Gate::Open && !matches!(gate, Gate::Overrun(_)) && self.mark_postponed(&work, true) {
            return;
        }
        let Some(slot) = self.guests.get_mut(g) else { return };
        match gate {
            Gate::Open => {}
            Gate::NextTurn => {
                slot.wait();
                self.deferred.postpone(reactor, g, work);
            }
            Gate::Throttled(until) => slot.hold(reactor, until, work),
            Gate::Overrun(over) => {
                let fault = slot.overrun(over);
                self.tear_down(reactor, g, &fault);
            }
        }
    }

    /// Marks the socket behind `work` as waiting (or, when its work runs,
    /// no longer waiting) for its guest's share; returns whether it was.
    /// While it waits its work is queued once, however many events its
    /// peer causes meanwhile.
    pub(super) fn mark_postponed(&mut self, work: &Deferred, postponed: bool) -> bool {
        match *work {
            Deferred::Read(g, c) => self.connection(g, c).is_some_and(|conn| conn.read_postponed.replace(postponed)),
            Deferred::Accept(index) => {
                self.listeners.get_mut(index).is_some_and(|l| std::mem::replace(&mut l.accept_postponed, postponed))
            }
            Deferred::Datagrams(g, k) => self
                .guests
                .get(g)
                .and_then(|slot| slot.state()?.udp.get(k))
                .is_some_and(|socket| socket.postponed.replace(postponed)),
            _ => false,
        }
    }

    /// A guest's throttle ended: what it was holding runs in this turn's
    /// deferred phase, in order.
    pub(super) fn release(&mut self, reactor: &mut Reactor, g: GuestKey) {
        let Some(slot) = self.guests.get_mut(g) else { return };
        let held = slot.release(reactor);
        self.deferred.release(reactor, held);
    }
}
