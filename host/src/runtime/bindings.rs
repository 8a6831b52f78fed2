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

/// The I/O core's error, as the contract spells it (one to one).
impl From<wasmloop_io::ErrorCode> for ErrorCode {
    fn from(e: wasmloop_io::ErrorCode) -> ErrorCode {
        match e {
            wasmloop_io::ErrorCode::InvalidHandle => ErrorCode::InvalidHandle,
            wasmloop_io::ErrorCode::Closed => ErrorCode::Closed,
            wasmloop_io::ErrorCode::InvalidArgument => ErrorCode::InvalidArgument,
            wasmloop_io::ErrorCode::LimitReached => ErrorCode::LimitReached,
        }
    }
}

/// The I/O core's close reason, as the contract spells it (one to one).
impl From<&wasmloop_io::CloseReason> for CloseReason {
    fn from(reason: &wasmloop_io::CloseReason) -> CloseReason {
        match reason {
            wasmloop_io::CloseReason::Local => CloseReason::Local,
            wasmloop_io::CloseReason::PeerClosed => CloseReason::PeerClosed,
            wasmloop_io::CloseReason::Reset => CloseReason::Reset,
            wasmloop_io::CloseReason::Error(text) => CloseReason::Error(text.clone()),
            wasmloop_io::CloseReason::HostShutdown => CloseReason::HostShutdown,
        }
    }
}

/// The I/O context's connect error, as the contract spells it (one to one).
impl From<crate::guest_io::ConnectError> for ConnectError {
    fn from(e: crate::guest_io::ConnectError) -> ConnectError {
        use crate::guest_io::ConnectError as E;
        match e {
            E::Denied => ConnectError::Denied,
            E::InvalidAddress => ConnectError::InvalidAddress,
            E::LimitReached => ConnectError::LimitReached,
            E::Refused => ConnectError::Refused,
            E::TimedOut => ConnectError::TimedOut,
            E::Unreachable => ConnectError::Unreachable,
            E::Other => ConnectError::Other,
        }
    }
}

/// The I/O context's datagram error, as the contract spells it (one to one).
impl From<crate::guest_io::DatagramError> for DatagramError {
    fn from(e: crate::guest_io::DatagramError) -> DatagramError {
        use crate::guest_io::DatagramError as E;
        match e {
            E::Denied => DatagramError::Denied,
            E::InvalidHandle => DatagramError::InvalidHandle,
            E::InvalidAddress => DatagramError::InvalidAddress,
            E::TooLarge => DatagramError::TooLarge,
            E::WouldBlock => DatagramError::WouldBlock,
            E::Other => DatagramError::Other,
        }
    }
}
