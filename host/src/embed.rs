//! wasmloop as a library: a [`Host`] is the runtime, the loop and the server
//! in one value — what `host run` builds from its flags.
//!
//! Run it on a thread of its own ([`Host::run`]), or inside a loop you
//! already have: [`Host::backend_fd`] is readable when there is work,
//! [`Host::next_timeout`] says how long the foreign loop may sleep, and
//! [`Host::run_once`] does one turn without blocking (libuv's
//! `uv_backend_fd`/`uv_backend_timeout`/`uv_run(UV_RUN_NOWAIT)`).
//! `examples/embed-tokio` runs guests on a tokio `current_thread` runtime
//! this way. A callback loop can instead host the reactor itself, each of
//! our descriptors and our one timer on it (libwebsockets' event-lib ops):
//! [`crate::on_calloop`], shown in `examples/calloop-host`. [`HostHandle`] is the one thread-safe way in: it posts a
//! closure to run on the loop thread, or stops the loop.
//!
//! ```no_run
//! use wasmloop::embed::Host;
//! use wasmloop::server::{GuestSpec, ListenerSpec, Protocol, bind};
//! use wasmloop::config::{FaultPolicy, Policy, ReloadMode};
//!
//! # fn main() -> anyhow::Result<()> {
//! let mut host = Host::new()?;
//! let module = host.load("target/wasm32-wasip2/guest/echo.wasm".as_ref())?;
//! host.add_guest(GuestSpec {
//!     name: "echo".into(),
//!     module,
//!     listeners: vec![ListenerSpec { socket: bind("127.0.0.1:7000".parse()?)?, protocol: Protocol::Tcp }],
//!     config: String::new(),
//!     limits: Default::default(),
//!     grants: Default::default(),
//!     policy: Policy { on_fault: FaultPolicy::Restart, reload: ReloadMode::Drain },
//! })?;
//! // Another thread may stop it: `handle.stop()`.
//! let handle = host.handle();
//! std::thread::spawn(move || {
//!     std::thread::sleep(std::time::Duration::from_secs(60));
//!     handle.stop();
//! });
//! host.run()?;
//! # Ok(())
//! # }
//! ```
//!
//! Metrics, as `host run --admin` has them: make a
//! [`Metrics`](crate::metrics::Metrics), give each loop's `ServerConfig`
//! its own `metrics.add_worker()` (before [`Host::with_config`]), and serve
//! them with [`crate::admin::start`] or read them with
//! [`crate::metrics::status`].
//!
//! Not guaranteed: a `Host` is not `Send` once guests are added (their
//! stores stay on the thread that runs them); [`Host::run_once`] must be
//! called from that one thread. Guest calls into WASI that would block on
//! a future use the tokio runtime entered on that thread, if any, so do
//! not call `run_once` from *inside* a tokio task that is itself being
//! polled by a multi-threaded runtime's `block_on`.

use std::io;
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use wasmloop_reactor::{EventLoop, LoopHandle, Reactor};

use crate::runtime::{Module, Runtime};
use crate::server::{GuestSpec, NativeSpec, Server, ServerConfig};

/// The runtime, one event loop and its server.
pub struct Host {
    event_loop: EventLoop<Server>,
    server: Server,
}

/// The thread-safe way in: `Clone + Send`; every call wakes the loop.
#[derive(Clone)]
pub struct HostHandle {
    inner: LoopHandle<Server>,
}

impl HostHandle {
    /// Runs `job` on the loop thread, between events. Returns false if the
    /// loop is gone.
    pub fn post(&self, job: impl FnOnce(&mut Server, &mut Reactor) + Send + 'static) -> bool {
        self.inner.post(job).is_ok()
    }

    /// Makes [`Host::run`] return after the current turn (an immediate
    /// stop, not the graceful SIGTERM shutdown).
    pub fn stop(&self) -> bool {
        self.post(|_, reactor| reactor.stop())
    }
}

impl Host {
    /// A host with the default server settings and no compiled-code cache
    /// (pass a [`Runtime`] with [`Runtime::use_cache`] to
    /// [`Host::with_config`] for one).
    pub fn new() -> anyhow::Result<Host> {
        Host::with_config(Runtime::new()?, ServerConfig::default())
    }

    pub fn with_config(runtime: Runtime, config: ServerConfig) -> anyhow::Result<Host> {
        Ok(Host::with_event_loop(runtime, config, EventLoop::new()?))
    }

    /// A host on a loop made elsewhere, e.g. one on a foreign loop
    /// ([`crate::on_calloop::event_loop`]); take it apart with
    /// [`Host::into_parts`] to attach it.
    pub fn with_event_loop(runtime: Runtime, config: ServerConfig, mut event_loop: EventLoop<Server>) -> Host {
        event_loop.measure(config.metrics.is_some());
        let mut server = Server::new(runtime, config);
        server.set_handle(event_loop.handle());
        Host { event_loop, server }
    }

    /// The loop and the server (its handler), e.g. for
    /// [`crate::on_calloop::Link::attach`].
    pub fn into_parts(self) -> (EventLoop<Server>, Server) {
        (self.event_loop, self.server)
    }

    /// Reads and compiles (or loads from the cache) a guest component.
    pub fn load(&mut self, path: &Path) -> anyhow::Result<Module> {
        Ok(self.server.runtime().load(path)?)
    }

    /// Instantiates a guest, runs its `init` and starts serving its
    /// listeners.
    pub fn add_guest(&mut self, spec: GuestSpec) -> anyhow::Result<()> {
        self.server.add_guest(self.event_loop.reactor(), spec)
    }

    /// Adds a native Rust handler beside the guests, with the same
    /// callbacks (see [`crate::native`]), and starts serving its listeners.
    pub fn add_native(&mut self, spec: NativeSpec) -> anyhow::Result<()> {
        self.server.add_native(self.event_loop.reactor(), spec)
    }

    /// Like [`Host::add_guest`], but a guest whose first start fails goes
    /// through its fault policy while the others serve (see
    /// [`Server::add_guest_or_apply_policy`]). Returns why the guest is
    /// down, or `None` if it started.
    pub fn add_guest_or_apply_policy(&mut self, spec: GuestSpec) -> anyhow::Result<Option<String>> {
        self.server.add_guest_or_apply_policy(self.event_loop.reactor(), spec)
    }

    /// Reloads each guest when its module file changes (`host run --watch`).
    pub fn watch_modules(&mut self) -> io::Result<()> {
        self.server.watch_modules(self.event_loop.reactor())
    }

    /// SIGINT/SIGTERM shut down gracefully, SIGHUP reloads (as `host run`).
    pub fn handle_signals(&mut self) -> io::Result<()> {
        self.server.handle_signals(self.event_loop.reactor())
    }

    pub fn handle(&self) -> HostHandle {
        HostHandle { inner: self.event_loop.handle() }
    }

    /// Runs until stopped ([`HostHandle::stop`], a graceful shutdown, or a
    /// guest whose fault policy is `exit`), in a current-thread tokio
    /// context for WASI (see [`crate::runtime::on_loop_thread`]).
    pub fn run(&mut self) -> anyhow::Result<()> {
        crate::runtime::on_loop_thread(|| self.run_in_context())?
    }

    /// [`Host::run`] for a caller that has entered the loop thread's tokio
    /// context already ([`crate::runtime::on_loop_thread`]), as the workers
    /// do around both starting their guests and serving.
    pub(crate) fn run_in_context(&mut self) -> anyhow::Result<()> {
        self.event_loop.run(&mut self.server).context("event loop failed")?;
        exit_result(&self.server)
    }

    /// One turn: wait at most `max_wait` (`Some(Duration::ZERO)`: not at
    /// all), then dispatch what is ready. For a foreign loop.
    pub fn run_once(&mut self, max_wait: Option<Duration>) -> io::Result<()> {
        self.event_loop.run_once(&mut self.server, max_wait)
    }

    /// How long a foreign loop may sleep before the next [`Host::run_once`]:
    /// `None` means until [`Host::backend_fd`] is readable.
    pub fn next_timeout(&mut self) -> Option<Duration> {
        self.event_loop.next_timeout()
    }

    /// The loop's epoll (kqueue) descriptor: readable when a turn has work.
    pub fn backend_fd(&self) -> BorrowedFd<'_> {
        self.event_loop.backend_fd()
    }

    /// Whether the loop was asked to stop.
    pub fn is_stopping(&mut self) -> bool {
        self.event_loop.reactor().is_stopping()
    }

    pub fn server(&mut self) -> &mut Server {
        &mut self.server
    }
}

/// What a stopped server's exit means: an error if a guest with
/// `on-fault = exit` asked for one.
pub(crate) fn exit_result(server: &Server) -> anyhow::Result<()> {
    match server.exit_reason() {
        Some(reason) => Err(anyhow::anyhow!("{reason}")),
        None => Ok(()),
    }
}
