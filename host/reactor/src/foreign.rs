//! Running on someone else's loop, as libwebsockets' `lws_event_loop_ops`
//! does: the foreign loop waits, we ask it to watch descriptors and to arm
//! one timer, and when it reports something it calls
//! [`EventLoop::dispatch`](crate::EventLoop::dispatch) for one turn.
//!
//! # The contract of a [`LoopOps`] backend
//!
//! - [`watch`](LoopOps::watch) is `add` and `modify` in one: watching a
//!   descriptor again replaces its token and interest, and (like
//!   `EPOLL_CTL_MOD`) reports the descriptor again if it is already ready.
//! - Readiness is **edge-triggered**: reported once per change, never again
//!   until the handler has read (or written) to `EAGAIN`. A level-triggered
//!   backend would make the handler spin.
//! - A backend that cannot tell a hang-up from "readable" reports
//!   `closed = readable`: the handler then reads to `EAGAIN` instead of
//!   stopping at a short read, which costs one more read, never a lost FIN.
//! - [`arm_timer`](LoopOps::arm_timer) keeps **one** timer: each call
//!   replaces the previous deadline (`None` disarms it). The loop never asks
//!   for more than one.
//! - The [`Waker`] is the only part used from other threads
//!   ([`LoopHandle::wake`](crate::LoopHandle::wake) calls it).
//! - [`detach`](LoopOps::detach) removes everything the backend put on the
//!   foreign loop (descriptors, timer, waker): the foreign loop is left as it
//!   was found. Calling it twice is harmless.
//! - Running the foreign loop is its owner's business, not an operation.

use std::io;
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::Instant;

use crate::{Interest, Token};

/// Wakes the foreign loop from any thread, so that it soon calls
/// [`EventLoop::dispatch`](crate::EventLoop::dispatch).
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// What the [`EventLoop`](crate::EventLoop) needs from a foreign loop.
/// All calls but the [`Waker`]'s come from the loop thread.
pub trait LoopOps {
    /// Watches `fd` (again) for `interest`, edge-triggered, reporting
    /// `token`.
    fn watch(&mut self, fd: BorrowedFd<'_>, token: Token, interest: Interest) -> io::Result<()>;
    /// Stops watching `fd`; called before it is closed.
    fn unwatch(&mut self, fd: BorrowedFd<'_>) -> io::Result<()>;
    /// Arms the one timer at `deadline`, replacing the previous one; `None`
    /// disarms it. A deadline in the past means "dispatch soon".
    fn arm_timer(&mut self, deadline: Option<Instant>);
    /// The thread-safe wake-up; asked for once, when the loop is created.
    fn waker(&mut self) -> io::Result<Waker>;
    /// Removes everything this backend registered on the foreign loop.
    fn detach(&mut self);
}
