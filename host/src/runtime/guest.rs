//! One guest: a long-lived instance in its own store, and how each callback
//! calls its export (`Exports`, a method per callback of `crate::callbacks`,
//! called through [`Instance`](super::Instance)). Each call gets a fresh
//! epoch deadline; a trap comes back as a [`Fault`] naming the callback, and
//! the instance must not be entered again.

use std::sync::Arc;
use std::time::Duration;

use wasmloop_io::listener_handle;
use wasmtime::{Store, Trap, WasmBacktrace};

use wasmtime::component::{ComponentType, Func, Lower};

use crate::callbacks::Callback;
use crate::guest_io::{GuestIo, GuestLog, GuestSetup};
use crate::metrics::FaultKind;
use crate::runtime::bindings::{
    Callbacks, CloseReason, ConnectError, DatagramCallbacks, EofAction, HttpCallbacks, ListenerInfo, Message,
    Migration, OutboundCallbacks,
};
use crate::runtime::limiter::LimitExceeded;
use crate::runtime::load::{Module, Runtime};
use crate::runtime::poll::Blocked;
use crate::runtime::state::GuestState;
use crate::runtime::ticker::EpochTicker;
use crate::runtime::wasi;

/// A guest trapped (or failed to start). The instance is unusable.
#[derive(Debug, thiserror::Error)]
#[error("guest `{guest}` {what} in {callback}: {detail}")]
pub struct Fault {
    pub guest: Arc<str>,
    pub callback: &'static str,
    pub what: &'static str,
    pub detail: String,
    /// For the metrics.
    pub kind: FaultKind,
}

/// The guest's exported functions, resolved once at instantiation.
pub(super) struct Exports {
    callbacks: Callbacks,
    /// Present if the guest exports `outbound-callbacks`.
    outbound: Option<OutboundCallbacks>,
    /// Present if the guest exports `datagram-callbacks`.
    datagrams: Option<DatagramCallbacks>,
    /// Present if the guest exports `migration`.
    migration: Option<Migration>,
    /// Present if the guest exports `http-callbacks`; `on-request` apart,
    /// called with a borrowed head (see [`RequestHead`]).
    http: Option<(HttpCallbacks, Func)>,
}

/// How each callback of the list (`crate::callbacks`) calls the guest: one
/// method per callback, named like it. A callback of an optional interface
/// the guest does not export does nothing.
impl Exports {
    pub(super) fn snapshot(&self, store: &mut Store<GuestState>) -> wasmtime::Result<Option<Vec<u8>>> {
        match &self.migration {
            Some(m) => m.call_snapshot(store),
            None => Ok(None),
        }
    }

    pub(super) fn on_accept(&self, store: &mut Store<GuestState>, listener: u64, conn: u64) -> wasmtime::Result<()> {
        self.callbacks.call_on_accept(store, listener, conn)
    }

    pub(super) fn on_data(&self, store: &mut Store<GuestState>, conn: u64, data: &[u8]) -> wasmtime::Result<()> {
        self.callbacks.call_on_data(store, conn, data)
    }

    pub(super) fn on_eof(&self, store: &mut Store<GuestState>, conn: u64) -> wasmtime::Result<EofAction> {
        self.callbacks.call_on_eof(store, conn)
    }

    pub(super) fn on_writable(&self, store: &mut Store<GuestState>, conn: u64) -> wasmtime::Result<()> {
        self.callbacks.call_on_writable(store, conn)
    }

    pub(super) fn on_close(
        &self,
        store: &mut Store<GuestState>,
        conn: u64,
        reason: &wasmloop_io::CloseReason,
    ) -> wasmtime::Result<()> {
        self.callbacks.call_on_close(store, conn, &CloseReason::from(reason))
    }

    pub(super) fn on_timer(&self, store: &mut Store<GuestState>, timer: u64) -> wasmtime::Result<()> {
        self.callbacks.call_on_timer(store, timer)
    }

    pub(super) fn on_shutdown(&self, store: &mut Store<GuestState>) -> wasmtime::Result<()> {
        self.callbacks.call_on_shutdown(store)
    }

    pub(super) fn on_connect(
        &self,
        store: &mut Store<GuestState>,
        conn: u64,
        outcome: Result<(), ConnectError>,
    ) -> wasmtime::Result<()> {
        match &self.outbound {
            Some(o) => o.call_on_connect(store, conn, outcome),
            None => Ok(()),
        }
    }

    pub(super) fn on_datagram(
        &self,
        store: &mut Store<GuestState>,
        socket: u64,
        peer: &str,
        data: &[u8],
    ) -> wasmtime::Result<()> {
        match &self.datagrams {
            Some(d) => d.call_on_datagram(store, socket, peer, data),
            None => Ok(()),
        }
    }

    pub(super) fn on_request(
        &self,
        store: &mut Store<GuestState>,
        req: u64,
        head: RequestHead<'_>,
        body: &[u8],
        end: bool,
    ) -> wasmtime::Result<()> {
        match &self.http {
            // Type-checked per call: the head borrows, so it cannot be the
            // type of a `TypedFunc` kept from instantiation.
            Some((_, f)) => {
                f.typed::<(u64, RequestHead<'_>, &[u8], bool), ()>(&*store)?.call(store, (req, head, body, end))
            }
            None => Ok(()),
        }
    }

    pub(super) fn on_request_body(
        &self,
        store: &mut Store<GuestState>,
        req: u64,
        data: &[u8],
        end: bool,
    ) -> wasmtime::Result<()> {
        match &self.http {
            Some((h, _)) => h.call_on_request_body(store, req, data, end),
            None => Ok(()),
        }
    }

    pub(super) fn on_response_writable(&self, store: &mut Store<GuestState>, req: u64) -> wasmtime::Result<()> {
        match &self.http {
            Some((h, _)) => h.call_on_response_writable(store, req),
            None => Ok(()),
        }
    }

    pub(super) fn on_request_closed(&self, store: &mut Store<GuestState>, req: u64) -> wasmtime::Result<()> {
        match &self.http {
            Some((h, _)) => h.call_on_request_closed(store, req),
            None => Ok(()),
        }
    }

    pub(super) fn on_websocket_message(
        &self,
        store: &mut Store<GuestState>,
        ws: u64,
        message: &Message,
    ) -> wasmtime::Result<()> {
        match &self.http {
            Some((h, _)) => h.call_on_websocket_message(store, ws, message),
            None => Ok(()),
        }
    }

    pub(super) fn on_websocket_writable(&self, store: &mut Store<GuestState>, ws: u64) -> wasmtime::Result<()> {
        match &self.http {
            Some((h, _)) => h.call_on_websocket_writable(store, ws),
            None => Ok(()),
        }
    }

    pub(super) fn on_websocket_close(
        &self,
        store: &mut Store<GuestState>,
        ws: u64,
        code: u16,
        reason: &str,
    ) -> wasmtime::Result<()> {
        match &self.http {
            Some((h, _)) => h.call_on_websocket_close(store, ws, code, reason),
            None => Ok(()),
        }
    }
}

/// `http.request-head` borrowed from the host's read buffer, so handing a
/// request to the guest copies it once, into guest memory.
#[derive(ComponentType, Lower)]
#[component(record)]
pub struct RequestHead<'a> {
    pub method: &'a str,
    pub target: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    #[component(name = "body-length")]
    pub body_length: Option<u64>,
    pub websocket: bool,
}

const HTTP_CALLBACKS: &str = "wasmloop:handler/http-callbacks@0.1.0";

pub struct Guest {
    store: Store<GuestState>,
    exports: Exports,
    ticker: Arc<EpochTicker>,
    deadline_ticks: u64,
    /// The callback deadline, for the message when it is exceeded.
    deadline: Duration,
    /// Epoch ticks and duration for `init` and `restore`.
    init_deadline: (u64, Duration),
}

impl Guest {
    /// Instantiates `module` and runs its `init`.
    pub fn start(runtime: &Runtime, module: &Module, setup: &GuestSetup) -> Result<Guest, Fault> {
        let mut guest = Guest::instantiate(runtime, module, setup)?;
        let infos = listener_infos(setup);
        let init = guest.init_deadline;
        let result = guest.call_with(Callback::Init, init, |e, s| e.callbacks.call_init(s, &setup.config, &infos))?;
        result.map_err(|message| guest.refused(Callback::Init, message))?;
        Ok(guest)
    }

    /// Like [`Guest::start`], but through the guest's `restore` with the
    /// state of its previous version (migrate mode). The caller has already
    /// moved the old version's connections and timers into this one.
    pub fn restore(&mut self, setup: &GuestSetup, state: &[u8]) -> Result<(), Fault> {
        let infos = listener_infos(setup);
        let init = self.init_deadline;
        let result = self.call_with(Callback::Restore, init, |e, s| match &e.migration {
            Some(m) => m.call_restore(s, &setup.config, &infos, state),
            None => Ok(Err("the guest does not export wasmloop:handler/migration".into())),
        })?;
        result.map_err(|message| self.refused(Callback::Restore, message))
    }

    fn refused(&self, callback: Callback, message: String) -> Fault {
        Fault {
            guest: self.name().clone(),
            callback: callback.name(),
            what: "refused to start",
            detail: message,
            kind: FaultKind::InitRefused,
        }
    }

    /// A fresh instance in its own store; no guest code has run but the
    /// component's start functions.
    pub fn instantiate(runtime: &Runtime, module: &Module, setup: &GuestSetup) -> Result<Guest, Fault> {
        let name = setup.name.clone();
        let limits = &setup.limits;
        let log = Arc::new(GuestLog::new(
            name.clone(),
            module.version.as_str().into(),
            limits.log_lines_per_sec,
            setup.metrics.clone(),
        ));
        let state = GuestState::new(setup, log.clone(), wasi::context(&log));
        let mut store = Store::new(&runtime.engine, state);
        // Memories and tables together within `max_memory`; instances,
        // memories and tables bounded so a hostile component cannot
        // multiply them (runtime/limiter.rs).
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(runtime.ticks(limits.init_deadline));
        let fault = |what, e: wasmtime::Error| Fault {
            guest: name.clone(),
            callback: "instantiate",
            what,
            kind: kind(&e),
            detail: describe(&e, limits.init_deadline),
        };
        runtime.ticker.enter();
        let instance = module.pre.instantiate(&mut store);
        runtime.ticker.exit();
        let instance = instance.map_err(|e| fault("failed", e))?;
        let indices = &module.exports;
        let exports = Exports {
            callbacks: indices.callbacks.load(&mut store, &instance).map_err(|e| fault("failed", e))?,
            outbound: match &indices.outbound {
                Some(i) => Some(i.load(&mut store, &instance).map_err(|e| fault("failed", e))?),
                None => None,
            },
            datagrams: match &indices.datagrams {
                Some(i) => Some(i.load(&mut store, &instance).map_err(|e| fault("failed", e))?),
                None => None,
            },
            migration: match &indices.migration {
                Some(i) => Some(i.load(&mut store, &instance).map_err(|e| fault("failed", e))?),
                None => None,
            },
            http: match &indices.http {
                Some(i) => {
                    let callbacks = i.load(&mut store, &instance).map_err(|e| fault("failed", e))?;
                    let on_request = instance
                        .get_export_index(&mut store, None, HTTP_CALLBACKS)
                        .and_then(|http| instance.get_export_index(&mut store, Some(&http), "on-request"))
                        .and_then(|f| instance.get_func(&mut store, f))
                        .ok_or_else(|| fault("failed", wasmtime::format_err!("{HTTP_CALLBACKS} has no on-request")))?;
                    Some((callbacks, on_request))
                }
                None => None,
            },
        };
        // `connect` refuses guests that could never learn the outcome.
        store.data_mut().io.has_outbound = exports.outbound.is_some();
        Ok(Guest {
            store,
            exports,
            ticker: runtime.ticker.clone(),
            deadline_ticks: runtime.ticks(limits.callback_deadline),
            deadline: limits.callback_deadline,
            init_deadline: (runtime.ticks(limits.init_deadline), limits.init_deadline),
        })
    }

    pub fn name(&self) -> &Arc<str> {
        &self.store.data().io.name
    }

    /// The guest's I/O context, in its store.
    pub fn state(&self) -> &GuestIo {
        &self.store.data().io
    }

    pub fn state_mut(&mut self) -> &mut GuestIo {
        &mut self.store.data_mut().io
    }

    /// Whether the guest exports `datagram-callbacks`.
    pub fn has_datagrams(&self) -> bool {
        self.exports.datagrams.is_some()
    }

    /// Whether the guest exports `http-callbacks`.
    pub fn has_http(&self) -> bool {
        self.exports.http.is_some()
    }

    /// Calls one callback (`f`, an [`Exports`] method), with the callback
    /// deadline; `Instance` has a method per callback that calls this.
    pub(super) fn call<R>(
        &mut self,
        callback: Callback,
        f: impl FnOnce(&Exports, &mut Store<GuestState>) -> wasmtime::Result<R>,
    ) -> Result<R, Fault> {
        self.call_with(callback, (self.deadline_ticks, self.deadline), f)
    }

    fn call_with<R>(
        &mut self,
        callback: Callback,
        (ticks, deadline): (u64, Duration),
        f: impl FnOnce(&Exports, &mut Store<GuestState>) -> wasmtime::Result<R>,
    ) -> Result<R, Fault> {
        self.store.set_epoch_deadline(ticks);
        let started = self.store.data().io.metrics.is_some().then(crate::metrics::stamp);
        self.ticker.enter();
        let result = f(&self.exports, &mut self.store);
        self.ticker.exit();
        if let (Some(started), Some(metrics)) = (started, &self.store.data().io.metrics) {
            metrics.callback(callback, started);
        }
        result.map_err(|e| Fault {
            guest: self.name().clone(),
            callback: callback.name(),
            what: "trapped",
            kind: kind(&e),
            detail: describe(&e, deadline),
        })
    }
}

/// The listeners as `init` and `restore` receive them.
pub(crate) fn listener_infos(setup: &GuestSetup) -> Vec<ListenerInfo> {
    setup
        .listeners
        .iter()
        .enumerate()
        .map(|(i, l)| ListenerInfo { handle: listener_handle(i), address: l.address.clone() })
        .collect()
}

/// The kind of trap (or other error) for the metrics.
fn kind(e: &wasmtime::Error) -> FaultKind {
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => FaultKind::Deadline,
        Some(Trap::MemoryOutOfBounds | Trap::TableOutOfBounds | Trap::HeapMisaligned) => FaultKind::OutOfBounds,
        Some(Trap::UnreachableCodeReached) => FaultKind::Unreachable,
        Some(Trap::StackOverflow) => FaultKind::StackOverflow,
        Some(Trap::IntegerOverflow | Trap::IntegerDivisionByZero | Trap::BadConversionToInteger) => {
            FaultKind::Arithmetic
        }
        Some(Trap::IndirectCallToNull | Trap::BadSignature) => FaultKind::IndirectCall,
        Some(_) => FaultKind::Other,
        None if e.downcast_ref::<LimitExceeded>().is_some() => FaultKind::MemoryLimit,
        None if e.downcast_ref::<Blocked>().is_some() => FaultKind::Blocked,
        None => FaultKind::Other,
    }
}

/// The trap and the wasm backtrace, without the host's Rust backtrace.
fn describe(e: &wasmtime::Error, deadline: Duration) -> String {
    let mut text = match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => format!("deadline exceeded: still running after {deadline:?} (epoch interruption)"),
        Some(trap) => format!("{trap}"),
        // The store limiter refused a grow (or one failed): say which limit.
        None => match e.downcast_ref::<LimitExceeded>() {
            Some(limit) => format!("memory limit reached: {limit}"),
            None => format!("{:#}", e.root_cause()),
        },
    };
    if let Some(bt) = e.downcast_ref::<WasmBacktrace>() {
        text.push('\n');
        text.push_str(bt.to_string().trim_start_matches("error while executing at "));
    }
    text
}
