//! The store's data: everything a guest can reach through its imports, and
//! nothing else. Like wasmtime-wasi's `WasiView`, one struct per store.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use slotmap::SlotMap;
use wasmloop_io::http::HttpLimits;
use wasmloop_io::{ConnKey, Connection, ErrorCode, Handle, OutputBudget, ReqKey, UdpKey, WsKey};
use wasmloop_reactor::TimerHeap;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::grants::Grants;
use crate::guest_io::GuestLog;
use crate::metrics::GuestMetrics;
use crate::runtime::limiter::MemoryLimiter;

/// A bound UDP socket of a guest.
pub struct UdpSocket {
    pub socket: std::net::UdpSocket,
    /// The reactor token (route) it is registered under;
    /// [`UNREGISTERED`](wasmloop_io::UNREGISTERED) until the server
    /// registers it after the callback that bound it.
    pub token: u64,
    /// Receiving waits for the guest's CPU share: new datagrams are left to
    /// the queued work.
    pub postponed: std::cell::Cell<bool>,
}

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

/// Everything needed to start (and restart) one guest.
#[derive(Clone, Debug)]
pub struct GuestSetup {
    pub name: Arc<str>,
    pub listeners: Vec<ListenerGrant>,
    /// The string handed to `init`.
    pub config: String,
    pub limits: GuestLimits,
    pub grants: Grants,
    /// Where the guest's metrics go (`--admin`); `None` records nothing.
    pub metrics: Option<Arc<GuestMetrics>>,
}

/// A listener granted to the guest. Its handle is its index + 1.
#[derive(Clone, Debug)]
pub struct ListenerGrant {
    pub address: String,
}

/// Limits that apply to one guest.
#[derive(Clone, Debug)]
pub struct GuestLimits {
    /// Longest a callback may run before the guest is stopped (epoch
    /// interruption).
    pub callback_deadline: Duration,
    /// Longest `init` may run (language runtimes start slowly).
    pub init_deadline: Duration,
    /// Bytes of linear memory plus table storage (8 bytes an element), over
    /// all of the guest's memories and tables together: one budget for its
    /// store, not one per memory (`runtime/limiter.rs`).
    pub max_memory: usize,
    /// Bytes the host buffers per connection beyond what the kernel takes.
    pub max_output: usize,
    /// Bytes buffered over all of the guest's connections.
    pub max_output_total: usize,
    /// Bytes of input the host holds over all of the guest's HTTP and
    /// WebSocket connections; a connection that needs more is refused
    /// (503, or WebSocket close 1013).
    pub max_input_total: usize,
    /// Open connections, inbound and outbound; excess inbound ones are
    /// accepted and closed at once.
    pub max_connections: usize,
    /// Outbound connects not yet finished.
    pub max_pending_connects: usize,
    pub max_timers: usize,
    /// Callback time the guest may use per second of the loop's time; past
    /// it its events wait (server/fairness.rs).
    pub cpu_budget: Duration,
    /// How long the guest may keep hitting its CPU budget before that is a
    /// fault.
    pub cpu_overrun: Duration,
    /// Callbacks the guest gets per loop turn before its other events wait
    /// for the next turn.
    pub max_callbacks_per_turn: u32,
    /// Lines the guest may log (`log`, stdout, stderr) per second; the rest
    /// are dropped and counted.
    pub log_lines_per_sec: u32,
    /// Limits and timeouts of the guest's HTTP listeners.
    pub http: HttpLimits,
}

impl Default for GuestLimits {
    fn default() -> Self {
        GuestLimits {
            callback_deadline: Duration::from_millis(50),
            init_deadline: Duration::from_secs(5),
            max_memory: 64 << 20,
            max_output: 1 << 20,
            max_output_total: 64 << 20,
            max_input_total: 64 << 20,
            max_connections: 10_000,
            max_pending_connects: 64,
            max_timers: 10_000,
            cpu_budget: Duration::from_millis(800),
            cpu_overrun: Duration::from_secs(5),
            max_callbacks_per_turn: 256,
            log_lines_per_sec: 100,
            http: HttpLimits::default(),
        }
    }
}

pub struct GuestState {
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
    pub header_pairs: RefCell<Vec<(wasmtime::component::WasmStr, wasmtime::component::WasmStr)>>,
    /// Sockets bound during a callback, for the server to register after it.
    pub udp_new: Vec<UdpKey>,
    /// Sockets closed during a callback, for the server to deregister (then
    /// close) after it.
    pub udp_closed: Vec<UdpSocket>,
    /// Whether the guest exports `outbound-callbacks`; `connect` needs it.
    pub has_outbound: bool,
    /// Addresses already logged as denied (see [`GuestState::log_denied`]).
    denied: HashSet<(&'static str, SocketAddr)>,
    /// `connect` without `outbound-callbacks` was logged.
    pub logged_no_outbound: bool,
    /// The store's limiter: memories and tables against `max_memory`.
    pub limiter: MemoryLimiter,
    /// Where this guest's metrics go, if anywhere.
    pub metrics: Option<Arc<GuestMetrics>>,
    /// Where its `log` lines (and stdout and stderr) go.
    pub log: Arc<GuestLog>,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl GuestState {
    pub fn new(setup: &GuestSetup, log: Arc<GuestLog>, wasi: WasiCtx) -> GuestState {
        GuestState {
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
            header_pairs: RefCell::new(Vec::new()),
            udp_new: Vec::new(),
            udp_closed: Vec::new(),
            has_outbound: false,
            denied: HashSet::new(),
            logged_no_outbound: false,
            limiter: MemoryLimiter::new(setup.limits.max_memory, setup.metrics.clone()),
            metrics: setup.metrics.clone(),
            log,
            wasi,
            table: ResourceTable::new(),
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

    /// Takes over what [`GuestState::hand_over`] gave, handles unchanged.
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

    /// Like [`GuestState::connection`], and marks the connection for the
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
        usize::try_from(handle)
            .ok()
            .and_then(|h| h.checked_sub(1))
            .and_then(|i| self.listeners.get(i))
            .ok_or(ErrorCode::InvalidHandle)
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}
