//! The host side of the WIT imports, one section per interface. Every
//! handle a guest passes is checked against its own tables.

use std::net::SocketAddr;
use std::time::Duration;

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, WasmList};

use wasmloop_io::ErrorCode;

use crate::runtime::bindings::Level;
use crate::runtime::bindings::wasmloop::handler::{clock, datagrams, log, outbound, timers};

use crate::runtime::state::GuestState;

pub(super) type Reply<T> = wasmtime::Result<(Result<T, crate::runtime::bindings::ErrorCode>,)>;

/// An I/O core result as the contract's reply.
pub(super) fn reply<T>(result: Result<T, ErrorCode>) -> Reply<T> {
    Ok((result.map_err(Into::into),))
}

/// `wasmloop:handler/connections`, written by hand rather than through the
/// generated trait so `write` can take the bytes as a `WasmList`: they go
/// from guest memory to the socket without an intermediate `Vec`. Each
/// import is one call of the `GuestIo` method (`guest_io/connections.rs`)
/// that a native handler's `Cx` calls too: one implementation per operation.
pub fn add_connections(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    let mut i = linker.instance("wasmloop:handler/connections@0.1.0")?;
    i.func_wrap("write", |store: StoreContextMut<'_, GuestState>, (h, data): (u64, WasmList<u8>)| -> Reply<u32> {
        // A guest's list is at most 4 GiB, so what is taken fits in a u32.
        reply(store.data().io.write(h, data.as_le_slice(&store)).map(|n| n as u32))
    })?;
    i.func_wrap("notify-writable", |store: StoreContextMut<'_, GuestState>, (h,): (u64,)| -> Reply<()> {
        reply(store.data().io.notify_writable(h))
    })?;
    i.func_wrap("pause-reading", |store: StoreContextMut<'_, GuestState>, (h,): (u64,)| -> Reply<()> {
        reply(store.data().io.pause_reading(h))
    })?;
    i.func_wrap("resume-reading", |store: StoreContextMut<'_, GuestState>, (h,): (u64,)| -> Reply<()> {
        reply(store.data().io.resume_reading(h))
    })?;
    i.func_wrap("shutdown-write", |store: StoreContextMut<'_, GuestState>, (h,): (u64,)| -> Reply<()> {
        reply(store.data().io.shutdown_write(h))
    })?;
    i.func_wrap("close", |store: StoreContextMut<'_, GuestState>, (h,): (u64,)| -> Reply<()> {
        reply(store.data().io.close(h))
    })?;
    i.func_wrap("abort", |store: StoreContextMut<'_, GuestState>, (h,): (u64,)| -> Reply<()> {
        reply(store.data().io.abort(h))
    })?;
    i.func_wrap("buffered", |store: StoreContextMut<'_, GuestState>, (h,): (u64,)| -> Reply<u32> {
        // At most the per-connection output limit, a `usize` from the config.
        reply(store.data().io.buffered(h).map(|n| u32::try_from(n).unwrap_or(u32::MAX)))
    })?;
    i.func_wrap("peer-address", |store: StoreContextMut<'_, GuestState>, (h,): (u64,)| -> Reply<String> {
        reply(store.data().io.peer_address(h).map(address))
    })?;
    i.func_wrap("local-address", |store: StoreContextMut<'_, GuestState>, (h,): (u64,)| -> Reply<String> {
        reply(store.data().io.local_address(h).map(address))
    })?;
    i.func_wrap("listener-address", |store: StoreContextMut<'_, GuestState>, (h,): (u64,)| -> Reply<String> {
        reply(store.data().io.listener(h).map(|l| l.address.clone()))
    })?;
    Ok(())
}

/// An address as the guest sees it; empty if the OS cannot tell (the peer
/// already reset the connection).
pub(super) fn address(addr: Option<SocketAddr>) -> String {
    addr.map(|a| a.to_string()).unwrap_or_default()
}

impl timers::Host for GuestState {
    fn set_timeout(&mut self, delay: u64) -> Result<u64, crate::runtime::bindings::ErrorCode> {
        Ok(self.io.add_timeout(Duration::from_nanos(delay))?)
    }

    fn set_interval(&mut self, interval: u64) -> Result<u64, crate::runtime::bindings::ErrorCode> {
        Ok(self.io.add_interval(Duration::from_nanos(interval))?)
    }

    fn cancel(&mut self, t: u64) -> Result<(), crate::runtime::bindings::ErrorCode> {
        Ok(self.io.cancel_timer(t)?)
    }
}

impl log::Host for GuestState {
    fn log(&mut self, level: Level, message: String) {
        let level = match level {
            Level::Trace => tracing::Level::TRACE,
            Level::Debug => tracing::Level::DEBUG,
            Level::Info => tracing::Level::INFO,
            Level::Warn => tracing::Level::WARN,
            Level::Error => tracing::Level::ERROR,
        };
        self.io.log.line(level, "log", &message);
    }
}

impl clock::Host for GuestState {
    fn now(&mut self) -> u64 {
        monotonic_nanos()
    }
}

/// The OS monotonic clock in nanoseconds (CLOCK_MONOTONIC): the same
/// numbers another process on the machine reads.
pub fn monotonic_nanos() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

struct HasSelf;
impl wasmtime::component::HasData for HasSelf {
    type Data<'a> = &'a mut GuestState;
}

/// All of our interfaces.
pub fn add_to_linker(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    add_connections(linker)?;
    crate::runtime::bindings::wasmloop::handler::types::add_to_linker::<GuestState, HasSelf>(linker, |s| s)?;
    timers::add_to_linker::<GuestState, HasSelf>(linker, |s| s)?;
    log::add_to_linker::<GuestState, HasSelf>(linker, |s| s)?;
    clock::add_to_linker::<GuestState, HasSelf>(linker, |s| s)?;
    crate::runtime::http::add_http(linker)?;
    // `outbound` and `datagrams`: runtime/sockets.rs.
    outbound::add_to_linker::<GuestState, HasSelf>(linker, |s| s)?;
    datagrams::add_to_linker::<GuestState, HasSelf>(linker, |s| s)?;
    Ok(())
}

impl crate::runtime::bindings::wasmloop::handler::types::Host for GuestState {}
