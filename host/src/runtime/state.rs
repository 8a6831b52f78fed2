//! The store's data, in the shape of wasmtime-wasi's `WasiView`: the
//! guest's wasm-free I/O context ([`GuestIo`], everything its imports
//! reach), and beside it what only a wasm guest has: its WASI context and
//! resource table, its memory limiter, and the buffer headers are lifted
//! into. A guest can reach only what is in its own store.

use std::cell::RefCell;
use std::sync::Arc;

use wasmtime::component::{ResourceTable, WasmStr};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::guest_io::{GuestIo, GuestLog, GuestSetup};
use crate::runtime::limiter::MemoryLimiter;

pub struct GuestState {
    /// Connections, timers, sockets, budgets, limits: what the imports
    /// work on, shared in shape with native handlers.
    pub io: GuestIo,
    /// Reused for the guest's response headers as lifted from its memory
    /// (see `runtime/http.rs`).
    pub header_pairs: RefCell<Vec<(WasmStr, WasmStr)>>,
    /// The store's limiter: memories and tables against `max_memory`.
    pub limiter: MemoryLimiter,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl GuestState {
    pub fn new(setup: &GuestSetup, log: Arc<GuestLog>, wasi: WasiCtx) -> GuestState {
        GuestState {
            io: GuestIo::new(setup, log),
            header_pairs: RefCell::new(Vec::new()),
            limiter: MemoryLimiter::new(setup.limits.max_memory, setup.metrics.clone()),
            wasi,
            table: ResourceTable::new(),
        }
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}
