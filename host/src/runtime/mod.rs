//! The guest runtime: wasmtime, our WIT imports, and calling guests. It
//! knows nothing of epoll; the server drives it.

pub mod bindings;
mod guest;
mod imports;
mod load;
mod state;
mod stdio;
mod ticker;
mod wasi;

pub use guest::{Fault, Guest};
pub use imports::monotonic_nanos;
pub use load::{LoadError, Module, Runtime, RuntimeConfig};
pub use state::{ConnKey, GuestLimits, GuestState, ListenerGrant};
