//! wasmloop's host: the guest runtime, the server that feeds it events, and
//! their configuration. The binary (`main.rs`) only wires these together.

// One `unsafe` call lives here, loading compiled code from the cache
// (runtime/cache.rs), allowed there alone; syscalls live in the reactor.
#![deny(unsafe_code)]

pub mod admin;
pub mod callbacks;
pub mod config;
pub mod descriptors;
pub mod embed;
pub mod grants;
pub mod guest_io;
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
