//! wasmloop's I/O core: what the host keeps for each connection of a guest
//! or native handler, with no WebAssembly in it (this crate does not
//! depend on wasmtime, so that holds by construction).
//!
//! - [`transport`]: the seam under every connection (plain TCP today; TLS
//!   becomes one more kind there, invisible to the layers above).
//! - [`conn`]: a connection — transport, output buffer, and the flags its
//!   owner's calls set for the server to settle after the callback.
//! - [`budget`]: an owner's output budget over all its connections.
//! - [`output`]: the sink protocol code writes to ([`Output`]), so the
//!   HTTP state machine runs without sockets in tests.
//! - [`http`]: one HTTP/1.1 connection and the WebSocket it may become,
//!   as a state machine: bytes and guest calls in, steps out.
//! - [`handles`]: the integer handles owners hold, one generational table
//!   per kind.
//! - [`error`]: this layer's error and close-reason types.
//!
//! It knows nothing of the server (routes, fairness, fault policy), the
//! runtime (wasmtime, WIT bindings) or metrics (it reports bytes sent to a
//! [`Meter`]).

pub mod budget;
pub mod conn;
pub mod error;
pub mod handles;
pub mod http;
pub mod os_error;
pub mod output;
pub mod transport;

pub use budget::{Meter, OutputBudget};
pub use conn::{Connection, Out, Settled, UNREGISTERED};
pub use error::{CloseReason, ErrorCode, close_reason};
pub use handles::{ConnKey, Handle, ReqKey, UdpKey, WsKey, listener_handle, listener_index, timer_handle, timer_id};
pub use output::Output;
pub use transport::Transport;
