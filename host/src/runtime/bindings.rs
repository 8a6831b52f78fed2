//! Rust types generated from `wit/handler.wit`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "handler",
});

pub use exports::wasmloop::handler::callbacks::Guest as Callbacks;
pub use wasmloop::handler::types::{CloseReason, EofAction, ErrorCode, Level, ListenerInfo};
