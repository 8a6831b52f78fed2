//! Native handlers: Rust code on the loop beside the guests, with the same
//! callbacks as a guest's `callbacks` interface (`wit/handler.wit`) and the
//! same operations as its imports.
//!
//! A [`Handler`] gets one call per event, like a guest: a connection
//! accepted, bytes, end-of-stream, room to write, a close, a timer,
//! shutdown. Through its [`Cx`] it writes, closes and sets timers, with the
//! checks and limits a guest has (handles from its own table,
//! `max-output`, `max-connections`, `max-timers`): each [`Cx`] method is the
//! very function the guest's import calls. What a callback asks for is
//! settled after it returns, as for a guest, so a handler never re-enters
//! itself.
//!
//! The server treats it as a guest: its own connection table, timers and
//! output budget, its fault policy. A panic in a callback is caught and is a
//! fault (`panicked`): its connections are reset, and under `restart` a
//! fresh handler from the factory takes over after the backoff. Unlike a
//! guest it is trusted code: no deadline interrupts a callback that loops
//! or blocks, and its memory is not limited. Hot reload does not apply. (A
//! program built with `panic = "abort"` cannot catch a panic: it aborts.)
//!
//! Handlers need not be `Send`: they live and run on the loop's thread, so
//! several may share state through `Rc<RefCell<_>>`.
//!
//! Add one with [`embed::Host::add_native`](crate::embed::Host::add_native)
//! (or [`Server::add_native`](crate::server::Server::add_native)):
//!
//! ```no_run
//! use wasmloop::config::{FaultPolicy, Policy, ReloadMode};
//! use wasmloop::embed::Host;
//! use wasmloop::native::{self, Cx, Handler};
//! use wasmloop::server::{NativeSpec, bind};
//!
//! /// Sends every byte back, upper-cased.
//! struct Shout;
//!
//! impl Handler for Shout {
//!     fn on_data(&mut self, cx: &mut Cx<'_>, conn: u64, data: &[u8]) {
//!         let upper = data.to_ascii_uppercase();
//!         match cx.write(conn, &upper) {
//!             Ok(n) if n == upper.len() => {}
//!             // The output buffer is full (a slow reader), or it closed.
//!             _ => drop(cx.abort(conn)),
//!         }
//!     }
//! }
//!
//! # fn main() -> anyhow::Result<()> {
//! let mut host = Host::new()?;
//! host.add_native(NativeSpec {
//!     name: "shout".into(),
//!     listeners: vec![bind("127.0.0.1:7001".parse()?)?],
//!     limits: Default::default(),
//!     policy: Policy { on_fault: FaultPolicy::Restart, reload: ReloadMode::Drain },
//!     factory: native::factory(|| Shout),
//! })?;
//! host.run()?;
//! # Ok(())
//! # }
//! ```

use std::any::Any;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use crate::callbacks::Callback;
use crate::metrics::FaultKind;
pub use wasmloop_io::{CloseReason, ErrorCode};

use crate::guest_io::{GuestIo, GuestLog, GuestSetup};
pub use crate::runtime::bindings::{EofAction, ListenerInfo};
use crate::runtime::guest::{Fault, listener_infos};

/// A native handler's callbacks: those of the WIT `callbacks` interface,
/// with the same ordering guarantees (per connection, `on_accept` first and
/// `on_close` last, each exactly once; no `on_data` while reading is paused
/// or after `on_eof`, `close` or `abort`). Every method has a default that
/// does nothing; `on_eof` closes.
///
/// Handles are `u64`s from the handler's own table, as for a guest: a stale
/// one gets [`ErrorCode::InvalidHandle`].
pub trait Handler {
    /// Called once, before any other callback, with the listeners it was
    /// given (handle and bound address). An error stops it from starting
    /// (when added: an error; after a restart: a fault).
    fn init(&mut self, _cx: &mut Cx<'_>, _listeners: &[ListenerInfo]) -> Result<(), String> {
        Ok(())
    }

    /// A new connection on `listener`.
    fn on_accept(&mut self, _cx: &mut Cx<'_>, _listener: u64, _conn: u64) {}

    /// Bytes from the peer, in order, at most 64 KiB per call.
    fn on_data(&mut self, _cx: &mut Cx<'_>, _conn: u64, _data: &[u8]) {}

    /// The peer closed its sending side. [`EofAction::Close`] sends what is
    /// buffered, then closes (`on_close(PeerClosed)`).
    fn on_eof(&mut self, _cx: &mut Cx<'_>, _conn: u64) -> EofAction {
        EofAction::Close
    }

    /// The output buffer drained, after [`Cx::notify_writable`].
    fn on_writable(&mut self, _cx: &mut Cx<'_>, _conn: u64) {}

    /// The connection is gone; `conn` is dead from now on.
    fn on_close(&mut self, _cx: &mut Cx<'_>, _conn: u64, _reason: &CloseReason) {}

    /// A timer fired.
    fn on_timer(&mut self, _cx: &mut Cx<'_>, _timer: u64) {}

    /// The host is stopping gracefully: it stopped accepting. Final writes
    /// and closes are still sent (for a bounded time).
    fn on_shutdown(&mut self, _cx: &mut Cx<'_>) {}
}

/// Makes a handler: once when it is added, again after each restart.
pub type HandlerFactory = Box<dyn Fn() -> Box<dyn Handler>>;

/// A [`HandlerFactory`] from a closure returning a concrete handler.
pub fn factory<H: Handler + 'static>(make: impl Fn() -> H + 'static) -> HandlerFactory {
    Box::new(move || Box::new(make()))
}

/// What a callback can do: the operations of a guest's `connections` and
/// `timers` imports, on the handler's own connections and timers. Errors
/// are those of the WIT functions of the same name.
pub struct Cx<'a> {
    io: &'a mut GuestIo,
}

impl Cx<'_> {
    /// The name the handler was added under.
    pub fn name(&self) -> &str {
        &self.io.name
    }

    /// Queues `data` and returns how many bytes were taken: fewer than
    /// `data.len()` when the output buffer is full (the rest stays yours;
    /// see [`Cx::notify_writable`]). `Closed` after `close`, `abort` or
    /// `shutdown_write`.
    pub fn write(&mut self, conn: u64, data: &[u8]) -> Result<usize, ErrorCode> {
        self.io.write(conn, data)
    }

    /// Asks for one `on_writable` once the output buffer is empty.
    pub fn notify_writable(&mut self, conn: u64) -> Result<(), ErrorCode> {
        self.io.notify_writable(conn)
    }

    /// No `on_data` until [`Cx::resume_reading`]; the peer is slowed down
    /// by TCP flow control.
    pub fn pause_reading(&mut self, conn: u64) -> Result<(), ErrorCode> {
        self.io.pause_reading(conn)
    }

    pub fn resume_reading(&mut self, conn: u64) -> Result<(), ErrorCode> {
        self.io.resume_reading(conn)
    }

    /// Half-close: FIN once the buffered output is sent; reading goes on.
    pub fn shutdown_write(&mut self, conn: u64) -> Result<(), ErrorCode> {
        self.io.shutdown_write(conn)
    }

    /// Graceful close: buffered output is still sent, then `on_close(Local)`.
    pub fn close(&mut self, conn: u64) -> Result<(), ErrorCode> {
        self.io.close(conn)
    }

    /// Immediate close: buffered output is dropped, the peer gets a reset.
    pub fn abort(&mut self, conn: u64) -> Result<(), ErrorCode> {
        self.io.abort(conn)
    }

    /// Bytes in the output buffer not yet handed to the kernel.
    pub fn buffered(&self, conn: u64) -> Result<usize, ErrorCode> {
        self.io.buffered(conn)
    }

    /// The peer's address; `None` if the OS cannot tell (it already reset).
    pub fn peer_address(&self, conn: u64) -> Result<Option<SocketAddr>, ErrorCode> {
        self.io.peer_address(conn)
    }

    /// Our side's address; `None` if the OS cannot tell.
    pub fn local_address(&self, conn: u64) -> Result<Option<SocketAddr>, ErrorCode> {
        self.io.local_address(conn)
    }

    /// The address a listener of this handler is bound to.
    pub fn listener_address(&self, listener: u64) -> Result<&str, ErrorCode> {
        self.io.listener(listener).map(|l| l.address.as_str())
    }

    /// Fires `on_timer` once, `delay` from now. `LimitReached` past
    /// `max_timers`.
    pub fn set_timeout(&mut self, delay: Duration) -> Result<u64, ErrorCode> {
        self.io.add_timeout(delay)
    }

    /// Fires `on_timer` every `interval` (at least 1 ms, else
    /// `InvalidArgument`) until cancelled; late ticks are skipped.
    pub fn set_interval(&mut self, interval: Duration) -> Result<u64, ErrorCode> {
        self.io.add_interval(interval)
    }

    /// Stops a timer; it will not fire again, even if already due.
    pub fn cancel_timer(&mut self, timer: u64) -> Result<(), ErrorCode> {
        self.io.cancel_timer(timer)
    }
}

/// A running native handler and its I/O context, the counterpart of a wasm
/// [`Guest`](crate::runtime::Guest) (which has the same context in its
/// store, beside WASI and its memory).
pub(crate) struct NativeGuest {
    handler: Box<dyn Handler>,
    io: GuestIo,
}

impl NativeGuest {
    /// Makes a handler with `factory` and runs its `init`.
    pub fn start(factory: &HandlerFactory, setup: &GuestSetup) -> Result<NativeGuest, Fault> {
        // Only the guest's own limits apply: a native handler has no store.
        let log =
            GuestLog::new(setup.name.clone(), "native".into(), setup.limits.log_lines_per_sec, setup.metrics.clone());
        let io = GuestIo::new(setup, Arc::new(log));
        let name = setup.name.clone();
        let handler = catch_unwind(AssertUnwindSafe(factory)).map_err(|panic| panicked(&name, "factory", panic))?;
        let mut native = NativeGuest { handler, io };
        let infos = listener_infos(setup);
        native.call(Callback::Init, |h, cx| h.init(cx, &infos))?.map_err(|message| Fault {
            guest: name,
            callback: "init",
            what: "refused to start",
            detail: message,
            kind: FaultKind::InitRefused,
        })?;
        Ok(native)
    }

    pub fn name(&self) -> &Arc<str> {
        &self.io.name
    }

    pub fn state(&self) -> &GuestIo {
        &self.io
    }

    pub fn state_mut(&mut self) -> &mut GuestIo {
        &mut self.io
    }

    /// Calls the handler; a panic becomes a [`Fault`]. Unwind safety: a
    /// panic comes from the handler's code between `Cx` calls, never inside
    /// one, so the state is whole; after the fault the server only closes
    /// its sockets and drops it with the handler, never calling it again.
    pub(super) fn call<R>(
        &mut self,
        callback: Callback,
        f: impl FnOnce(&mut dyn Handler, &mut Cx<'_>) -> R,
    ) -> Result<R, Fault> {
        let NativeGuest { handler, io } = self;
        let started = io.metrics.is_some().then(crate::metrics::stamp);
        let mut cx = Cx { io: &mut *io };
        let result = catch_unwind(AssertUnwindSafe(|| f(&mut **handler, &mut cx)));
        if let (Some(started), Some(metrics)) = (started, &io.metrics) {
            metrics.callback(callback, started);
        }
        result.map_err(|panic| panicked(&io.name, callback.name(), panic))
    }
}

fn panicked(guest: &Arc<str>, callback: &'static str, panic: Box<dyn Any + Send>) -> Fault {
    let detail = match panic.downcast::<String>() {
        Ok(message) => *message,
        Err(panic) => panic.downcast_ref::<&str>().map_or("(a panic without a message)", |m| m).to_string(),
    };
    Fault { guest: guest.clone(), callback, what: "panicked", detail, kind: FaultKind::Panic }
}
