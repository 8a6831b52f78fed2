//! Write wasmloop guests in Rust.
//!
//! A guest is a type that implements [`Handler`]: [`Handler::init`] builds it
//! from the operator's configuration, and every event the host delivers
//! (a new connection, bytes, room to write, a close, a timer, shutdown, an
//! HTTP request, a WebSocket message) is one method call on it. Every event
//! method has a default that does nothing (except [`Handler::on_eof`], which
//! closes the connection, and [`Handler::on_request`], which answers
//! `501 Not Implemented`), so a guest implements only what it needs.
//! [`export!`] registers the type.
//!
//! Calls never overlap and never nest: the host runs one event loop and no
//! SDK function calls back into the guest. Work triggered by a call (say,
//! [`Connection::notify_writable`]) arrives as a later callback.
//!
//! # Example
//!
//! An echo guest. Build it as a `cdylib` for `wasm32-wasip2`.
//!
//! ```
//! use wasmloop_sdk::{Connection, Handler, Listener, export, warn};
//!
//! struct Echo;
//!
//! impl Handler for Echo {
//!     fn init(_config: &str, _listeners: &[Listener]) -> Result<Self, String> {
//!         Ok(Echo)
//!     }
//!
//!     fn on_data(&mut self, conn: Connection, data: &[u8]) {
//!         // The host takes fewer bytes than offered only when this
//!         // connection's output buffer is full. A real echo keeps the rest
//!         // (see "Backpressure" below); this one gives up on such a peer.
//!         if conn.write(data) != Ok(data.len()) {
//!             warn!("{conn:?} is not reading; aborting it");
//!             let _ = conn.abort();
//!         }
//!     }
//! }
//!
//! export!(Echo);
//! # fn main() {}
//! ```
//!
//! # Backpressure
//!
//! [`Connection::write`] never blocks and never drops bytes silently: the host
//! takes what fits in the connection's output buffer and returns how many
//! bytes it took. When that is less than offered, keep the rest, call
//! [`Connection::pause_reading`] (so TCP flow control slows the peer down)
//! and [`Connection::notify_writable`]; [`Handler::on_writable`] follows once
//! the buffer has drained, where you write the rest and resume reading. The
//! `echo` guest in the wasmloop repository does exactly that.
//!
//! # HTTP and WebSocket
//!
//! On listeners the operator opens with `--listen-http` (or `--listen-ws`,
//! which also allows WebSocket upgrades) the host speaks HTTP/1.1 itself:
//! it parses requests, frames responses, keeps connections alive and, for
//! WebSocket, does the handshake, framing and ping/pong. The guest gets
//! [`Handler::on_request`] with a [`Request`] handle and its
//! [`RequestHead`], and answers with [`Request::respond`] (whole) or
//! [`Request::start`], [`Request::write`] and [`Request::finish`]
//! (streamed, with the same backpressure as connections:
//! [`Request::notify_writable`] and [`Handler::on_response_writable`]).
//! Requests on one connection come one at a time: the next follows when
//! this one's response is finished, which may be in a later callback.
//!
//! An upgrade request ([`RequestHead::is_websocket`]) becomes a
//! [`WebSocket`] with [`Request::accept_websocket`]; whole messages then
//! arrive in [`Handler::on_websocket_message`], and [`WebSocket::send_text`]
//! and [`WebSocket::send_binary`] send whole messages or nothing.
//!
//! ```
//! use wasmloop_sdk::{Handler, Listener, Message, Request, RequestHead, WebSocket, export};
//!
//! struct Greeter;
//!
//! impl Handler for Greeter {
//!     fn init(_config: &str, _listeners: &[Listener]) -> Result<Self, String> {
//!         Ok(Greeter)
//!     }
//!
//!     fn on_request(&mut self, req: Request, head: &RequestHead, _body: &[u8], _end: bool) {
//!         // This fails only for a client that is gone (or for a bad status
//!         // or header, a bug): nobody is left to tell.
//!         let _ = if head.is_websocket() {
//!             req.accept_websocket(None).map(drop)
//!         } else if head.path() == "/" {
//!             req.respond(200, &[("content-type", "text/plain")], b"Hello!\n")
//!         } else {
//!             req.respond(404, &[], b"")
//!         };
//!     }
//!
//!     fn on_websocket_message(&mut self, ws: WebSocket, message: Message<'_>) {
//!         // An echo. `LimitReached`: the client is not reading; drop it.
//!         if ws.send(message).is_err() {
//!             let _ = ws.close(1008, "too slow");
//!         }
//!     }
//! }
//!
//! export!(Greeter);
//! # fn main() {}
//! ```
//!
//! A request with a large body delivers it in parts: the first with
//! [`Handler::on_request`] (`end == false`), the rest in
//! [`Handler::on_request_body`]; `end` marks the last part.
//!
//! # Errors
//!
//! Host calls return [`Result`]`<T, `[`Error`]`>`. Inside a callback about a
//! connection that is not closing, calls on that connection do not fail, so
//! ignoring their result (`let _ = conn.pause_reading();`) is common.

// The SDK itself has no unsafe code; only the generated bindings do.
#![deny(unsafe_code)]

mod export;
mod handle;
mod http;
mod logging;
mod net;
mod time;
mod udp;

pub use http::{Message, Request, RequestHead, WebSocket};
pub use logging::{Level, log};
pub use net::{ConnectError, Connection, Listener};
pub use time::{Instant, Timer};
pub use udp::{DatagramError, UdpSocket};

#[doc(hidden)]
pub use export::Exports;

use std::fmt;

/// Bindings generated from `wit/handler.wit`. Used by [`export!`]; guests
/// should use the wrappers in this crate instead.
#[doc(hidden)]
#[allow(unsafe_code)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "handler",
        // `export!` runs in the guest's crate, which does not depend on
        // wit-bindgen: the generated macro must be public and find the
        // bindings (and wit-bindgen's runtime) through this crate.
        pub_export_macro: true,
        default_bindings_module: "wasmloop_sdk::bindings",
        export_macro_name: "export_callbacks",
        // Imports then take borrowed headers and messages
        // (`&[(&str, &str)]`, `MessageParam<'_>`) instead of owned `String`s,
        // so `Request::respond` and `WebSocket::send` copy nothing on the
        // guest's side. Exports still receive owned values (`MessageResult`).
        ownership: Borrowing { duplicate_if_necessary: true },
    });
}

use bindings::wasmloop::handler::types;

/// A guest: its state, and one method per event.
///
/// Only [`init`](Handler::init) is required. Each `on_*` method is one host
/// callback; the defaults do nothing, except [`on_eof`](Handler::on_eof),
/// which closes the connection, and [`on_request`](Handler::on_request),
/// which answers `501 Not Implemented`.
///
/// Connection events keep an order: [`on_accept`](Handler::on_accept) comes
/// first and [`on_close`](Handler::on_close) last, exactly once each; after
/// `on_close` the handle is dead and must not be used.
///
/// So do request events: [`on_request`](Handler::on_request) comes first,
/// then [`on_request_body`](Handler::on_request_body) until a part with
/// `end`. A [`Request`] is live until its response is finished, it is
/// upgraded to a [`WebSocket`], or
/// [`on_request_closed`](Handler::on_request_closed) says the client is gone.
/// A [`WebSocket`] is live until
/// [`on_websocket_close`](Handler::on_websocket_close).
#[allow(unused_variables)]
pub trait Handler: Sized + 'static {
    /// Builds the guest, before any other call. `config` is the operator's
    /// `--guest-config` string; `listeners` are the sockets granted to this
    /// guest (see [`Listener::address`]). An `Err` stops the guest from
    /// starting and the host reports the message.
    fn init(config: &str, listeners: &[Listener]) -> Result<Self, String>;

    /// A peer connected to `listener`.
    fn on_accept(&mut self, listener: Listener, conn: Connection) {}

    /// Bytes from the peer, in order, at most 64 KiB per call. Not called
    /// while reading is paused.
    fn on_data(&mut self, conn: Connection, data: &[u8]) {}

    /// The peer will send nothing more. The return value says whether the
    /// host closes the connection (after sending buffered output) or keeps it
    /// open so the guest can still write and close it later.
    fn on_eof(&mut self, conn: Connection) -> EofAction {
        EofAction::Close
    }

    /// The output buffer has drained, after [`Connection::notify_writable`].
    fn on_writable(&mut self, conn: Connection) {}

    /// The connection is gone, for `reason`; forget `conn`.
    fn on_close(&mut self, conn: Connection, reason: CloseReason) {}

    /// `timer` fired.
    fn on_timer(&mut self, timer: Timer) {}

    /// The host is stopping and accepts no more connections. The guest may
    /// still write final messages and close connections; afterwards the host
    /// flushes output for a bounded time and closes what is left with
    /// [`CloseReason::HostShutdown`].
    fn on_shutdown(&mut self) {}

    /// Hot reload in migrate mode (`--reload-mode migrate`): the state to
    /// hand to the next version, in any encoding the guest chooses. The
    /// default, `None`, means "cannot migrate": the host then drains this
    /// version instead.
    fn snapshot(&mut self) -> Option<Vec<u8>> {
        None
    }

    /// Builds the next version from [`Handler::snapshot`]'s bytes, instead of
    /// [`Handler::init`]. The old version's connections and timers are
    /// already this one's, with the same handles; no `on_accept` comes for
    /// them. An error keeps the old version running.
    fn restore(config: &str, listeners: &[Listener], state: &[u8]) -> Result<Self, String> {
        let _ = (config, listeners, state);
        Err("this guest does not implement Handler::restore".into())
    }

    /// An outbound connect started by [`Connection::connect`] finished.
    /// On `Ok`, `conn` is a connection like an accepted one: `on_data`,
    /// `on_close` and the rest follow. On `Err`, the handle is dead and no
    /// `on_close` follows.
    fn on_connect(&mut self, conn: Connection, outcome: Result<(), ConnectError>) {}

    /// A datagram arrived on `socket` (see [`UdpSocket::bind`]) from `peer`,
    /// e.g. `127.0.0.1:5353`. The host drops datagrams from peers that are
    /// not on the guest's allowlist before they get here.
    fn on_datagram(&mut self, socket: UdpSocket, peer: &str, data: &[u8]) {}

    /// An HTTP request arrived on an HTTP or WebSocket listener
    /// (`--listen-http`, `--listen-ws`). When `end` is true, `body` is the
    /// whole body (bodies up to 64 KiB that arrived with the head come this
    /// way); otherwise it is the first part and
    /// [`on_request_body`](Handler::on_request_body) brings the rest.
    ///
    /// Answer now or later, with [`Request::respond`] or a streamed response
    /// ([`Request::start`]); the next request on the same connection waits
    /// until this response is finished.
    ///
    /// The default answers `501 Not Implemented`, so a client of a guest
    /// without HTTP support is never left waiting.
    fn on_request(&mut self, req: Request, head: &RequestHead, body: &[u8], end: bool) {
        let _ = req.respond(501, &[], b"");
    }

    /// More of `req`'s body, in order; `end` on the last part.
    fn on_request_body(&mut self, req: Request, data: &[u8], end: bool) {}

    /// The output buffer has drained, after [`Request::notify_writable`].
    fn on_response_writable(&mut self, req: Request) {}

    /// The connection closed before `req`'s response was finished: the
    /// handle is dead; forget it.
    fn on_request_closed(&mut self, req: Request) {}

    /// A whole message arrived on `ws` (text is valid UTF-8, checked by the
    /// host). The message borrows the host's buffer: copy what you keep.
    fn on_websocket_message(&mut self, ws: WebSocket, message: Message<'_>) {}

    /// The output buffer has drained, after [`WebSocket::notify_writable`].
    fn on_websocket_writable(&mut self, ws: WebSocket) {}

    /// `ws` is gone: the close handshake finished (with the peer's `code`
    /// and `reason`, or the guest's if it began), or the connection dropped
    /// (code 1006, empty reason). The handle is dead; forget it.
    fn on_websocket_close(&mut self, ws: WebSocket, code: u16, reason: &str) {}
}

/// Shorthand for results of host calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a host call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// The handle is not one of this guest's live objects: never given,
    /// already closed (after `on_close`), or a cancelled or finished timer.
    InvalidHandle,
    /// No more output is accepted: the connection is closing or its write
    /// side is shut, a response was already started (or finished), or a
    /// WebSocket's close handshake has begun.
    Closed,
    /// An argument is out of range, for example a zero timer interval.
    InvalidArgument,
    /// A limit was reached: a per-guest one (too many timers), or an output
    /// buffer that cannot take a whole response or WebSocket message now.
    LimitReached,
}

impl From<types::ErrorCode> for Error {
    fn from(code: types::ErrorCode) -> Self {
        match code {
            types::ErrorCode::InvalidHandle => Error::InvalidHandle,
            types::ErrorCode::Closed => Error::Closed,
            types::ErrorCode::InvalidArgument => Error::InvalidArgument,
            types::ErrorCode::LimitReached => Error::LimitReached,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::InvalidHandle => "invalid handle",
            Error::Closed => "closed for writing",
            Error::InvalidArgument => "invalid argument",
            Error::LimitReached => "limit reached",
        })
    }
}

impl std::error::Error for Error {}

/// Why a connection ended, as given to [`Handler::on_close`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The guest called [`Connection::close`] or [`Connection::abort`].
    Local,
    /// The peer closed its side and [`Handler::on_eof`] returned
    /// [`EofAction::Close`].
    PeerClosed,
    /// The peer reset the connection.
    Reset,
    /// Any other socket error, as the OS describes it.
    Error(String),
    /// The host closed the connection while shutting down.
    HostShutdown,
}

impl From<types::CloseReason> for CloseReason {
    fn from(reason: types::CloseReason) -> Self {
        match reason {
            types::CloseReason::Local => CloseReason::Local,
            types::CloseReason::PeerClosed => CloseReason::PeerClosed,
            types::CloseReason::Reset => CloseReason::Reset,
            types::CloseReason::Error(message) => CloseReason::Error(message),
            types::CloseReason::HostShutdown => CloseReason::HostShutdown,
        }
    }
}

/// What the host does after [`Handler::on_eof`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EofAction {
    /// Send buffered output, then close; `on_close` gets
    /// [`CloseReason::PeerClosed`].
    Close,
    /// Keep the connection open for writing; the guest closes it later.
    KeepOpen,
}

impl From<EofAction> for types::EofAction {
    fn from(action: EofAction) -> Self {
        match action {
            EofAction::Close => types::EofAction::Close,
            EofAction::KeepOpen => types::EofAction::KeepOpen,
        }
    }
}
