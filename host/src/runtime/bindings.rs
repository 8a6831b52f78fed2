//! Rust types generated from `wit/handler.wit`.
//!
//! The host is generated from the `handler` world (every interface), but it
//! requires only the `callbacks` export: the others are looked up one by one
//! and called only if a guest has them (see `load.rs`).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "handler",
});

pub use self::wasmloop::handler::datagrams::DatagramError;
pub use self::wasmloop::handler::http::Message;
pub use self::wasmloop::handler::outbound::ConnectError;
pub use self::wasmloop::handler::types::{CloseReason, EofAction, ErrorCode, Level, ListenerInfo};
pub use exports::wasmloop::handler::callbacks::{Guest as Callbacks, GuestIndices as CallbacksIndices};
pub use exports::wasmloop::handler::datagram_callbacks::{
    Guest as DatagramCallbacks, GuestIndices as DatagramCallbacksIndices,
};
pub use exports::wasmloop::handler::http_callbacks::{Guest as HttpCallbacks, GuestIndices as HttpCallbacksIndices};
pub use exports::wasmloop::handler::migration::{Guest as Migration, GuestIndices as MigrationIndices};
pub use exports::wasmloop::handler::outbound_callbacks::{
    Guest as OutboundCallbacks, GuestIndices as OutboundCallbacksIndices,
};
