//! The server: the reactor's [`Handler`]. It owns the listeners, routes every
//! event to a guest, and keeps one rule: a guest is only ever called from the
//! top of a loop phase, never from inside another guest call or from a host
//! import. Whatever a callback asks for (close, resume, notify) is settled
//! right after it returns, and any callback that this causes (`on-close`,
//! `on-writable`, reading resumed data) is queued for the deferred phase.

mod activation;
mod datagrams;
mod fairness;
mod faults;
mod http;
mod listener;
mod outbound;
pub mod policy;
mod reload;
mod signals;
mod watch;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use slotmap::{Key, KeyData, SlotMap, new_key_type};
use tracing::{debug, error, info, warn};
use wasmloop_reactor::{Event, Expired, Handler, Interest, LoopHandle, Reactor, TimerId, Token, Turn};

use crate::grants::Grants;
use crate::limits::Limits;
use crate::metrics::{GuestMetrics, WorkerMetrics};
use crate::runtime::Handle;
use crate::runtime::bindings::{ConnectError, EofAction};
use crate::runtime::native::{HandlerFactory, NativeGuest};
use crate::runtime::{
    ConnKey, Fault, Guest, GuestLimits, GuestSetup, Instance, ListenerGrant, Module, Runtime, UdpKey, listener_handle,
};
use policy::{FaultPolicy, Policy};
use wasmloop_io::{CloseReason, Connection, Settled, UNREGISTERED, close_reason};

pub use activation::{ListenFd, inherit_listeners};
use fairness::{CpuLimits, CpuShare, Gate};
use faults::{FaultHistory, Next};
use listener::{Accepted, Listener};
pub use listener::{
    AdoptError, BindError, ListenerSpec, Protocol, accepted_on_this_thread, adopt_listener, bind, bind_group,
};
use signals::Signals;
pub use signals::hold_early_sighup;
pub use watch::check_watchable;

/// Bytes read per `read` call and per `on-data`.
pub(crate) const READ_CHUNK: usize = 64 * 1024;
/// Reads per connection per wakeup, so one busy peer cannot starve others.
const READS_PER_WAKEUP: usize = 4;
/// Connections accepted per listener per wakeup.
const ACCEPTS_PER_WAKEUP: usize = 64;
/// Pause before retrying accept when out of descriptors.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

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

new_key_type! {
    struct RouteKey;
    struct GuestKey;
}

/// What a reactor token (or timer token) stands for.
#[derive(Clone, Copy)]
enum Route {
    Listener(usize),
    Connection(GuestKey, ConnKey),
    /// The protocol timer of an HTTP connection (http.rs).
    HttpTimer(GuestKey, ConnKey),
    /// A guest's UDP socket (datagrams.rs).
    Datagram(GuestKey, UdpKey),
    GuestTimers(GuestKey),
    /// The backoff before restarting a faulted guest.
    Restart(GuestKey),
    /// The drain deadline of an old version after a reload.
    DrainDeadline(GuestKey),
    /// The end of a guest's CPU throttle (fairness.rs).
    Release(GuestKey),
    Signals,
    ReloadSignal,
    /// Module files changed (`--watch`), and the debounce timer.
    Watch,
    WatchQuiet,
    ShutdownDeadline,
}

/// Callbacks queued for the deferred phase.
enum Deferred {
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
    fn guest_calling(&self) -> Option<GuestKey> {
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

/// What a guest slot runs, and what restarting it needs.
enum Program {
    /// Boxed: a `Module` is large, and rarely used (restart, reload).
    Wasm(Box<Module>),
    Native(HandlerFactory),
}

impl Program {
    /// A fresh instance (or handler), `init`ed.
    fn start(&self, runtime: &Runtime, setup: &GuestSetup) -> Result<Instance, Fault> {
        match self {
            Program::Wasm(module) => Guest::start(runtime, module, setup).map(Instance::Wasm),
            Program::Native(factory) => NativeGuest::start(factory, setup).map(|n| Instance::Native(Box::new(n))),
        }
    }

    /// The module of a wasm guest; native handlers have none (and are not
    /// reloaded).
    fn module(&self) -> Option<&Module> {
        match self {
            Program::Wasm(module) => Some(module),
            Program::Native(_) => None,
        }
    }

    /// The version, for the log.
    fn version(&self) -> &str {
        self.module().map_or("native", |m| &m.version)
    }
}

struct GuestSlot {
    /// `None` while the guest is down (faulted, waiting to restart, or
    /// stopped).
    guest: Option<Instance>,
    /// What restarting it needs.
    program: Program,
    setup: GuestSetup,
    policy: Policy,
    faults: FaultHistory,
    timer_route: RouteKey,
    restart_route: RouteKey,
    drain_route: RouteKey,
    /// Set on an old version after a reload: it keeps its connections until
    /// they close or this deadline passes, and gets no new ones.
    draining: Option<Instant>,
    /// The loop timer armed at the guest's earliest timer deadline.
    armed: Option<(TimerId, Instant)>,
    /// When the connection limit was last reported (rate-limits the log).
    refused_warning: Option<Instant>,
    /// Its share of the loop (fairness.rs).
    cpu: CpuShare,
    /// Events held while it is over its CPU budget, released by the timer
    /// on `release_route`.
    held: Vec<Deferred>,
    release_route: RouteKey,
    /// When the current throttle began, for the metrics.
    throttled_at: Option<Instant>,
    /// Its postponed work in the deferred queue (see `Server::gate`).
    waiting: usize,
}

pub struct Server {
    runtime: Runtime,
    config: ServerConfig,
    routes: SlotMap<RouteKey, Route>,
    guests: SlotMap<GuestKey, GuestSlot>,
    listeners: Vec<Listener>,
    signals: Option<Signals>,
    /// Work for the deferred phase; `Some(guest)` marks work postponed for
    /// that guest's share of the loop (counted in its `waiting`).
    deferred: VecDeque<(Deferred, Option<GuestKey>)>,
    /// The deferred phase is running (fresh events are not: see `gate`).
    in_deferred: bool,
    /// Times each callback for its guest's CPU share: the CPU's time-stamp
    /// counter read twice, scaled once (no thread-local or global lookup).
    clock: quanta::Clock,
    read_buf: Box<[u8]>,
    shutting_down: bool,
    /// Set when a guest's fault policy stops the host.
    exit_reason: Option<String>,
    /// For background work to post results back (reload).
    handle: Option<LoopHandle<Server>>,
    /// The latest reload request per guest name, so an older compile that
    /// finishes late is not swapped in over a newer one.
    reload_requests: HashMap<String, u64>,
    /// `--watch`: module files to reload when they change.
    watcher: Option<watch::Watcher>,
    /// Guests whose module changed, waiting for the file to go quiet.
    changed: Vec<String>,
    watch_quiet: Option<TimerId>,
    watch_route: Option<RouteKey>,
    /// HTTP request parsing, shared by all connections (http.rs); keyed by
    /// the limits it was made with.
    head_parser: Option<((usize, usize, u64), wasmloop_http::h1::HeadParser)>,
    /// The header list handed to `on-request`, kept for its capacity.
    header_list: Vec<(&'static str, &'static str)>,
    /// The buffer a WebSocket message is handed to the guest in, kept.
    message_buf: Vec<u8>,
}

fn token(key: RouteKey) -> Token {
    Token(key.data().as_ffi())
}

/// Stops watching a connection's socket and drops its route. Call before
/// the socket closes: a closed descriptor number can be reused at once, and
/// epoll would keep watching the old file.
fn unwatch(reactor: &Reactor, routes: &mut SlotMap<RouteKey, Route>, conn: &Connection) {
    if conn.token != UNREGISTERED {
        let _ = reactor.delete(&conn.transport);
        routes.remove(route_key(Token(conn.token)));
    }
    if let Some(http) = &conn.http {
        routes.remove(route_key(Token(http.timer.get())));
    }
}

/// A guest's CPU limits, as fairness.rs takes them.
fn cpu_limits(limits: &GuestLimits) -> CpuLimits {
    CpuLimits {
        budget: limits.cpu_budget,
        overrun: limits.cpu_overrun,
        callbacks_per_turn: limits.max_callbacks_per_turn,
    }
}

fn route_key(token: Token) -> RouteKey {
    KeyData::from_ffi(token.0).into()
}

impl Server {
    pub fn new(runtime: Runtime, config: ServerConfig) -> Server {
        Server {
            runtime,
            config,
            routes: SlotMap::with_key(),
            guests: SlotMap::with_key(),
            listeners: Vec::new(),
            signals: None,
            deferred: VecDeque::new(),
            in_deferred: false,
            clock: quanta::Clock::new(),
            read_buf: vec![0; READ_CHUNK].into_boxed_slice(),
            shutting_down: false,
            exit_reason: None,
            handle: None,
            reload_requests: HashMap::new(),
            watcher: None,
            changed: Vec::new(),
            watch_quiet: None,
            watch_route: None,
            head_parser: None,
            header_list: Vec::new(),
            message_buf: Vec::new(),
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
        self.guests.insert_with_key(|g| {
            let [timer_route, restart_route, drain_route, release_route] = reload::slot_routes(routes, g);
            GuestSlot {
                cpu: CpuShare::new(cpu_limits(&setup.limits), Instant::now()),
                held: Vec::new(),
                release_route,
                throttled_at: None,
                waiting: 0,
                guest,
                program,
                setup,
                policy,
                faults: FaultHistory::default(),
                timer_route,
                restart_route,
                drain_route,
                armed: None,
                refused_warning: None,
                draining: None,
            }
        })
    }

    /// The runtime guests are compiled and instantiated with.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Gives the server its loop's handle, so background work (compiling
    /// for a reload) can post results back.
    pub fn set_handle(&mut self, handle: LoopHandle<Server>) {
        self.handle = Some(handle);
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
        slot.cpu.charge(Duration::from_nanos(clock.delta_as_nanos(started, clock.raw())));
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

    /// After a callback: act on the connections it touched and re-arm the
    /// guest's timer at its earliest deadline.
    fn settle(&mut self, reactor: &mut Reactor, g: GuestKey) {
        let Some(guest) = self.guests.get(g).and_then(|s| s.guest.as_ref()) else {
            return;
        };
        // Settling makes syscalls only, never calls the guest, so nothing is
        // added to the list meanwhile; it goes back empty, capacity kept.
        let mut dirty = guest.state().dirty.take();
        for &c in &dirty {
            self.settle_connection(reactor, g, c);
        }
        dirty.clear();
        self.settle_datagrams(reactor, g);
        let Some(slot) = self.guests.get_mut(g) else {
            return;
        };
        let Some(guest) = slot.guest.as_mut() else {
            return;
        };
        guest.state().dirty.replace(dirty);
        let next = guest.state_mut().timers.next_deadline();
        if slot.armed.map(|(_, at)| at) != next {
            if let Some((id, _)) = slot.armed.take() {
                reactor.cancel_timer(id);
            }
            if let Some(at) = next {
                slot.armed = Some((reactor.set_deadline(at, token(slot.timer_route)), at));
            }
        }
    }

    /// Brings one connection's socket in line with its state: flush, FIN,
    /// close, or queue the callbacks the guest asked for.
    fn settle_connection(&mut self, reactor: &mut Reactor, g: GuestKey, c: ConnKey) {
        // A connect the guest just started: watch it first (outbound.rs).
        if self.connection(g, c).is_some_and(|conn| conn.token == UNREGISTERED)
            && !self.register_outbound(reactor, g, c)
        {
            return;
        }
        if self.connection(g, c).is_some_and(|conn| conn.http.is_some()) {
            self.http_settle(reactor, g, c);
        }
        let Some(state) = self.guests.get(g).and_then(|s| s.guest.as_ref()).map(|g| g.state()) else { return };
        let Some(conn) = state.connections.get(c) else { return };
        let next = conn.settle(&state.output);
        let token = Token(conn.token);
        match next {
            Settled::Finish(reason, reset) => self.finish(reactor, g, c, reason, reset),
            Settled::Draining { arm_linger } => {
                if arm_linger {
                    reactor.set_timeout(self.config.linger, token);
                }
            }
            Settled::Open { writable, read } => {
                if writable {
                    self.defer(reactor, Deferred::Writable(g, c));
                }
                if read {
                    self.defer(reactor, Deferred::Read(g, c));
                }
            }
        }
    }

    fn metrics_of(&self, g: GuestKey) -> Option<&GuestMetrics> {
        self.guests.get(g)?.setup.metrics.as_deref()
    }

    fn connection(&self, g: GuestKey, c: ConnKey) -> Option<&Connection> {
        self.guests.get(g)?.guest.as_ref()?.state().connections.get(c)
    }

    fn defer(&mut self, reactor: &mut Reactor, work: Deferred) {
        self.deferred.push_back((work, None));
        reactor.defer();
    }

    /// Removes a connection: deregister, close, and queue `on-close`.
    fn finish(&mut self, reactor: &mut Reactor, g: GuestKey, c: ConnKey, reason: CloseReason, reset: bool) {
        let Some(guest) = self.guests.get_mut(g).and_then(|s| s.guest.as_mut()) else {
            return;
        };
        let Some(conn) = guest.state_mut().connections.remove(c) else {
            return;
        };
        guest.state().output.release(conn.buffered());
        unwatch(reactor, &mut self.routes, &conn);
        if reset {
            conn.set_reset_on_close();
        }
        if conn.http.is_some() {
            // The guest knows the request or WebSocket, not the connection.
            return self.http_closed(reactor, g, &conn);
        }
        drop(conn);
        self.defer(reactor, Deferred::Closed(g, c.handle(), reason));
    }

    /// A guest faulted: log it, close its connections, drop its instance,
    /// then apply its fault policy.
    fn tear_down(&mut self, reactor: &mut Reactor, g: GuestKey, fault: &Fault) {
        let Some(slot) = self.guests.get_mut(g) else { return };
        let Some(mut guest) = slot.guest.take() else { return };
        if let Some((id, _)) = slot.armed.take() {
            reactor.cancel_timer(id);
        }
        // What it held dies with it; a restart starts with a fresh share.
        slot.held.clear();
        slot.throttled_at = None;
        slot.cpu = CpuShare::new(cpu_limits(&slot.setup.limits), Instant::now());
        let connections = guest.state().connections.len();
        error!(
            guest = &*slot.setup.name,
            version = slot.program.version(),
            callback = fault.callback,
            kind = fault.kind.name(),
            connections,
            "{fault}"
        );
        if let Some(metrics) = &slot.setup.metrics {
            metrics.fault(fault.kind);
            if slot.draining.is_none() {
                metrics.set_running(None);
            }
        }
        outbound::cancel_connect_timers(reactor, guest.state());
        for (_, conn) in guest.state_mut().connections.drain() {
            unwatch(reactor, &mut self.routes, &conn);
            // A reset tells the peer the connection died, not that it ended.
            conn.set_reset_on_close();
        }
        datagrams::close_all(reactor, &mut self.routes, guest.state_mut());
        drop(guest);
        self.apply_fault_policy(reactor, g);
    }

    /// Restart after a backoff (or stop in a crash loop), stay stopped, or
    /// stop the host.
    fn apply_fault_policy(&mut self, reactor: &mut Reactor, g: GuestKey) {
        let Some(slot) = self.guests.get_mut(g) else { return };
        if slot.draining.is_some() {
            // An old version after a reload: nothing to restart.
            return self.retire_if_drained(reactor, g);
        }
        let name = slot.setup.name.clone();
        match slot.policy.on_fault {
            FaultPolicy::Restart => match slot.faults.record(Instant::now()) {
                Next::RestartAfter(delay) => {
                    warn!(guest = &*name, "restarting in {delay:?}");
                    reactor.set_timeout(delay, token(slot.restart_route));
                }
                Next::CrashLoop => error!(
                    guest = &*name,
                    "crash loop: {} faults within {:?}; the guest stays stopped",
                    slot.faults.count(),
                    faults::CRASH_WINDOW
                ),
            },
            FaultPolicy::Stop => warn!(guest = &*name, "the guest stays stopped (on-fault = stop)"),
            FaultPolicy::Exit => {
                self.exit_reason = Some(format!("guest `{name}` faulted and on-fault = exit"));
                reactor.stop();
            }
        }
        self.stop_if_done(reactor);
    }

    /// The backoff after a fault ran out: start a fresh instance. A failed
    /// start counts as a fault, so a guest whose `init` keeps trapping ends
    /// in a crash loop.
    fn restart(&mut self, reactor: &mut Reactor, g: GuestKey) {
        let Some(slot) = self.guests.get_mut(g) else { return };
        if slot.guest.is_some() || self.shutting_down {
            return;
        }
        match slot.program.start(&self.runtime, &slot.setup) {
            Ok(guest) => {
                info!(guest = &*slot.setup.name, version = slot.program.version(), "restarted");
                if let Some(metrics) = &slot.setup.metrics {
                    metrics.restarts.inc();
                    metrics.set_running(Some(slot.program.version()));
                }
                slot.guest = Some(guest);
                self.settle(reactor, g);
            }
            Err(fault) => {
                error!(guest = &*slot.setup.name, callback = fault.callback, "{fault}");
                if let Some(metrics) = &slot.setup.metrics {
                    metrics.fault(fault.kind);
                }
                self.apply_fault_policy(reactor, g);
            }
        }
    }

    /// Why the host should exit with an error, if a guest asked for that
    /// (`on-fault = exit`).
    pub fn exit_reason(&self) -> Option<&str> {
        self.exit_reason.as_deref()
    }

    // ---- Fairness (fairness.rs) -------------------------------------------

    /// Whether guest `g` may run a callback now. A fresh event (not from
    /// the deferred phase) of a guest with postponed work waiting goes
    /// behind that work, so the guest's events run in the order they came.
    fn gate(&mut self, reactor: &Reactor, g: GuestKey) -> Gate {
        match self.guests.get_mut(g) {
            Some(slot) if slot.guest.is_some() => match slot.cpu.gate(reactor.now()) {
                Gate::Open if slot.waiting > 0 && !self.in_deferred => Gate::NextTurn,
                gate => gate,
            },
            // Nothing to run: the work finds out for itself.
            _ => Gate::Open,
        }
    }

    /// [`Server::gate`], postponing `work` if the gate is not open.
    fn admit(&mut self, reactor: &mut Reactor, g: GuestKey, work: Deferred) -> bool {
        let gate = self.gate(reactor, g);
        if gate == Gate::Open {
            return true;
        }
        self.postpone(reactor, g, gate, work);
        false
    }

    /// `work` of guest `g` waits: for the next turn, or until the guest's
    /// throttle ends. A lasting overrun is the guest's fault.
    fn postpone(&mut self, reactor: &mut Reactor, g: GuestKey, gate: Gate, work: Deferred) {
        if gate != Gate::Open && !matches!(gate, Gate::Overrun(_)) && self.mark_postponed(&work, true) {
            return;
        }
        let Some(slot) = self.guests.get_mut(g) else { return };
        match gate {
            Gate::Open => {}
            Gate::NextTurn => {
                if let Some(metrics) = &slot.setup.metrics {
                    metrics.deferred.inc();
                }
                slot.waiting += 1;
                self.deferred.push_back((work, Some(g)));
                reactor.defer();
            }
            Gate::Throttled(until) => {
                if slot.held.is_empty() {
                    reactor.set_deadline(until, token(slot.release_route));
                    if slot.throttled_at.is_none() {
                        slot.throttled_at = Some(reactor.now());
                        if let Some(metrics) = &slot.setup.metrics {
                            metrics.throttled.inc();
                        }
                        debug!(guest = &*slot.setup.name, "over its CPU budget: holding its events until {until:?}");
                    }
                }
                if let Some(metrics) = &slot.setup.metrics {
                    metrics.deferred.inc();
                }
                // The guest's due timers are one piece of work, however often
                // its loop timer fires while it is held.
                if !matches!(work, Deferred::Timers(_)) || !slot.held.iter().any(|w| matches!(w, Deferred::Timers(_))) {
                    slot.held.push(work);
                }
            }
            Gate::Overrun(over) => {
                let budget = slot.setup.limits.cpu_budget;
                let fault = Fault {
                    guest: slot.setup.name.clone(),
                    callback: "its callbacks",
                    what: "exceeded its CPU budget",
                    detail: format!(
                        "over {budget:?} of callback time per second for {over:?} (--cpu-budget-ms, --cpu-overrun-ms)"
                    ),
                    kind: crate::metrics::FaultKind::CpuBudget,
                };
                self.tear_down(reactor, g, &fault);
            }
        }
    }

    /// Marks the socket behind `work` as waiting (or, when its work runs,
    /// no longer waiting) for its guest's share; returns whether it was.
    /// While it waits its work is queued once, however many events its
    /// peer causes meanwhile.
    fn mark_postponed(&mut self, work: &Deferred, postponed: bool) -> bool {
        match *work {
            Deferred::Read(g, c) => self.connection(g, c).is_some_and(|conn| conn.read_postponed.replace(postponed)),
            Deferred::Accept(index) => {
                self.listeners.get_mut(index).is_some_and(|l| std::mem::replace(&mut l.accept_postponed, postponed))
            }
            Deferred::Datagrams(g, k) => self
                .guests
                .get(g)
                .and_then(|s| s.guest.as_ref())
                .and_then(|i| i.state().udp.get(k))
                .is_some_and(|socket| socket.postponed.replace(postponed)),
            _ => false,
        }
    }

    /// A guest's throttle ended: what it was holding runs in this turn's
    /// deferred phase, in order.
    fn release(&mut self, reactor: &mut Reactor, g: GuestKey) {
        let Some(slot) = self.guests.get_mut(g) else { return };
        if let Some(until) = slot.cpu.throttled().filter(|&until| until > reactor.now()) {
            // Throttled again meanwhile (its bucket was still short when
            // its own events ran first in this turn): wait on.
            reactor.set_deadline(until, token(slot.release_route));
            return;
        }
        if let (Some(since), Some(metrics)) = (slot.throttled_at.take(), &slot.setup.metrics) {
            metrics.throttled_ns.add(reactor.now().saturating_duration_since(since).as_nanos() as u64);
        }
        let held = std::mem::take(&mut slot.held);
        if !held.is_empty() {
            self.deferred.extend(held.into_iter().map(|work| (work, None)));
            reactor.defer();
        }
    }

    // ---- IO ---------------------------------------------------------------

    fn accept(&mut self, reactor: &mut Reactor, index: usize) {
        for _ in 0..ACCEPTS_PER_WAKEUP {
            // Accepting calls the guest: wait for its share of the loop
            // (the rest stay in the kernel's backlog meanwhile).
            let Some(g) = self.listeners.get(index).map(|l| l.guest) else { return };
            if !self.admit(reactor, g, Deferred::Accept(index)) {
                return;
            }
            let Some(listener) = self.listeners.get_mut(index) else {
                return;
            };
            match listener.accept() {
                Accepted::Stream(stream) => self.adopt(reactor, index, stream),
                Accepted::Drained => return,
                Accepted::RetryLater => {
                    let route = listener.route;
                    reactor.set_timeout(ACCEPT_RETRY, token(route));
                    return;
                }
            }
        }
        self.defer(reactor, Deferred::Accept(index));
    }

    fn adopt(&mut self, reactor: &mut Reactor, index: usize, stream: TcpStream) {
        let listener = &self.listeners[index];
        let (g, handle) = (listener.guest, listener.handle);
        let Some(slot) = self.guests.get_mut(g) else { return };
        let Some(guest) = slot.guest.as_mut() else {
            debug!(guest = &*slot.setup.name, "refusing a connection: the guest is down");
            if let Some(metrics) = &slot.setup.metrics {
                metrics.refused.inc();
            }
            return;
        };
        let limit = guest.state().limits.max_connections;
        if guest.state().connections.len() >= limit {
            if let Some(metrics) = &slot.setup.metrics {
                metrics.refused.inc();
            }
            // Accepted and closed at once: the peer learns now, instead of
            // waiting in the backlog for a slot.
            let now = Instant::now();
            if slot.refused_warning.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
                slot.refused_warning = Some(now);
                warn!(guest = &*slot.setup.name, "at its connection limit ({limit}): refusing connections");
            }
            return;
        }
        if let Some(metrics) = &slot.setup.metrics {
            metrics.accepted.inc();
        }
        // Small messages go out at once (no Nagle delay).
        let _ = stream.set_nodelay(true);
        let max_output = guest.state().limits.max_output;
        let routes = &mut self.routes;
        let connections = &mut guest.state_mut().connections;
        let c = connections.insert_with_key(|c| {
            let route = routes.insert(Route::Connection(g, c));
            Connection::new(stream, token(route).0, max_output)
        });
        let conn = &connections[c];
        if let Err(e) = reactor.add(&conn.transport, Token(conn.token), Interest::BOTH) {
            warn!("cannot watch an accepted connection: {e}");
            routes.remove(route_key(Token(conn.token)));
            connections.remove(c);
            return;
        }
        match self.listeners[index].protocol {
            Protocol::Tcp => {
                self.call(reactor, g, |guest| guest.on_accept(handle, c.handle()));
            }
            Protocol::Http => self.adopt_http(reactor, g, c, false),
            Protocol::WebSocket => self.adopt_http(reactor, g, c, true),
        }
    }

    /// Reads up to the per-wakeup budget and hands each chunk to the guest.
    ///
    /// A short read normally means the socket is drained, and saves the
    /// `EAGAIN` read: new bytes raise a new edge. Not when `drain` is set:
    /// the peer's FIN is already queued (no edge will follow it), or an edge
    /// was consumed while reading was paused. Then read until `EAGAIN`.
    fn read(&mut self, reactor: &mut Reactor, g: GuestKey, c: ConnKey, drain: bool) {
        let http = self.connection(g, c).and_then(|conn| conn.http.as_deref());
        if http.is_some_and(|h| !h.input.borrow().is_empty()) {
            // Pipelined input left from before comes first.
            self.http_input(reactor, g, c, &mut []);
        }
        let http = self.connection(g, c).is_some_and(|conn| conn.http.is_some());
        let mut buf = std::mem::take(&mut self.read_buf);
        let mut budget_left = true;
        for round in 0..=READS_PER_WAKEUP {
            if round == READS_PER_WAKEUP {
                budget_left = false;
                break;
            }
            let Some(conn) = self.connection(g, c) else {
                break;
            };
            if conn.paused.get() || conn.eof.get() || conn.closing.borrow().is_some() {
                break;
            }
            // The guest is past its share of the loop: read when it has one
            // again (the bytes wait in the kernel, or in the HTTP input).
            if !self.admit(reactor, g, Deferred::Read(g, c)) {
                break;
            }
            let Some(conn) = self.connection(g, c) else {
                break;
            };
            let read = conn.read(&mut buf);
            if let (Ok(n), Some(metrics)) = (&read, self.metrics_of(g)) {
                metrics.bytes_in.add(*n as u64);
            }
            match read {
                Ok(0) if http => {
                    self.http_eof(reactor, g, c);
                    break;
                }
                Ok(0) => {
                    conn.eof.set(true);
                    let action = self.call(reactor, g, |guest| guest.on_eof(c.handle()));
                    if action == Some(EofAction::Close)
                        && let Some(conn) = self.connection(g, c)
                    {
                        conn.closing.borrow_mut().get_or_insert(CloseReason::PeerClosed);
                        self.settle_connection(reactor, g, c);
                    }
                    break;
                }
                Ok(n) if http => {
                    self.http_input(reactor, g, c, &mut buf[..n]);
                    // Stopped for the guest's share of the loop: what is
                    // left of the input waits with the socket.
                    if !self.admit(reactor, g, Deferred::Read(g, c)) {
                        break;
                    }
                    if n < buf.len() && !drain {
                        break;
                    }
                }
                Ok(n) => {
                    self.call(reactor, g, |guest| guest.on_data(c.handle(), &buf[..n]));
                    if n < buf.len() && !drain {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.finish(reactor, g, c, close_reason(&e), true);
                    break;
                }
            }
        }
        self.read_buf = buf;
        if !budget_left {
            self.defer(reactor, Deferred::Read(g, c));
        }
    }

    // ---- Shutdown -----------------------------------------------------------

    /// SIGINT/SIGTERM: stop accepting, tell every guest, close connections
    /// once their output drained, and stop the loop when all are gone or the
    /// shutdown timeout passes. A second signal stops at once.
    fn begin_shutdown(&mut self, reactor: &mut Reactor) {
        if self.shutting_down {
            warn!("second signal: stopping now");
            return self.abort_all(reactor);
        }
        self.shutting_down = true;
        info!("shutting down: no new connections");
        for listener in self.listeners.drain(..) {
            let _ = reactor.delete(&listener.socket);
            self.routes.remove(listener.route);
        }
        let guests: Vec<GuestKey> = self.guests.keys().collect();
        for &g in &guests {
            self.call(reactor, g, |guest| guest.on_shutdown());
        }
        for &g in &guests {
            self.close_all(reactor, g);
        }
        let route = self.routes.insert(Route::ShutdownDeadline);
        reactor.set_timeout(self.config.shutdown_timeout, token(route));
        self.stop_if_done(reactor);
    }

    /// Closes every connection of instance `g` gracefully (output is sent
    /// first, within the linger time), with reason `host-shutdown`.
    fn close_all(&mut self, reactor: &mut Reactor, g: GuestKey) {
        let Some(guest) = self.guests.get(g).and_then(|s| s.guest.as_ref()) else { return };
        for (c, conn) in &guest.state().connections {
            if let Some(http) = conn.http.as_deref() {
                http.going_away(&conn.out(&guest.state().output));
            }
            conn.closing.borrow_mut().get_or_insert(CloseReason::HostShutdown);
            guest.state().dirty.borrow_mut().push(c);
        }
        self.settle(reactor, g);
    }

    fn abort_all(&mut self, reactor: &mut Reactor) {
        for slot in self.guests.values_mut() {
            if let Some(guest) = slot.guest.as_mut() {
                for (_, conn) in guest.state_mut().connections.drain() {
                    unwatch(reactor, &mut self.routes, &conn);
                }
            }
        }
        reactor.stop();
    }

    fn stop_if_done(&mut self, reactor: &mut Reactor) {
        if !self.shutting_down {
            return;
        }
        let open: usize =
            self.guests.values().filter_map(|s| s.guest.as_ref()).map(|g| g.state().connections.len()).sum();
        if open == 0 && self.deferred.is_empty() {
            info!("all connections closed; exiting");
            reactor.stop();
        }
    }

    fn fire_guest_timers(&mut self, reactor: &mut Reactor, g: GuestKey) {
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
        let barrier = match slot.guest.as_ref() {
            Some(guest) => guest.state().timers.barrier(),
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

impl Handler for Server {
    fn io(&mut self, reactor: &mut Reactor, event: Event) {
        let Some(&route) = self.routes.get(route_key(event.token)) else {
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
                let postponed = self.guests.get(g).and_then(|s| s.guest.as_ref()).and_then(|i| i.state().udp.get(k));
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
        let Some(&route) = self.routes.get(route_key(expired.token)) else {
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
            Route::WatchQuiet => {
                self.watch_quiet = None;
                for name in std::mem::take(&mut self.changed) {
                    info!(guest = &*name, "module file changed: reloading");
                    self.reload(Some(&name));
                }
            }
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
        self.in_deferred = true;
        for _ in 0..self.deferred.len() {
            let Some((work, postponed)) = self.deferred.pop_front() else {
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
        self.in_deferred = false;
        if !self.deferred.is_empty() {
            reactor.defer();
        }
        self.stop_if_done(reactor);
    }
}
