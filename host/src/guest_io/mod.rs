//! What the host keeps for one guest or native handler, with no
//! WebAssembly in it.

pub mod log;

pub use log::GuestLog;
