//! wasmloop's event loop: one thread, non-blocking IO, timers, and one
//! thread-safe way in. It knows nothing about WebAssembly.
//!
//! # Pieces
//!
//! - [`Poller`]: the OS readiness queue, one file per backend (`sys/epoll.rs`
//!   on Linux, `sys/kqueue.rs` on macOS and the BSDs), five operations: `add`,
//!   `modify`, `delete`, `wait`, `notify`.
//! - [`TimerHeap`]: deadlines, never early, FIFO at equal deadlines, O(1) cancel.
//! - [`LoopHandle`]: `Send + Sync`; [`LoopHandle::wake`] and
//!   [`LoopHandle::post`] are the only calls allowed from other threads.
//! - [`EventLoop`]: runs the phases below and calls a [`Handler`].
//! - [`FileWatcher`]: file changes as a readable descriptor (inotify;
//!   kqueue `EVFILT_VNODE`), for reloading what changed on disk.
//! - [`foreign::LoopOps`]: five operations that put the loop on someone
//!   else's (calloop, GLib, …): the foreign loop waits and calls
//!   [`EventLoop::dispatch`] for a turn; detaching leaves it as it was.
//! - [`take_inherited`]: a descriptor a supervisor passed down by number
//!   (systemd socket activation), as an owned descriptor.
//!
//! # One turn of the loop ([`EventLoop::run_once`])
//!
//! 1. **Prepare** ([`Handler::prepare`]) if the wait may block, then
//!    **wait** for IO, no longer than the earliest timer deadline rounded up
//!    to the next millisecond (rounding down would wake before the deadline
//!    and spin), and not at all if posted closures or deferred work wait.
//! 2. **Read the clock** once; [`Reactor::now`] returns this reading until
//!    the next turn.
//! 3. **IO**: [`Handler::io`] for each ready source.
//! 4. **Posted closures** from other threads, in the order posted.
//! 5. **Timers** due at the clock reading, in deadline order.
//! 6. **Deferred work**: [`Handler::deferred`], for work a callback queued
//!    for "after it returns" (read budget exhausted, a resumed connection).
//!
//! # Guarantees and non-guarantees
//!
//! - Sources are edge-triggered: an event is reported once per change of
//!   readiness. The handler must read (or write) until `EAGAIN`, or remember
//!   the source and come back in the deferred phase.
//! - An event may be spurious: a read can still return `EAGAIN`.
//! - Events are delivered in no particular order across sources; read and
//!   write readiness of one source may arrive as one event or two.
//! - After [`Reactor::delete`] no new event for the source is reported, but
//!   events already collected in the current batch may still name its token:
//!   make tokens unique over time (e.g. with a generation count) so a stale
//!   event cannot reach a new source that reuses a slot. Always `delete`
//!   before closing the descriptor.
//! - Timers never fire early; they fire late by up to the time the loop
//!   spends in callbacks plus the OS's timer slack.
//! - With no timers armed and nothing ready, `wait` blocks indefinitely: an
//!   idle loop makes no wakeups.
//! - Nothing here is thread-safe except [`LoopHandle`].

mod event_loop;
pub mod foreign;
mod handle;
mod inherit;
mod timer;
mod watch;

#[cfg(any(target_os = "linux", target_os = "android"))]
#[path = "sys/epoll.rs"]
mod sys;
#[cfg(any(target_os = "macos", target_os = "ios", target_os = "freebsd", target_os = "dragonfly"))]
#[path = "sys/kqueue.rs"]
mod sys;

pub use event_loop::{EventLoop, Handler, Reactor, Turn};
pub use handle::LoopHandle;
pub use inherit::take_inherited;
pub use sys::{Events, Poller};
pub use timer::{Expired, TimerHeap, TimerId};
pub use watch::{FileWatcher, WatchId};

/// Identifies a registered source in events. Chosen by the caller;
/// `u64::MAX` is reserved for the loop's own wake-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub u64);

/// What a source should be watched for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interest {
    pub readable: bool,
    pub writable: bool,
}

impl Interest {
    pub const READABLE: Interest = Interest { readable: true, writable: false };
    pub const WRITABLE: Interest = Interest { readable: false, writable: true };
    pub const BOTH: Interest = Interest { readable: true, writable: true };
}

/// A readiness event. `readable` means "a read will not block" (it may
/// return data, end-of-stream or an error); `writable` likewise for writes.
/// Hang-ups and errors set both, so the next syscall reports them.
/// `closed` says the peer closed its side or the socket failed: the
/// end-of-stream is queued behind any data, so read until it comes (no new
/// edge will announce it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub token: Token,
    pub readable: bool,
    pub writable: bool,
    pub closed: bool,
}
