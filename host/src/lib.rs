//! wasmloop's host: the guest runtime, the server that feeds it events, and
//! their configuration. The binary (`main.rs`) only wires these together.
//!
//! What an embedder uses: [`embed::Host`] (the runtime, one loop and its
//! server), [`server::GuestSpec`]/[`server::NativeSpec`] and their
//! [`limits::Limits`], [`grants`], [`config::Policy`], [`native`] handlers,
//! [`on_calloop`] for a calloop loop, [`metrics`] and [`admin`] for
//! observability. [`workers`], [`descriptors`] and the file format in
//! [`config`] are what `host run` adds on top; they are public for the
//! binary. The rest (the wasm bindings, a guest's I/O context, the
//! server's parts) is internal.

// One `unsafe` call lives here, loading compiled code from the cache
// (runtime/cache.rs), allowed there alone; syscalls live in the reactor.
#![deny(unsafe_code)]

pub mod admin;
mod callbacks;
pub mod config;
pub mod descriptors;
pub mod embed;
pub mod grants;
mod guest_io;
pub mod limits;
pub mod metrics;
pub mod on_calloop;
pub use wasmloop_io::os_error;
pub mod runtime;
pub mod server;
mod sys;
pub mod workers;

#[cfg(test)]
mod layers;

pub use runtime::native;
