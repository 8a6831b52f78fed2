//! Where a protocol's output goes, and the few connection controls it may
//! use. The HTTP state machine works through this trait rather than on a
//! [`Connection`](crate::Connection), so it runs in unit tests against a
//! plain [`Buffer`], and it never learns about sockets or transports.

use std::cell::{Cell, RefCell};

use crate::error::CloseReason;

/// One connection's output and controls, as a protocol sees them.
pub trait Output {
    /// Whether the owner may still write: not closing, not shut, not failed.
    fn open(&self) -> bool;

    /// Whether the connection is closing (a reason to close is set).
    fn closing(&self) -> bool;

    /// Room for more, under every limit that applies to the owner's output.
    fn room(&self) -> usize;

    /// Bytes queued and not yet taken by the kernel.
    fn buffered(&self) -> usize;

    /// `parts` in order, all or nothing: false, and nothing written, if
    /// they do not fit. Framed output must never be cut in half.
    fn write_all(&self, parts: &[&[u8]]) -> bool;

    /// The host's own small protocol output — `100 Continue`, a pong, a
    /// close frame, an error response — all or nothing, bounded by the
    /// connection's buffer only: a guest that filled its output budget must
    /// not silence the protocol. Still counted in the budget and metered.
    fn write_control(&self, parts: &[&[u8]]) -> bool;

    /// Close once the output is sent, with `reason` unless one is set.
    fn close(&self, reason: CloseReason);

    /// Send FIN once the output is sent; reading goes on.
    fn shut_write(&self);

    /// Stop (or restart) reading from the peer.
    fn set_paused(&self, paused: bool);

    /// Bytes may be waiting: read them after this callback is settled.
    fn resume(&self);
}

/// An in-memory connection: what a test (or a replay) reads back.
#[derive(Debug, Default)]
pub struct Buffer {
    pub bytes: RefCell<Vec<u8>>,
    /// Room for output; unlimited when `None`.
    pub limit: Cell<Option<usize>>,
    pub closing: RefCell<Option<CloseReason>>,
    pub shut: Cell<bool>,
    pub paused: Cell<bool>,
    pub resumed: Cell<bool>,
}

impl Buffer {
    /// Takes what was written so far (it counts as sent).
    pub fn take(&self) -> Vec<u8> {
        self.bytes.take()
    }
}

impl Output for Buffer {
    fn open(&self) -> bool {
        self.closing.borrow().is_none() && !self.shut.get()
    }

    fn closing(&self) -> bool {
        self.closing.borrow().is_some()
    }

    fn room(&self) -> usize {
        self.limit.get().map_or(usize::MAX, |l| l.saturating_sub(self.bytes.borrow().len()))
    }

    fn buffered(&self) -> usize {
        self.bytes.borrow().len()
    }

    fn write_all(&self, parts: &[&[u8]]) -> bool {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        total <= self.room() && self.write_control(parts)
    }

    fn write_control(&self, parts: &[&[u8]]) -> bool {
        let mut bytes = self.bytes.borrow_mut();
        parts.iter().for_each(|p| bytes.extend_from_slice(p));
        true
    }

    fn close(&self, reason: CloseReason) {
        self.closing.borrow_mut().get_or_insert(reason);
    }

    fn shut_write(&self) {
        self.shut.set(true);
    }

    fn set_paused(&self, paused: bool) {
        self.paused.set(paused);
    }

    fn resume(&self) {
        self.resumed.set(true);
    }
}
