//! The server: the reactor's [`Handler`]. It owns the listeners, routes every
//! event to a guest, and keeps one rule: a guest is only ever called from the
//! top of a loop phase, never from inside another guest call or from a host
//! import. Whatever a callback asks for (close, resume, notify) is settled
//! right after it returns, and any callback that this causes (`on-close`,
//! `on-writable`, reading resumed data) is queued for the deferred phase.
//!
//! Its state is in **parts**, files that never name [`Server`] (a test below
//! checks), so each reads alone:
//! - `routes.rs`: what a reactor token stands for;
//! - `slot.rs`: one guest, or one version of it: its instance, what
//!   restarts it, its loop timer, its share of the loop, its faults;
//! - `deferred.rs`: the deferred phase's work and queue;
//! - `listener.rs`, `signals.rs`, `watch.rs`: what else the loop watches
//!   (`activation.rs`: listening sockets handed over by a supervisor);
//! - `fairness.rs`, `faults.rs`, `policy.rs`: a guest's CPU share, its
//!   fault history, and what the operator chose.
//!
//! Its methods are the loop's **phases**, a file each, using the parts:
//! `accept.rs`, `read.rs`, `timers.rs`, `datagrams.rs`, `outbound.rs` and
//! `http.rs` turn events into calls; `admit.rs` asks the guest's share
//! first; `settle.rs` runs after every call; `on_fault.rs`, `reload.rs`
//! (with the `Reloader`'s state) and `shutdown.rs` are a guest's lifecycle
//! and the host's. This file builds the server (guests, listeners),
//! calls guests (`call`), and dispatches the reactor's events.

mod accept;
mod activation;
mod admit;
mod datagrams;
mod deferred;
mod fairness;
mod faults;
mod http;
mod listener;
mod on_fault;
mod outbound;
pub mod policy;
mod read;
mod reload;
mod routes;
mod settle;
mod shutdown;
mod signals;
mod slot;
mod timers;
mod watch;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use slotmap::SlotMap;
use tracing::{debug, error, info, warn};
use wasmloop_reactor::{Event, Expired, Handler, Interest, LoopHandle, Reactor, Turn};

use crate::grants::Grants;
use crate::limits::Limits;
use crate::metrics::{GuestMetrics, WorkerMetrics};
use crate::runtime::Handle;
use crate::runtime::native::HandlerFactory;
use crate::runtime::{
    ConnKey, Fault, Guest, GuestLimits, GuestSetup, Instance, ListenerGrant, Module, Runtime, listener_handle,
};
use policy::{FaultPolicy, Policy};
use wasmloop_io::{CloseReason, Connection};

pub use activation::{ListenFd, inherit_listeners};
use deferred::{Deferred, DeferredQueue};
use fairness::Gate;
use http::HttpScratch;
use listener::Listener;
pub use listener::{
    AdoptError, BindError, ListenerSpec, Protocol, accepted_on_this_thread, adopt_listener, bind, bind_group,
};
use read::READ_CHUNK;
use reload::Reloader;
use routes::{Route, Routes, token};
use signals::Signals;
pub use signals::hold_early_sighup;
use slot::{GuestKey, GuestSlot, Program};
pub use watch::check_watchable;

#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// How long a closing connection may take to send its buffered output.
    pub linger: Duration,
    /// How long shutdown waits for output to drain before closing the rest.
    pub shutdown_timeout: Duration,
    /// After a reload, how long the old version keeps its connections.
    pub drain_timeout: Duration,
    /// Where this loop's and its guests' metrics go (`--admin`); `None`
    /// records nothing.
    pub metrics: Option<Arc<WorkerMetrics>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            linger: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(30),
            metrics: None,
        }
    }
}

/// One guest as the operator describes it.
pub struct GuestSpec {
    pub name: String,
    pub module: Module,
    /// Its listeners; their handles are 1, 2, ... in this order. On one
    /// that speaks HTTP the guest gets requests (`http-callbacks`).
    pub listeners: Vec<ListenerSpec>,
    /// The string handed to the guest's `init`.
    pub config: String,
    pub limits: Limits,
    pub grants: Grants,
    pub policy: Policy,
}

/// A native Rust handler beside the guests (see [`crate::native`]).
pub struct NativeSpec {
    pub name: String,
    /// Raw TCP listeners; a handler's listener handles are 1, 2, ... in
    /// this order.
    pub listeners: Vec<std::net::TcpListener>,
    /// The connection, output and timer limits apply; the memory and
    /// deadline limits (wasm only) do not.
    pub limits: Limits,
    /// `on-fault` applies to panics; `reload` does not apply.
    pub policy: Policy,
    /// Makes the handler, and a fresh one after each restart.
    pub factory: HandlerFactory,
}

/// The reactor's handler: one per loop. Its state is in parts (each in
/// its own file, never naming `Server`); its methods are the loop's
/// phases, one file each, and use the parts.
pub struct Server {
    runtime: Runtime,
    config: ServerConfig,
    routes: Routes,
    guests: SlotMap<GuestKey, GuestSlot>,
    listeners: Vec<Listener>,
    signals: Option<Signals>,
    deferred: DeferredQueue,
    /// Times each callback for its guest's CPU share: the CPU's time-stamp
    /// counter read twice, scaled once (no thread-local or global lookup).
    clock: quanta::Clock,
    /// The one buffer every read and datagram goes into (read.rs).
    read_buf: Box<[u8]>,
    shutting_down: bool,
    /// Set when a guest's fault policy stops the host.
    exit_reason: Option<String>,
    reloader: Reloader,
    http_scratch: HttpScratch,
}

impl Server {
    pub fn new(runtime: Runtime, config: ServerConfig) -> Server {
        Server {
            runtime,
            config,
            routes: Routes::default(),
            guests: SlotMap::with_key(),
            listeners: Vec::new(),
            signals: None,
            deferred: DeferredQueue::default(),
            clock: quanta::Clock::new(),
            read_buf: vec![0; READ_CHUNK].into_boxed_slice(),
            shutting_down: false,
            exit_reason: None,
            reloader: Reloader::default(),
            http_scratch: HttpScratch::default(),
        }
    }

    /// Turns SIGINT and SIGTERM into a graceful shutdown on the loop.
    pub fn handle_signals(&mut self, reactor: &Reactor) -> io::Result<()> {
        let signals = Signals::install()?;
        reactor.add(&signals.stop, token(self.routes.insert(Route::Signals)), Interest::READABLE)?;
        reactor.add(&signals.reload, token(self.routes.insert(Route::ReloadSignal)), Interest::READABLE)?;
        self.signals = Some(signals);
        Ok(())
    }

    /// Starts a guest (instantiate + `init`) and starts accepting on its
    /// listeners. A guest that cannot start is an error.
    pub fn add_guest(&mut self, reactor: &mut Reactor, spec: GuestSpec) -> anyhow::Result<()> {
        match self.add_guest_with(reactor, spec, false)? {
            None => Ok(()),
            Some(reason) => Err(anyhow::anyhow!("{reason}")),
        }
    }

    /// Like [`Server::add_guest`], for a guest among others: if its first
    /// start fails (`init` traps, refuses or runs out of memory), that is
    /// logged as one error line naming it and its fault policy applies as
    /// to any fault (restart with backoff, then a crash loop; or stay
    /// stopped), while its listeners refuse connections until it is up. With
    /// `on-fault = exit` the failure is still an error. Returns why the
    /// guest is down, or `None` if it started.
    pub fn add_guest_or_apply_policy(
        &mut self,
        reactor: &mut Reactor,
        spec: GuestSpec,
    ) -> anyhow::Result<Option<String>> {
        self.add_guest_with(reactor, spec, true)
    }

    fn add_guest_with(
        &mut self,
        reactor: &mut Reactor,
        spec: GuestSpec,
        apply_policy: bool,
    ) -> anyhow::Result<Option<String>> {
        let listeners = spec
            .listeners
            .iter()
            .map(|l| Ok(ListenerGrant { address: l.socket.local_addr()?.to_string() }))
            .collect::<io::Result<Vec<_>>>()?;
        let limits = GuestLimits::from(&spec.limits);
        let setup = GuestSetup {
            metrics: self.guest_metrics(&spec.name, Some(&spec.module.version), limits.max_memory),
            name: spec.name.into(),
            listeners,
            config: spec.config,
            limits,
            grants: spec.grants,
        };
        let name = setup.name.clone();
        // The error is one line; a trap's wasm backtrace is logged at debug
        // level (`-v`).
        let started = Guest::start(&self.runtime, &spec.module, &setup).map_err(|fault| {
            let text = fault.to_string();
            let (line, backtrace) = text.split_once('\n').unwrap_or((&text, ""));
            if !backtrace.is_empty() {
                debug!(guest = &*name, callback = fault.callback, "{backtrace}");
            }
            (fault.kind, line.to_string())
        });
        let (guest, down) = match started {
            Ok(guest) => {
                if spec.listeners.iter().any(|l| l.protocol != Protocol::Tcp) && !guest.has_http() {
                    anyhow::bail!(
                        "guest `{name}` has HTTP listeners but does not export wasmloop:handler/http-callbacks \
                         (build it with a wasmloop SDK that has HTTP support)"
                    );
                }
                let module = &spec.module;
                info!(
                    guest = &*name,
                    "started version {} of {}: {}",
                    module.version,
                    module.path.display(),
                    module.origin
                );
                (Some(Instance::Wasm(guest)), None)
            }
            // Alone (or told to exit), a guest that cannot start is an
            // operator error: the host stops before it serves anything.
            Err((_, line)) if !apply_policy || spec.policy.on_fault == FaultPolicy::Exit => {
                anyhow::bail!("{line}")
            }
            Err((kind, line)) => {
                error!(guest = &*name, "{line}");
                if let Some(metrics) = &setup.metrics {
                    metrics.fault(kind);
                    metrics.set_running(None);
                }
                (None, Some(line))
            }
        };
        let g = self.insert_slot(guest, Program::Wasm(Box::new(spec.module)), setup, spec.policy);
        self.listen(reactor, g, &name, spec.listeners)?;
        match down {
            None => self.settle(reactor, g),
            Some(_) => self.apply_fault_policy(reactor, g),
        }
        Ok(down)
    }

    /// Makes a native handler (and runs its `init`), and starts accepting
    /// on its listeners. It is a guest to the server: its own handles,
    /// limits, timers and fault policy (a panic is its fault).
    pub fn add_native(&mut self, reactor: &mut Reactor, spec: NativeSpec) -> anyhow::Result<()> {
        let listeners = spec
            .listeners
            .iter()
            .map(|l| Ok(ListenerGrant { address: l.local_addr()?.to_string() }))
            .collect::<io::Result<Vec<_>>>()?;
        let setup = GuestSetup {
            metrics: self.guest_metrics(&spec.name, None, 0),
            name: spec.name.into(),
            listeners,
            config: String::new(),
            limits: GuestLimits::from(&spec.limits),
            grants: Grants::default(),
        };
        let name = setup.name.clone();
        let program = Program::Native(spec.factory);
        // As for a guest: one that cannot start is an operator error.
        let handler = program.start(&self.runtime, &setup).map_err(|fault| anyhow::anyhow!("{fault}"))?;
        info!(guest = &*name, "started native handler");
        let g = self.insert_slot(Some(handler), program, setup, spec.policy);
        let listeners = spec.listeners.into_iter().map(|socket| ListenerSpec { socket, protocol: Protocol::Tcp });
        self.listen(reactor, g, &name, listeners)?;
        self.settle(reactor, g);
        Ok(())
    }

    /// The metrics of guest `name` on this loop (if recording), marked up
    /// with `version` (`None`: a native handler).
    fn guest_metrics(&self, name: &str, version: Option<&str>, memory_limit: usize) -> Option<Arc<GuestMetrics>> {
        let metrics = self.config.metrics.as_ref()?.guest(name);
        metrics.set_running(Some(version.unwrap_or("native")));
        metrics.set_memory_limit(memory_limit);
        Some(metrics)
    }

    /// Watches a guest's listeners; their handles are 1, 2, ... in order.
    fn listen(
        &mut self,
        reactor: &mut Reactor,
        g: GuestKey,
        name: &str,
        listeners: impl IntoIterator<Item = ListenerSpec>,
    ) -> io::Result<()> {
        for (i, ListenerSpec { socket, protocol }) in listeners.into_iter().enumerate() {
            let index = self.listeners.len();
            let route = self.routes.insert(Route::Listener(index));
            let address: SocketAddr = socket.local_addr()?;
            reactor.add(&socket, token(route), Interest::READABLE)?;
            match protocol {
                Protocol::Tcp => info!(guest = name, "listening on {address}"),
                Protocol::Http => info!(guest = name, "listening on {address} (HTTP)"),
                Protocol::WebSocket => info!(guest = name, "listening on {address} (HTTP, WebSocket)"),
            }
            self.listeners.push(Listener::new(socket, g, listener_handle(i), route, protocol)?);
        }
        Ok(())
    }

    /// Adds an instance (`None`: one that could not start) with the routes
    /// its timers need.
    fn insert_slot(
        &mut self,
        guest: Option<Instance>,
        program: Program,
        setup: GuestSetup,
        policy: Policy,
    ) -> GuestKey {
        let routes = &mut self.routes;
        self.guests.insert_with_key(|g| GuestSlot::new(g, guest, program, setup, policy, routes))
    }

    /// The runtime guests are compiled and instantiated with.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Gives the server its loop's handle, so background work (compiling
    /// for a reload) can post results back.
    pub fn set_handle(&mut self, handle: LoopHandle<Server>) {
        self.reloader.handle = Some(handle);
    }

    // ---- Calling guests -------------------------------------------------

    /// Calls the guest `g` if it is alive; on a fault tears it down. After
    /// the call, settles what the guest asked for.
    fn call<R>(
        &mut self,
        reactor: &mut Reactor,
        g: GuestKey,
        f: impl FnOnce(&mut Instance) -> Result<R, Fault>,
    ) -> Option<R> {
        let clock = &self.clock;
        let slot = self.guests.get_mut(g)?;
        let guest = slot.guest.as_mut()?;
        let started = clock.raw();
        let result = f(guest);
        slot.charge(Duration::from_nanos(clock.delta_as_nanos(started, clock.raw())));
        match result {
            Ok(r) => {
                self.settle(reactor, g);
                Some(r)
            }
            Err(fault) => {
                self.tear_down(reactor, g, &fault);
                None
            }
        }
    }

    fn metrics_of(&self, g: GuestKey) -> Option<&GuestMetrics> {
        self.guests.get(g)?.metrics()
    }

    fn connection(&self, g: GuestKey, c: ConnKey) -> Option<&Connection> {
        self.guests.get(g)?.connection(c)
    }

    /// Why the host should exit with an error, if a guest asked for that
    /// (`on-fault = exit`).
    pub fn exit_reason(&self) -> Option<&str> {
        self.exit_reason.as_deref()
    }
}

impl Handler for Server {
    fn io(&mut self, reactor: &mut Reactor, event: Event) {
        let Some(route) = self.routes.get(event.token) else {
            return;
        };
        match route {
            Route::Listener(index) => {
                // Accepting already waits for the guest's share.
                if !self.listeners.get(index).is_some_and(|l| l.accept_postponed) {
                    self.accept(reactor, index);
                }
            }
            Route::Connection(g, c) => {
                if self.is_connecting(g, c) {
                    return self.connect_ready(reactor, g, c);
                }
                if event.writable {
                    self.settle_connection(reactor, g, c);
                }
                // A read waiting for the guest's share will read this too.
                if event.readable && !self.connection(g, c).is_some_and(|conn| conn.read_postponed.get()) {
                    self.read(reactor, g, c, event.closed);
                }
            }
            Route::Signals => {
                if self.signals.as_ref().is_some_and(|s| signals::drain(&s.stop)) {
                    self.begin_shutdown(reactor);
                }
            }
            Route::Watch => self.module_files_changed(reactor),
            Route::ReloadSignal => {
                if self.signals.as_ref().is_some_and(|s| signals::drain(&s.reload)) {
                    info!("SIGHUP: reloading every guest from disk");
                    self.reload(None);
                }
            }
            Route::Datagram(g, k) => {
                let postponed = self.guests.get(g).and_then(|s| s.state()?.udp.get(k));
                if !postponed.is_some_and(|socket| socket.postponed.get()) {
                    self.receive_datagrams(reactor, g, k);
                }
            }
            Route::GuestTimers(_)
            | Route::HttpTimer(..)
            | Route::Restart(_)
            | Route::Release(_)
            | Route::DrainDeadline(_)
            | Route::WatchQuiet
            | Route::ShutdownDeadline => {}
        }
    }

    fn timer(&mut self, reactor: &mut Reactor, expired: Expired) {
        let Some(route) = self.routes.get(expired.token) else {
            return;
        };
        match route {
            Route::GuestTimers(g) => self.fire_guest_timers(reactor, g),
            // The connect timeout of a connecting connection, or the linger
            // time of a closing one ran out.
            Route::Connection(g, c) => {
                if self.connect_timed_out(reactor, g, c) {
                    return;
                }
                debug!("linger timeout: resetting a connection that would not drain");
                let reason = self.connection(g, c).and_then(|conn| conn.closing.borrow().clone());
                self.finish(reactor, g, c, reason.unwrap_or(CloseReason::Local), true);
            }
            Route::Listener(index) => self.accept(reactor, index),
            Route::HttpTimer(g, c) => self.http_timer(reactor, g, c),
            Route::Restart(g) => self.restart(reactor, g),
            Route::Release(g) => self.release(reactor, g),
            Route::DrainDeadline(g) => self.drain_deadline(reactor, g),
            Route::WatchQuiet => self.reload_changed(),
            Route::ShutdownDeadline => {
                warn!("shutdown timeout: closing connections that did not drain");
                self.abort_all(reactor);
            }
            Route::Signals | Route::ReloadSignal | Route::Watch | Route::Datagram(..) => {}
        }
    }

    /// The loop may block: the epoch ticker need not run while it does.
    fn prepare(&mut self, _reactor: &mut Reactor) {
        self.runtime.idle();
    }

    /// With `--admin` only: the turn, and what is cheaper to count once
    /// per turn than to track at every change (open connections, timers).
    fn turned(&mut self, reactor: &mut Reactor, turn: Turn) {
        let Some(metrics) = &self.config.metrics else { return };
        let mut timers = reactor.timer_count();
        let open = |slot: &GuestSlot| slot.guest.as_ref().map_or(0, |g| g.state().connections.len()) as u64;
        let input = |slot: &GuestSlot| slot.guest.as_ref().map_or(0, |g| g.state().input.get()) as u64;
        // Every version of a guest shares its metrics: the current one
        // sets the count, old ones draining after a reload add theirs.
        for slot in self.guests.values() {
            timers += slot.guest.as_ref().map_or(0, |g| g.state().timers.len());
            if let (Some(m), None) = (&slot.setup.metrics, slot.draining) {
                m.connections_open.set(open(slot));
                m.input_bytes.set(input(slot));
            }
        }
        for slot in self.guests.values().filter(|s| s.draining.is_some()) {
            if let Some(m) = &slot.setup.metrics {
                m.connections_open.add(open(slot));
                m.input_bytes.add(input(slot));
            }
        }
        metrics.turns.turn(turn.events, turn.waited, turn.busy, timers);
    }

    fn deferred(&mut self, reactor: &mut Reactor) {
        // Only the work queued so far: what this work queues waits for the
        // next turn, so IO and timers are not starved.
        self.deferred.running = true;
        for _ in 0..self.deferred.len() {
            let Some((work, postponed)) = self.deferred.pop() else {
                break;
            };
            if let Some(slot) = postponed.and_then(|g| self.guests.get_mut(g)) {
                slot.waiting -= 1;
            }
            // A callback waits for its guest's share of the loop; the
            // reading, accepting and timer work checks for itself, as it
            // goes.
            if let Some(g) = work.guest_calling() {
                let gate = self.gate(reactor, g);
                if gate != Gate::Open {
                    self.postpone(reactor, g, gate, work);
                    continue;
                }
            }
            self.mark_postponed(&work, false);
            match work {
                Deferred::Read(g, c) => self.read(reactor, g, c, true),
                Deferred::Writable(g, c) => {
                    if self.connection(g, c).is_some() {
                        self.call(reactor, g, |guest| guest.on_writable(c.handle()));
                    }
                }
                Deferred::Closed(g, handle, reason) => {
                    self.call(reactor, g, |guest| guest.on_close(handle, &reason));
                    self.retire_if_drained(reactor, g);
                }
                Deferred::Accept(index) => self.accept(reactor, index),
                Deferred::Timers(g) => self.fire_guest_timers(reactor, g),
                Deferred::Connected(g, c, outcome) => self.deliver_connect(reactor, g, c, outcome),
                Deferred::Datagrams(g, k) => self.receive_datagrams(reactor, g, k),
                Deferred::ResponseWritable(g, c, req) => {
                    if self.connection(g, c).is_some() {
                        self.call(reactor, g, |guest| guest.on_response_writable(req));
                    }
                }
                Deferred::WebSocketWritable(g, c, ws) => {
                    if self.connection(g, c).is_some() {
                        self.call(reactor, g, |guest| guest.on_websocket_writable(ws));
                    }
                }
                Deferred::RequestClosed(g, req) => {
                    self.call(reactor, g, |guest| guest.on_request_closed(req));
                    self.retire_if_drained(reactor, g);
                }
                Deferred::WebSocketClosed(g, ws, code, reason) => {
                    self.call(reactor, g, |guest| guest.on_websocket_close(ws, code, &reason));
                    self.retire_if_drained(reactor, g);
                }
            }
        }
        self.deferred.running = false;
        if !self.deferred.is_empty() {
            reactor.defer();
        }
        self.stop_if_done(reactor);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Files that hold a part of the server's state and never name
    /// `Server`: a part can be read, and changed, without the whole.
    const PARTS: &[&str] = &[
        "activation.rs",
        "deferred.rs",
        "fairness.rs",
        "faults.rs",
        "listener.rs",
        "policy.rs",
        "routes.rs",
        "signals.rs",
        "slot.rs",
        "watch.rs",
    ];

    /// Files whose methods are the loop's phases (`impl Server`).
    const PHASES: &[&str] = &[
        "accept.rs",
        "admit.rs",
        "datagrams.rs",
        "http.rs",
        "mod.rs",
        "on_fault.rs",
        "outbound.rs",
        "read.rs",
        "reload.rs",
        "settle.rs",
        "shutdown.rs",
        "timers.rs",
    ];

    /// Whether a line names `Server` outside a comment (`ServerConfig`
    /// and the like are other names).
    fn names_server(line: &str) -> bool {
        let code = line.split("//").next().unwrap_or("");
        code.split(|c: char| !c.is_ascii_alphanumeric() && c != '_').any(|word| word == "Server")
    }

    #[test]
    fn every_file_is_a_part_or_a_phase_and_no_part_names_the_server() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/server");
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("src/server is readable") {
            let name = entry.expect("a directory entry").file_name().into_string().expect("a UTF-8 name");
            if name.ends_with(".rs") {
                files.push(name);
            }
        }
        files.sort();
        let mut listed: Vec<&str> = PARTS.iter().chain(PHASES).copied().collect();
        listed.sort();
        assert_eq!(files, listed, "each file in src/server is in PARTS or in PHASES, once");
        let mut wrong = Vec::new();
        for part in PARTS {
            let source = std::fs::read_to_string(dir.join(part)).expect("a source file");
            for (n, line) in source.lines().enumerate() {
                if names_server(line) {
                    wrong.push(format!("{part}:{}: {}", n + 1, line.trim()));
                }
            }
        }
        assert!(wrong.is_empty(), "parts that name the server:\n{}", wrong.join("\n"));
        assert!(names_server("impl Server {") && !names_server("let c: ServerConfig; // Server"));
    }
}
