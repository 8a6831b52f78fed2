//! The deferred phase's work: callbacks that settling a callback caused
//! (`on-close`, `on-writable`, …: never called from inside another call),
//! reads past the per-wakeup budget, and work postponed for its guest's
//! share of the loop.

use std::collections::VecDeque;

use wasmloop_io::CloseReason;
use wasmloop_reactor::Reactor;

use super::slot::GuestKey;
use crate::runtime::bindings::ConnectError;
use crate::runtime::{ConnKey, UdpKey};

/// Callbacks queued for the deferred phase.
pub(super) enum Deferred {
    Read(GuestKey, ConnKey),
    Writable(GuestKey, ConnKey),
    Closed(GuestKey, u64, CloseReason),
    Accept(usize),
    /// Fire the guest's due timers (after waiting for its CPU share).
    Timers(GuestKey),
    /// `on-connect` with the outcome (outbound.rs).
    Connected(GuestKey, ConnKey, Result<(), ConnectError>),
    /// More datagrams to read after the per-wakeup budget (datagrams.rs).
    Datagrams(GuestKey, UdpKey),
    /// HTTP (http.rs): `on-response-writable`, `on-websocket-writable`,
    /// `on-request-closed`, `on-websocket-close`.
    ResponseWritable(GuestKey, ConnKey, u64),
    WebSocketWritable(GuestKey, ConnKey, u64),
    RequestClosed(GuestKey, u64),
    WebSocketClosed(GuestKey, u64, u16, String),
}

impl Deferred {
    /// The guest this work calls straight away, if it is one callback (the
    /// others check the guest's share as they go).
    pub fn guest_calling(&self) -> Option<GuestKey> {
        match *self {
            Deferred::Writable(g, _)
            | Deferred::Closed(g, ..)
            | Deferred::Connected(g, ..)
            | Deferred::ResponseWritable(g, ..)
            | Deferred::WebSocketWritable(g, ..)
            | Deferred::RequestClosed(g, _)
            | Deferred::WebSocketClosed(g, ..) => Some(g),
            Deferred::Read(..) | Deferred::Accept(_) | Deferred::Timers(_) | Deferred::Datagrams(..) => None,
        }
    }
}

/// The work for the deferred phase, in order. Each entry says whether it
/// was postponed for its guest's share of the loop: such work is counted
/// in the guest's `waiting`, so the guest's fresh events queue behind it.
#[derive(Default)]
pub(super) struct DeferredQueue {
    queue: VecDeque<(Deferred, Option<GuestKey>)>,
    /// The deferred phase is running (fresh events are not: see `gate`).
    pub running: bool,
}

impl DeferredQueue {
    /// Queues `work` for this turn's deferred phase.
    pub fn push(&mut self, reactor: &mut Reactor, work: Deferred) {
        self.queue.push_back((work, None));
        reactor.defer();
    }

    /// Queues `work` that waits for guest `g`'s next turn.
    pub fn postpone(&mut self, reactor: &mut Reactor, g: GuestKey, work: Deferred) {
        self.queue.push_back((work, Some(g)));
        reactor.defer();
    }

    /// Queues the work a throttled guest held, in order.
    pub fn release(&mut self, reactor: &mut Reactor, held: Vec<Deferred>) {
        if !held.is_empty() {
            self.queue.extend(held.into_iter().map(|work| (work, None)));
            reactor.defer();
        }
    }

    /// How much work is queued: one deferred phase runs only that much, so
    /// what it queues waits for the next turn and IO and timers are not
    /// starved.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The next work, and the guest it was postponed for, if it was.
    pub fn pop(&mut self) -> Option<(Deferred, Option<GuestKey>)> {
        self.queue.pop_front()
    }
}
