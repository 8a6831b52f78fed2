//! A guest slot: one guest on this loop, or one version of it (after a
//! reload the old version is a slot of its own, draining). It holds what
//! runs the guest, what restarting it needs, its loop timer, its share of
//! the loop (fairness.rs) and its fault history (faults.rs).
//!
//! Its methods need the slot alone (and the routes, the reactor): the
//! server calls them from its phases, after one lookup of the slot.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use slotmap::new_key_type;
use tracing::{debug, error, info, warn};
use wasmloop_io::{CloseReason, Connection};
use wasmloop_reactor::{Interest, Reactor, TimerId, Token};

use super::deferred::Deferred;
use super::fairness::{CpuLimits, CpuShare, Gate};
use super::faults::{CRASH_WINDOW, FaultHistory, Next};
use super::policy::{FaultPolicy, Policy};
use super::routes::{Route, RouteKey, Routes, token};
use super::{datagrams, outbound};
use crate::guest_io::GuestIo;
use crate::metrics::{FaultKind, GuestMetrics};
use crate::runtime::native::{HandlerFactory, NativeGuest};
use crate::runtime::{ConnKey, Fault, Guest, GuestLimits, GuestSetup, Instance, Module, Runtime};

new_key_type! {
    pub(super) struct GuestKey;
}

/// What a guest slot runs, and what restarting it needs.
pub(super) enum Program {
    /// Boxed: a `Module` is large, and rarely used (restart, reload).
    Wasm(Box<Module>),
    Native(HandlerFactory),
}

impl Program {
    /// A fresh instance (or handler), `init`ed.
    pub fn start(&self, runtime: &Runtime, setup: &GuestSetup) -> Result<Instance, Fault> {
        match self {
            Program::Wasm(module) => Guest::start(runtime, module, setup).map(Instance::Wasm),
            Program::Native(factory) => NativeGuest::start(factory, setup).map(|n| Instance::Native(Box::new(n))),
        }
    }

    /// The module of a wasm guest; native handlers have none (and are not
    /// reloaded).
    pub fn module(&self) -> Option<&Module> {
        match self {
            Program::Wasm(module) => Some(module),
            Program::Native(_) => None,
        }
    }

    /// The version, for the log.
    pub fn version(&self) -> &str {
        self.module().map_or("native", |m| &m.version)
    }
}

pub(super) struct GuestSlot {
    /// `None` while the guest is down (faulted, waiting to restart, or
    /// stopped).
    pub guest: Option<Instance>,
    /// What restarting it needs.
    pub program: Program,
    pub setup: GuestSetup,
    pub policy: Policy,
    faults: FaultHistory,
    timer_route: RouteKey,
    restart_route: RouteKey,
    pub drain_route: RouteKey,
    /// Set on an old version after a reload: it keeps its connections until
    /// they close or this deadline passes, and gets no new ones.
    pub draining: Option<Instant>,
    /// The loop timer armed at the guest's earliest timer deadline.
    pub armed: Option<(TimerId, Instant)>,
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
    /// Its postponed work in the deferred queue (see `gate`).
    pub waiting: usize,
}

/// A guest's CPU limits, as fairness.rs takes them.
fn cpu_limits(limits: &GuestLimits) -> CpuLimits {
    CpuLimits {
        budget: limits.cpu_budget,
        overrun: limits.cpu_overrun,
        callbacks_per_turn: limits.max_callbacks_per_turn,
    }
}

impl GuestSlot {
    /// Slot `g` for `guest` (`None`: one that could not start), with the
    /// routes its timers need.
    pub fn new(
        g: GuestKey,
        guest: Option<Instance>,
        program: Program,
        setup: GuestSetup,
        policy: Policy,
        routes: &mut Routes,
    ) -> GuestSlot {
        GuestSlot {
            timer_route: routes.insert(Route::GuestTimers(g)),
            restart_route: routes.insert(Route::Restart(g)),
            drain_route: routes.insert(Route::DrainDeadline(g)),
            release_route: routes.insert(Route::Release(g)),
            cpu: CpuShare::new(cpu_limits(&setup.limits), Instant::now()),
            held: Vec::new(),
            throttled_at: None,
            waiting: 0,
            guest,
            program,
            setup,
            policy,
            faults: FaultHistory::default(),
            armed: None,
            refused_warning: None,
            draining: None,
        }
    }

    /// The running guest's state.
    pub fn state(&self) -> Option<&GuestIo> {
        self.guest.as_ref().map(|guest| guest.state())
    }

    pub fn connection(&self, c: ConnKey) -> Option<&Connection> {
        self.state()?.connections.get(c)
    }

    pub fn metrics(&self) -> Option<&GuestMetrics> {
        self.setup.metrics.as_deref()
    }

    /// An old version with no connections left (or no instance).
    pub fn is_drained(&self) -> bool {
        self.draining.is_some() && self.state().is_none_or(|state| state.connections.is_empty())
    }

    /// Keeps the loop timer armed at the guest's earliest timer deadline.
    pub fn arm_timer(&mut self, reactor: &mut Reactor) {
        let Some(guest) = self.guest.as_mut() else { return };
        let next = guest.state_mut().timers.next_deadline();
        if self.armed.map(|(_, at)| at) != next {
            if let Some((id, _)) = self.armed.take() {
                reactor.cancel_timer(id);
            }
            if let Some(at) = next {
                self.armed = Some((reactor.set_deadline(at, token(self.timer_route)), at));
            }
        }
    }

    /// Removes the routes the slot owns and its armed timer.
    pub fn forget(&self, reactor: &mut Reactor, routes: &mut Routes) {
        for route in [self.timer_route, self.restart_route, self.drain_route, self.release_route] {
            routes.remove(route);
        }
        if let Some((id, _)) = self.armed {
            reactor.cancel_timer(id);
        }
    }

    // ---- Connections ------------------------------------------------------

    /// A connection accepted for this guest. Refused (accepted and closed at
    /// once, so the peer learns now instead of waiting in the backlog for a
    /// slot) if the guest is down or at its connection limit; otherwise
    /// watched and added to its table.
    pub fn adopt(
        &mut self,
        reactor: &mut Reactor,
        routes: &mut Routes,
        g: GuestKey,
        stream: TcpStream,
    ) -> Option<ConnKey> {
        let metrics = self.setup.metrics.as_deref();
        let Some(guest) = self.guest.as_mut() else {
            debug!(guest = &*self.setup.name, "refusing a connection: the guest is down");
            if let Some(metrics) = metrics {
                metrics.refused.inc();
            }
            return None;
        };
        let limit = guest.state().limits.max_connections;
        if guest.state().connections.len() >= limit {
            if let Some(metrics) = metrics {
                metrics.refused.inc();
            }
            let now = Instant::now();
            if self.refused_warning.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
                self.refused_warning = Some(now);
                warn!(guest = &*self.setup.name, "at its connection limit ({limit}): refusing connections");
            }
            return None;
        }
        if let Some(metrics) = metrics {
            metrics.accepted.inc();
        }
        // Small messages go out at once (no Nagle delay).
        let _ = stream.set_nodelay(true);
        let max_output = guest.state().limits.max_output;
        let connections = &mut guest.state_mut().connections;
        let c = connections.insert_with_key(|c| {
            let route = routes.insert(Route::Connection(g, c));
            Connection::new(stream, token(route).0, max_output)
        });
        let conn = &connections[c];
        if let Err(e) = reactor.add(&conn.transport, Token(conn.token), Interest::BOTH) {
            warn!("cannot watch an accepted connection: {e}");
            routes.remove_token(Token(conn.token));
            connections.remove(c);
            return None;
        }
        Some(c)
    }

    /// Marks every connection to close gracefully (output is sent first,
    /// within the linger time), with reason `host-shutdown`, and puts it
    /// on the dirty list: settling the guest closes them.
    pub fn close_all(&self) {
        let Some(state) = self.state() else { return };
        for (c, conn) in &state.connections {
            if let Some(http) = conn.http.as_deref() {
                http.going_away(&conn.out(&state.output));
            }
            conn.closing.borrow_mut().get_or_insert(CloseReason::HostShutdown);
            state.dirty.borrow_mut().push(c);
        }
    }

    /// Drops every connection at once, unsent output and all.
    pub fn abort_all(&mut self, reactor: &mut Reactor, routes: &mut Routes) {
        if let Some(guest) = self.guest.as_mut() {
            for (_, conn) in guest.state_mut().connections.drain() {
                routes.unwatch(reactor, &conn);
            }
        }
    }

    // ---- Faults -----------------------------------------------------------

    /// The guest faulted: log it, reset its connections, close its sockets
    /// and drop its instance. Returns false if it was down already.
    pub fn tear_down(&mut self, reactor: &mut Reactor, routes: &mut Routes, fault: &Fault) -> bool {
        let Some(mut guest) = self.guest.take() else { return false };
        if let Some((id, _)) = self.armed.take() {
            reactor.cancel_timer(id);
        }
        // What it held dies with it; a restart starts with a fresh share.
        self.held.clear();
        self.throttled_at = None;
        self.cpu = CpuShare::new(cpu_limits(&self.setup.limits), Instant::now());
        let connections = guest.state().connections.len();
        error!(
            guest = &*self.setup.name,
            version = self.program.version(),
            callback = fault.callback,
            kind = fault.kind.name(),
            connections,
            "{fault}"
        );
        if let Some(metrics) = self.metrics() {
            metrics.fault(fault.kind);
            if self.draining.is_none() {
                metrics.set_running(None);
            }
        }
        outbound::cancel_connect_timers(reactor, guest.state());
        for (_, conn) in guest.state_mut().connections.drain() {
            routes.unwatch(reactor, &conn);
            // A reset tells the peer the connection died, not that it ended.
            conn.set_reset_on_close();
        }
        datagrams::close_all(reactor, routes, guest.state_mut());
        true
    }

    /// The guest is down: restart it after a backoff (or leave it stopped
    /// in a crash loop), or leave it stopped. Returns why the host must
    /// exit, for `on-fault = exit`. (An old version after a reload has
    /// nothing to restart: the caller retires it instead.)
    pub fn apply_fault_policy(&mut self, reactor: &mut Reactor) -> Option<String> {
        let name = &*self.setup.name;
        match self.policy.on_fault {
            FaultPolicy::Restart => match self.faults.record(Instant::now()) {
                Next::RestartAfter(delay) => {
                    warn!(guest = name, "restarting in {delay:?}");
                    reactor.set_timeout(delay, token(self.restart_route));
                }
                Next::CrashLoop => error!(
                    guest = name,
                    "crash loop: {} faults within {CRASH_WINDOW:?}; the guest stays stopped",
                    self.faults.count(),
                ),
            },
            FaultPolicy::Stop => warn!(guest = name, "the guest stays stopped (on-fault = stop)"),
            FaultPolicy::Exit => return Some(format!("guest `{name}` faulted and on-fault = exit")),
        }
        None
    }

    /// Starts a fresh instance after the backoff. Returns false if that
    /// failed (logged and counted as a fault: a guest whose `init` keeps
    /// trapping ends in a crash loop).
    pub fn restart(&mut self, runtime: &Runtime) -> bool {
        match self.program.start(runtime, &self.setup) {
            Ok(guest) => {
                info!(guest = &*self.setup.name, version = self.program.version(), "restarted");
                if let Some(metrics) = self.metrics() {
                    metrics.restarts.inc();
                    metrics.set_running(Some(self.program.version()));
                }
                self.guest = Some(guest);
                true
            }
            Err(fault) => {
                error!(guest = &*self.setup.name, callback = fault.callback, "{fault}");
                if let Some(metrics) = self.metrics() {
                    metrics.fault(fault.kind);
                }
                false
            }
        }
    }

    // ---- Its share of the loop (fairness.rs) ------------------------------

    /// Whether the guest may run a callback in the turn that read the clock
    /// at `now`. A fresh event (not from the deferred phase) of a guest
    /// with postponed work waiting goes behind that work, so the guest's
    /// events run in the order they came.
    pub fn gate(&mut self, now: Instant, deferred_phase: bool) -> Gate {
        if self.guest.is_none() {
            // Nothing to run: the work finds out for itself.
            return Gate::Open;
        }
        match self.cpu.gate(now) {
            Gate::Open if self.waiting > 0 && !deferred_phase => Gate::NextTurn,
            gate => gate,
        }
    }

    /// Times a callback for the guest's share.
    pub fn charge(&mut self, took: Duration) {
        self.cpu.charge(took);
    }

    /// Work postponed to the next turn (queued by the caller).
    pub fn wait(&mut self) {
        if let Some(metrics) = self.metrics() {
            metrics.deferred.inc();
        }
        self.waiting += 1;
    }

    /// The guest is over its budget until `until`: `work` is held, and the
    /// release timer armed.
    pub fn hold(&mut self, reactor: &mut Reactor, until: Instant, work: Deferred) {
        let metrics = self.setup.metrics.as_deref();
        if self.held.is_empty() {
            reactor.set_deadline(until, token(self.release_route));
            if self.throttled_at.is_none() {
                self.throttled_at = Some(reactor.now());
                if let Some(metrics) = metrics {
                    metrics.throttled.inc();
                }
                debug!(guest = &*self.setup.name, "over its CPU budget: holding its events until {until:?}");
            }
        }
        if let Some(metrics) = metrics {
            metrics.deferred.inc();
        }
        // The guest's due timers are one piece of work, however often its
        // loop timer fires while it is held.
        if !matches!(work, Deferred::Timers(_)) || !self.held.iter().any(|w| matches!(w, Deferred::Timers(_))) {
            self.held.push(work);
        }
    }

    /// The release timer fired: the work held, in order; none if the guest
    /// was throttled again meanwhile (its bucket was still short when its
    /// own events ran first in this turn), and the timer is re-armed.
    pub fn release(&mut self, reactor: &mut Reactor) -> Vec<Deferred> {
        if let Some(until) = self.cpu.throttled().filter(|&until| until > reactor.now()) {
            reactor.set_deadline(until, token(self.release_route));
            return Vec::new();
        }
        if let (Some(since), Some(metrics)) = (self.throttled_at.take(), &self.setup.metrics) {
            metrics.throttled_ns.add(reactor.now().saturating_duration_since(since).as_nanos() as u64);
        }
        std::mem::take(&mut self.held)
    }

    /// The fault of a guest over its budget for `over`: throttled again
    /// and again for `cpu_overrun`.
    pub fn overrun(&self, over: Duration) -> Fault {
        let budget = self.setup.limits.cpu_budget;
        Fault {
            guest: self.setup.name.clone(),
            callback: "its callbacks",
            what: "exceeded its CPU budget",
            detail: format!(
                "over {budget:?} of callback time per second for {over:?} (--cpu-budget-ms, --cpu-overrun-ms)"
            ),
            kind: FaultKind::CpuBudget,
        }
    }
}
