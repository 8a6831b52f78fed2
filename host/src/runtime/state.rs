//! The store's data: everything a guest can reach through its imports, and
//! nothing else. Like wasmtime-wasi's `WasiView`, one struct per store.

use std::cell::RefCell;
use std::sync::Arc;

use slotmap::{Key, KeyData, SlotMap, new_key_type};
use wasmloop_reactor::TimerHeap;
use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::connection::Connection;
use crate::runtime::bindings::ErrorCode;

new_key_type! {
    /// A guest's connection handle. Its integer form (slot + generation) is
    /// what the guest holds; a stale or forged integer finds nothing.
    pub struct ConnKey;
}

impl ConnKey {
    pub fn handle(self) -> u64 {
        self.data().as_ffi()
    }

    pub fn from_handle(handle: u64) -> ConnKey {
        KeyData::from_ffi(handle).into()
    }
}

/// A listener granted to the guest. Its handle is its index + 1.
pub struct ListenerGrant {
    pub address: String,
}

/// Limits that apply to one guest.
#[derive(Clone, Debug)]
pub struct GuestLimits {
    /// Bytes the host buffers per connection beyond what the kernel takes.
    pub max_output: usize,
    pub max_timers: usize,
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
    pub store_limits: StoreLimits,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl GuestState {
    pub fn new(
        name: Arc<str>,
        listeners: Vec<ListenerGrant>,
        limits: GuestLimits,
        store_limits: StoreLimits,
        wasi: WasiCtx,
    ) -> GuestState {
        GuestState {
            name,
            connections: SlotMap::with_key(),
            listeners,
            timers: TimerHeap::new(),
            dirty: RefCell::new(Vec::new()),
            limits,
            store_limits,
            wasi,
            table: ResourceTable::new(),
        }
    }

    /// The live connection behind `handle`, if it is this guest's.
    pub fn connection(&self, handle: u64) -> Result<&Connection, ErrorCode> {
        self.connections
            .get(ConnKey::from_handle(handle))
            .ok_or(ErrorCode::InvalidHandle)
    }

    /// Like [`GuestState::connection`], and marks the connection for the
    /// host's attention after the callback.
    pub fn touch(&self, handle: u64) -> Result<&Connection, ErrorCode> {
        let key = ConnKey::from_handle(handle);
        let conn = self.connections.get(key).ok_or(ErrorCode::InvalidHandle)?;
        self.dirty.borrow_mut().push(key);
        Ok(conn)
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
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
