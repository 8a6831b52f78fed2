//! The I/O core's own error and close-reason types. They mirror the WIT
//! contract's `error-code` and `close-reason` (`wit/handler.wit`) so the
//! runtime converts them one to one at the wasm boundary, while native
//! handlers and everything below the runtime never see generated types.

use std::io;

/// Why an operation on a handle was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ErrorCode {
    /// The handle names none of the caller's live objects.
    #[error("invalid handle")]
    InvalidHandle,
    /// The connection is closing or its write side is shut.
    #[error("closed")]
    Closed,
    /// An argument is out of range or malformed.
    #[error("invalid argument")]
    InvalidArgument,
    /// A limit was reached (an output buffer, a table).
    #[error("limit reached")]
    LimitReached,
}

/// Why a connection ended, as its owner's `on-close` is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The owner called `close` or `abort` (or the host closed it for a
    /// protocol reason after answering).
    Local,
    /// The peer closed its side and the owner let the host close ours.
    PeerClosed,
    /// The peer reset the connection (ECONNRESET, EPIPE).
    Reset,
    /// Any other socket error, as the OS describes it.
    Error(String),
    /// The host is shutting down and closed the connection itself.
    HostShutdown,
}

/// How an I/O error ends a connection.
pub fn close_reason(error: &io::Error) -> CloseReason {
    match error.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionAborted => {
            CloseReason::Reset
        }
        _ => CloseReason::Error(crate::os_error::describe(error)),
    }
}
