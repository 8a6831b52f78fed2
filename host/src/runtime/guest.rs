//! One guest: a long-lived instance in its own store, and a method per
//! callback. Each call gets a fresh epoch deadline; a trap comes back as a
//! [`Fault`] naming the callback, and the instance must not be entered again.

use std::sync::Arc;

use wasmtime::{Store, StoreLimitsBuilder, Trap, WasmBacktrace};

use crate::runtime::bindings::{Callbacks, CloseReason, EofAction, Handler, ListenerInfo};
use crate::runtime::load::{Module, Runtime};
use crate::runtime::state::{GuestState, ListenerGrant};
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
}

pub struct Guest {
    store: Store<GuestState>,
    handler: Handler,
    ticker: Arc<EpochTicker>,
    deadline_ticks: u64,
}

impl Guest {
    /// Instantiates `module` and runs its `init`.
    pub fn start(
        runtime: &Runtime,
        module: &Module,
        name: Arc<str>,
        listeners: Vec<ListenerGrant>,
        config: &str,
    ) -> Result<Guest, Fault> {
        let store_limits = StoreLimitsBuilder::new()
            .memory_size(runtime.config.max_memory)
            .trap_on_grow_failure(true)
            .build();
        let infos: Vec<ListenerInfo> = listeners
            .iter()
            .enumerate()
            .map(|(i, l)| ListenerInfo {
                handle: i as u64 + 1,
                address: l.address.clone(),
            })
            .collect();
        let state = GuestState::new(
            name.clone(),
            listeners,
            runtime.config.limits.clone(),
            store_limits,
            wasi::context(&name),
        );
        let mut store = Store::new(&runtime.engine, state);
        store.limiter(|s| &mut s.store_limits);
        store.set_epoch_deadline(runtime.ticks(runtime.config.init_deadline));
        let fault = |what, e: wasmtime::Error| Fault {
            guest: name.clone(),
            callback: "instantiate",
            what,
            detail: describe(&e),
        };
        runtime.ticker.enter();
        let handler = module.pre.instantiate(&mut store);
        runtime.ticker.exit();
        let handler = handler.map_err(|e| fault("failed", e))?;
        let mut guest = Guest {
            store,
            handler,
            ticker: runtime.ticker.clone(),
            deadline_ticks: runtime.ticks(runtime.config.callback_deadline),
        };
        let init_ticks = runtime.ticks(runtime.config.init_deadline);
        let result = guest.call_with("init", init_ticks, |c, s| c.call_init(s, config, &infos))?;
        result.map_err(|message| Fault {
            guest: name.clone(),
            callback: "init",
            what: "refused to start",
            detail: message,
        })?;
        Ok(guest)
    }

    pub fn name(&self) -> &Arc<str> {
        &self.store.data().name
    }

    pub fn state(&self) -> &GuestState {
        self.store.data()
    }

    pub fn state_mut(&mut self) -> &mut GuestState {
        self.store.data_mut()
    }

    pub fn on_accept(&mut self, listener: u64, conn: u64) -> Result<(), Fault> {
        self.call("on-accept", |c, s| c.call_on_accept(s, listener, conn))
    }

    pub fn on_data(&mut self, conn: u64, data: &[u8]) -> Result<(), Fault> {
        self.call("on-data", |c, s| c.call_on_data(s, conn, data))
    }

    pub fn on_eof(&mut self, conn: u64) -> Result<EofAction, Fault> {
        self.call("on-eof", |c, s| c.call_on_eof(s, conn))
    }

    pub fn on_writable(&mut self, conn: u64) -> Result<(), Fault> {
        self.call("on-writable", |c, s| c.call_on_writable(s, conn))
    }

    pub fn on_close(&mut self, conn: u64, reason: &CloseReason) -> Result<(), Fault> {
        self.call("on-close", |c, s| c.call_on_close(s, conn, reason))
    }

    pub fn on_timer(&mut self, timer: u64) -> Result<(), Fault> {
        self.call("on-timer", |c, s| c.call_on_timer(s, timer))
    }

    pub fn on_shutdown(&mut self) -> Result<(), Fault> {
        self.call("on-shutdown", |c, s| c.call_on_shutdown(s))
    }

    fn call<R>(
        &mut self,
        callback: &'static str,
        f: impl FnOnce(&Callbacks, &mut Store<GuestState>) -> wasmtime::Result<R>,
    ) -> Result<R, Fault> {
        self.call_with(callback, self.deadline_ticks, f)
    }

    fn call_with<R>(
        &mut self,
        callback: &'static str,
        ticks: u64,
        f: impl FnOnce(&Callbacks, &mut Store<GuestState>) -> wasmtime::Result<R>,
    ) -> Result<R, Fault> {
        self.store.set_epoch_deadline(ticks);
        self.ticker.enter();
        let result = f(self.handler.wasmloop_handler_callbacks(), &mut self.store);
        self.ticker.exit();
        result.map_err(|e| Fault {
            guest: self.name().clone(),
            callback,
            what: "trapped",
            detail: describe(&e),
        })
    }
}

/// The trap and the wasm backtrace, without the host's Rust backtrace.
fn describe(e: &wasmtime::Error) -> String {
    let mut text = match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => "deadline exceeded (epoch interruption)".to_string(),
        Some(trap) => format!("{trap}"),
        // The store limiter refused a `memory.grow`: say which limit.
        None if e.root_cause().to_string().contains("growing memory") => {
            format!("memory limit reached: {}", e.root_cause())
        }
        None => format!("{:#}", e.root_cause()),
    };
    if let Some(bt) = e.downcast_ref::<WasmBacktrace>() {
        text.push('\n');
        text.push_str(
            bt.to_string()
                .trim_start_matches("error while executing at "),
        );
    }
    text
}
