//! What the host keeps for one guest or native handler, with no
//! WebAssembly in it: [`GuestIo`], its connections, timers, UDP sockets,
//! HTTP requests and WebSockets, budgets, limits and grants, and the
//! operations on them. Like wasmtime-wasi's `WasiCtx` under a `WasiView`,
//! a wasm guest's store data holds one (`runtime/state.rs`) and each import
//! lifts its arguments and calls the method here; a native handler holds one
//! alone and its `Cx` calls the same methods. So every check and limit has
//! one implementation.
//!
//! - [`setup`]: what a guest is started with ([`GuestSetup`], [`GuestLimits`]).
//! - [`connections`], [`timers`], [`sockets`], [`http`]: the operations of
//!   the WIT interfaces of those names.
//! - [`log`]: the guest's log lines.
//!
//! It uses no wasmtime and nothing of the runtime or the server.

pub mod connections;
pub mod http;
pub mod log;
pub mod setup;
pub mod sockets;
pub mod timers;

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use slotmap::SlotMap;
use wasmloop_io::{ConnKey, Connection, ErrorCode, Handle, OutputBudget, ReqKey, UdpKey, WsKey, listener_index};
use wasmloop_reactor::TimerHeap;

use crate::grants::Grants;
use crate::metrics::GuestMetrics;

pub use log::GuestLog;
pub use setup::{GuestLimits, GuestSetup, ListenerGrant};
pub use sockets::{ConnectError, DatagramError, UdpSocket};

/// How many denied addresses are remembered to log each denial once; past
/// that, denials are no longer logged (a guest cannot grow the set forever).
const DENIED_REMEMBERED: usize = 1024;

/// A guest's connections, timers, output budget and UDP sockets on their
/// way from one version of the guest to the next.
pub struct Handover {
    connections: SlotMap<ConnKey, Connection>,
    timers: TimerHeap,
    output: OutputBudget,
    input: usize,
    udp: SlotMap<UdpKey, UdpSocket>,
    requests: SlotMap<ReqKey, ConnKey>,
    websockets: SlotMap<WsKey, ConnKey>,
}

/// Everything a guest can reach through its imports but WASI and its
/// memory: a wasm guest's store holds it beside those, a native handler
/// holds it alone.
pub struct GuestIo {
    pub name: Arc<str>,
    pub connections: SlotMap<ConnKey, Connection>,
    pub listeners: Vec<ListenerGrant>,
    /// The guest's timers. The server keeps one loop timer armed at the
    /// earliest deadline here.
    pub timers: TimerHeap,
    /// Connections whose state a call changed in a way the host must act on
    /// after the callback (close, resume, notify, half-close, failure).
    pub dirty: RefCell<Vec<ConnKey>>,
    pub limits: GuestLimits,
    pub grants: Grants,
    /// Output buffered over all connections, against `max_output_total`.
    pub output: OutputBudget,
    /// Input the host holds for the guest's HTTP and WebSocket connections
    /// (partial heads and frames, pipelined requests, messages being
    /// reassembled), against `max_input_total`.
    pub input: Cell<usize>,
    /// The guest's UDP sockets.
    pub udp: SlotMap<UdpKey, UdpSocket>,
    /// Live HTTP requests and WebSockets, each naming its connection.
    /// `RefCell`: `accept-websocket` turns one into the other inside an
    /// import.
    pub requests: RefCell<SlotMap<ReqKey, ConnKey>>,
    pub websockets: RefCell<SlotMap<WsKey, ConnKey>>,
    /// Reused for response heads, so responding allocates nothing.
    pub scratch: RefCell<Vec<u8>>,
    /// Reused for the header list of a response (see `runtime/http.rs`).
    pub header_scratch: RefCell<Vec<(&'static str, &'static str)>>,
    /// Sockets bound during a callback, for the server to register after it.
    pub udp_new: Vec<UdpKey>,
    /// Sockets closed during a callback, for the server to deregister (then
    /// close) after it.
    pub udp_closed: Vec<UdpSocket>,
    /// Whether the guest exports `outbound-callbacks`; `connect` needs it.
    pub has_outbound: bool,
    /// Addresses already logged as denied (see [`GuestIo::log_denied`]).
    denied: HashSet<(&'static str, SocketAddr)>,
    /// `connect` without `outbound-callbacks` was logged.
    pub logged_no_outbound: bool,
    /// Where this guest's metrics go, if anywhere.
    pub metrics: Option<Arc<GuestMetrics>>,
    /// Where its `log` lines (and stdout and stderr) go.
    pub log: Arc<GuestLog>,
}

impl GuestIo {
    pub fn new(setup: &GuestSetup, log: Arc<GuestLog>) -> GuestIo {
        GuestIo {
            name: setup.name.clone(),
            connections: SlotMap::with_key(),
            listeners: setup.listeners.clone(),
            timers: TimerHeap::new(),
            dirty: RefCell::new(Vec::new()),
            limits: setup.limits.clone(),
            grants: setup.grants.clone(),
            output: OutputBudget::new(setup.limits.max_output_total, setup.metrics.clone().map(|m| m as _)),
            input: Cell::new(0),
            udp: SlotMap::with_key(),
            requests: RefCell::new(SlotMap::with_key()),
            websockets: RefCell::new(SlotMap::with_key()),
            scratch: RefCell::new(Vec::new()),
            header_scratch: RefCell::new(Vec::new()),
            udp_new: Vec::new(),
            udp_closed: Vec::new(),
            has_outbound: false,
            denied: HashSet::new(),
            logged_no_outbound: false,
            metrics: setup.metrics.clone(),
            log,
        }
    }

    /// Everything a handle can name, taken out for the guest's next version
    /// (migrate mode); this state is left empty.
    pub fn hand_over(&mut self) -> Handover {
        Handover {
            connections: std::mem::take(&mut self.connections),
            timers: std::mem::take(&mut self.timers),
            output: std::mem::replace(
                &mut self.output,
                OutputBudget::new(self.limits.max_output_total, self.metrics.clone().map(|m| m as _)),
            ),
            input: self.input.take(),
            udp: std::mem::take(&mut self.udp),
            requests: self.requests.take(),
            websockets: self.websockets.take(),
        }
    }

    /// Takes over what [`GuestIo::hand_over`] gave, handles unchanged.
    /// Meant for a fresh instance, whose own (empty) tables are dropped.
    pub fn take_over(&mut self, from: Handover) {
        self.connections = from.connections;
        self.timers = from.timers;
        self.output = from.output;
        self.input.set(from.input);
        self.udp = from.udp;
        self.requests = RefCell::new(from.requests);
        self.websockets = RefCell::new(from.websockets);
    }

    /// The live raw-TCP connection behind `handle`, if it is this guest's.
    /// A connection the host speaks HTTP on is reached only through its
    /// request or WebSocket handle: raw bytes would corrupt the protocol.
    pub fn connection(&self, handle: u64) -> Result<&Connection, ErrorCode> {
        self.connections.get(ConnKey::from_handle(handle)).filter(|c| c.http.is_none()).ok_or(ErrorCode::InvalidHandle)
    }

    /// Like [`GuestIo::connection`], and marks the connection for the
    /// host's attention after the callback.
    pub fn touch(&self, handle: u64) -> Result<&Connection, ErrorCode> {
        let conn = self.connection(handle)?;
        self.dirty.borrow_mut().push(ConnKey::from_handle(handle));
        Ok(conn)
    }

    /// The connection of a live request, marked for the host's attention.
    pub fn request(&self, handle: u64) -> Result<(ConnKey, &Connection), ErrorCode> {
        let key = *self.requests.borrow().get(ReqKey::from_handle(handle)).ok_or(ErrorCode::InvalidHandle)?;
        let conn = self.connections.get(key).ok_or(ErrorCode::InvalidHandle)?;
        self.dirty.borrow_mut().push(key);
        Ok((key, conn))
    }

    /// The connection of a live WebSocket, marked for the host's attention.
    pub fn websocket(&self, handle: u64) -> Result<&Connection, ErrorCode> {
        let key = *self.websockets.borrow().get(WsKey::from_handle(handle)).ok_or(ErrorCode::InvalidHandle)?;
        let conn = self.connections.get(key).ok_or(ErrorCode::InvalidHandle)?;
        self.dirty.borrow_mut().push(key);
        Ok(conn)
    }

    /// Logs a warning, once per action and address, that the guest was
    /// refused `addr`. `what` is the action ("connect to", "send to", "UDP
    /// bind on"), `why` the grant that is missing.
    pub fn log_denied(&mut self, what: &'static str, addr: SocketAddr, why: &str) {
        if self.denied.len() >= DENIED_REMEMBERED || !self.denied.insert((what, addr)) {
            return;
        }
        let guest = &*self.name;
        let more = if self.denied.len() == DENIED_REMEMBERED { " (further denials are not logged)" } else { "" };
        tracing::warn!(guest, "{what} {addr} denied: {why}{more}");
    }

    pub fn listener(&self, handle: u64) -> Result<&ListenerGrant, ErrorCode> {
        listener_index(handle).and_then(|i| self.listeners.get(i)).ok_or(ErrorCode::InvalidHandle)
    }
}
