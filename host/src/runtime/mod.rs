//! The guest runtime: wasmtime, our WIT imports, and calling guests. It
//! knows nothing of epoll; the server drives it.

pub(crate) mod bindings;
mod cache;
mod check;
mod guest;
mod http;
mod imports;
mod instance;
mod limiter;
mod load;
pub mod native;
mod poll;
mod sockets;
mod state;
mod stdio;
mod ticker;
mod wasi;

pub use crate::guest_io::{GuestIo, GuestLimits, GuestSetup, ListenerGrant, UdpSocket};
pub use cache::{ArtifactCache, CacheError};
pub use check::{Import, Report, check};
pub use guest::Fault;
pub(crate) use guest::{Guest, RequestHead};
pub(crate) use http::recycle;
pub(crate) use instance::Instance;
pub use load::{LoadError, Loader, Module, Runtime};
pub(crate) use sockets::connect_error;
pub(crate) use wasmloop_io::{ConnKey, Handle, ReqKey, UdpKey, WsKey, listener_handle, timer_handle};

/// Runs `f` (the event loop) with a current-thread tokio context entered.
///
/// wasmtime-wasi's synchronous WASI calls (a guest writing to stdout, say)
/// `block_on` their future in the current tokio context, and without one
/// they start a global multi-threaded runtime with worker threads on first
/// use. Our WASI futures are ready at once, so a current-thread context on
/// the loop thread serves them with no threads at all.
pub fn on_loop_thread<R>(f: impl FnOnce() -> R) -> std::io::Result<R> {
    let tokio = tokio::runtime::Builder::new_current_thread().build()?;
    let _entered = tokio.enter();
    Ok(f())
}
