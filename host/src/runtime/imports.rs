//! The host side of the WIT imports, one section per interface. Every
//! handle a guest passes is checked against its own tables.

use std::net::SocketAddr;
use std::time::Duration;

use wasmloop_reactor::Token;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, WasmList};

use wasmloop_io::{CloseReason, ErrorCode};

use crate::runtime::bindings::Level;
use crate::runtime::bindings::wasmloop::handler::{clock, datagrams, log, outbound, timers};
use wasmloop_io::{timer_handle, timer_id};

use crate::runtime::state::GuestState;

type Reply<T> = wasmtime::Result<(Result<T, crate::runtime::bindings::ErrorCode>,)>;

/// An I/O core result as the contract's reply.
fn reply<T>(result: Result<T, ErrorCode>) -> Reply<T> {
    Ok((result.map_err(Into::into),))
}

/// The shortest interval a repeating timer may have: shorter ones would let
/// a guest keep the loop busy without doing anything.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// `wasmloop:handler/connections`, written by hand rather than through the
/// generated trait so `write` can take the bytes as a `WasmList`: they go
/// from guest memory to the socket without an intermediate `Vec`. Each
/// import is one call of the [`GuestState`] method below that a native
/// handler's `Cx` calls too: one implementation per operation.
pub fn add_connections(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    let mut i = linker.instance("wasmloop:handler/connections@0.1.0")?;
    i.func_wrap("write", |store: StoreContextMut<'_, GuestState>, (h, data): (u64, WasmList<u8>)| -> Reply<u32> {
        // A guest's list is at most 4 GiB, so what is taken fits in a u32.
        reply(store.data().write(h, data.as_le_slice(&store)).map(|n| n as u32))
    })?;
    i.func_wrap("notify-writable", |store: StoreContextMut<'_, GuestState>, (h,): (u64,)| -> Reply<()> {
        reply(store.data().notify_writable(h))
    })?;
    i.func_wrap("pause-reading", |store: StoreContextMut<'_, GuestState>, (h,): (u64,)| -> Reply<()> {
        reply(store.data().pause_reading(h))
    })?;
    i.func_wrap("resume-reading", |store: StoreContextMut<'_, GuestState>, (h,): (u64,)| -> Reply<()> {
        reply(store.data().resume_reading(h))
    })?;
    i.func_wrap("shutdown-write", |store: StoreContextMut<'_, GuestState>, (h,): (u64,)| -> Reply<()> {
        reply(store.data().shutdown_write(h))
    })?;
    i.func_wrap("close", |store: StoreContextMut<'_, GuestState>, (h,): (u64,)| -> Reply<()> {
        reply(store.data().close(h))
    })?;
    i.func_wrap("abort", |store: StoreContextMut<'_, GuestState>, (h,): (u64,)| -> Reply<()> {
        reply(store.data().abort(h))
    })?;
    i.func_wrap("buffered", |store: StoreContextMut<'_, GuestState>, (h,): (u64,)| -> Reply<u32> {
        // At most the per-connection output limit, a `usize` from the config.
        reply(store.data().buffered(h).map(|n| u32::try_from(n).unwrap_or(u32::MAX)))
    })?;
    i.func_wrap("peer-address", |store: StoreContextMut<'_, GuestState>, (h,): (u64,)| -> Reply<String> {
        reply(store.data().peer_address(h).map(address))
    })?;
    i.func_wrap("local-address", |store: StoreContextMut<'_, GuestState>, (h,): (u64,)| -> Reply<String> {
        reply(store.data().local_address(h).map(address))
    })?;
    i.func_wrap("listener-address", |store: StoreContextMut<'_, GuestState>, (h,): (u64,)| -> Reply<String> {
        reply(store.data().listener(h).map(|l| l.address.clone()))
    })?;
    Ok(())
}

/// An address as the guest sees it; empty if the OS cannot tell (the peer
/// already reset the connection).
fn address(addr: Option<SocketAddr>) -> String {
    addr.map(|a| a.to_string()).unwrap_or_default()
}

/// The operations of `connections`, shared by the wasm imports above and
/// native handlers (`runtime/native.rs`). The WIT docs of each function are
/// the contract.
impl GuestState {
    /// Takes what fits of `data` and returns how much that is (`write`).
    pub fn write(&self, h: u64, data: &[u8]) -> Result<usize, ErrorCode> {
        let conn = self.connection(h)?;
        if !conn.accepts_output() {
            return Err(ErrorCode::Closed);
        }
        let taken = conn.write(data, &self.output);
        if conn.failed.borrow().is_some() {
            // The socket failed: the host finishes the connection after the
            // callback, and the bytes are lost with it.
            let _ = self.touch(h);
            return Err(ErrorCode::Closed);
        }
        Ok(taken)
    }

    pub fn notify_writable(&self, h: u64) -> Result<(), ErrorCode> {
        self.touch(h).map(|c| c.notify_writable.set(true))
    }

    pub fn pause_reading(&self, h: u64) -> Result<(), ErrorCode> {
        self.connection(h).map(|c| c.paused.set(true))
    }

    pub fn resume_reading(&self, h: u64) -> Result<(), ErrorCode> {
        self.touch(h).map(|c| {
            c.paused.set(false);
            c.resumed.set(true);
        })
    }

    pub fn shutdown_write(&self, h: u64) -> Result<(), ErrorCode> {
        self.touch(h).and_then(|c| {
            if c.accepts_output() {
                c.shutdown_requested.set(true);
                Ok(())
            } else {
                Err(ErrorCode::Closed)
            }
        })
    }

    pub fn close(&self, h: u64) -> Result<(), ErrorCode> {
        self.touch(h).map(|c| {
            c.closing.borrow_mut().get_or_insert(CloseReason::Local);
        })
    }

    pub fn abort(&self, h: u64) -> Result<(), ErrorCode> {
        self.touch(h).map(|c| {
            c.abort.set(true);
            *c.closing.borrow_mut() = Some(CloseReason::Local);
        })
    }

    pub fn buffered(&self, h: u64) -> Result<usize, ErrorCode> {
        self.connection(h).map(|c| c.buffered())
    }

    /// The peer's address; `None` if the OS cannot tell (already reset).
    pub fn peer_address(&self, h: u64) -> Result<Option<SocketAddr>, ErrorCode> {
        self.connection(h).map(|c| c.transport.peer_addr().ok())
    }

    /// Our side's address; `None` if the OS cannot tell.
    pub fn local_address(&self, h: u64) -> Result<Option<SocketAddr>, ErrorCode> {
        self.connection(h).map(|c| c.transport.local_addr().ok())
    }

    /// Fires `on-timer` once, `delay` from now (`timers.set-timeout`).
    pub fn add_timeout(&mut self, delay: Duration) -> Result<u64, ErrorCode> {
        self.start_timer(delay, None)
    }

    /// Fires `on-timer` every `interval`, at least `MIN_INTERVAL` (1 ms)
    /// (`timers.set-interval`).
    pub fn add_interval(&mut self, interval: Duration) -> Result<u64, ErrorCode> {
        if interval < MIN_INTERVAL {
            return Err(ErrorCode::InvalidArgument);
        }
        self.start_timer(interval, Some(interval))
    }

    /// `timers.cancel`.
    pub fn cancel_timer(&mut self, t: u64) -> Result<(), ErrorCode> {
        if self.timers.cancel(timer_id(t)) { Ok(()) } else { Err(ErrorCode::InvalidHandle) }
    }

    fn start_timer(&mut self, delay: Duration, interval: Option<Duration>) -> Result<u64, ErrorCode> {
        if self.timers.len() >= self.limits.max_timers {
            return Err(ErrorCode::LimitReached);
        }
        let deadline = std::time::Instant::now().checked_add(delay).ok_or(ErrorCode::InvalidArgument)?;
        Ok(timer_handle(self.timers.insert(deadline, interval, Token(0))))
    }
}

impl timers::Host for GuestState {
    fn set_timeout(&mut self, delay: u64) -> Result<u64, crate::runtime::bindings::ErrorCode> {
        Ok(self.add_timeout(Duration::from_nanos(delay))?)
    }

    fn set_interval(&mut self, interval: u64) -> Result<u64, crate::runtime::bindings::ErrorCode> {
        Ok(self.add_interval(Duration::from_nanos(interval))?)
    }

    fn cancel(&mut self, t: u64) -> Result<(), crate::runtime::bindings::ErrorCode> {
        Ok(self.cancel_timer(t)?)
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
        self.log.line(level, "log", &message);
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
