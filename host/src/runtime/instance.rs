//! What the server calls: a running guest, either a wasm instance
//! ([`Guest`]) or a native Rust handler ([`NativeGuest`]). Both have a
//! [`GuestState`], so the server settles, times out and tears down either
//! alike; a callback costs one `match` more than calling the wasm guest.

use std::sync::Arc;

use wasmloop_io::CloseReason;

use crate::runtime::bindings::{ConnectError, EofAction, Message};
use crate::runtime::guest::{Fault, Guest, RequestHead};
use crate::runtime::native::NativeGuest;
use crate::runtime::state::GuestState;

#[allow(clippy::large_enum_variant, reason = "the wasm guest stays inline: every callback goes through it")]
pub enum Instance {
    Wasm(Guest),
    /// Boxed: its state is inline, while a wasm guest's is in its store.
    Native(Box<NativeGuest>),
}

/// Calls a wasm guest; `native` is what a native handler does instead.
macro_rules! wasm_only {
    ($self:ident, $wasm:ident => $call:expr, native => $native:expr) => {
        match $self {
            Instance::Wasm($wasm) => $call,
            Instance::Native(_) => $native,
        }
    };
}

macro_rules! both {
    ($self:ident, $guest:ident => $call:expr) => {
        match $self {
            Instance::Wasm($guest) => $call,
            Instance::Native($guest) => $call,
        }
    };
}

impl Instance {
    pub fn name(&self) -> &Arc<str> {
        both!(self, g => g.name())
    }

    #[inline]
    pub fn state(&self) -> &GuestState {
        both!(self, g => g.state())
    }

    #[inline]
    pub fn state_mut(&mut self) -> &mut GuestState {
        both!(self, g => g.state_mut())
    }

    #[inline]
    pub fn on_accept(&mut self, listener: u64, conn: u64) -> Result<(), Fault> {
        both!(self, g => g.on_accept(listener, conn))
    }

    #[inline]
    pub fn on_data(&mut self, conn: u64, data: &[u8]) -> Result<(), Fault> {
        both!(self, g => g.on_data(conn, data))
    }

    #[inline]
    pub fn on_eof(&mut self, conn: u64) -> Result<EofAction, Fault> {
        both!(self, g => g.on_eof(conn))
    }

    #[inline]
    pub fn on_writable(&mut self, conn: u64) -> Result<(), Fault> {
        both!(self, g => g.on_writable(conn))
    }

    pub fn on_close(&mut self, conn: u64, reason: &CloseReason) -> Result<(), Fault> {
        both!(self, g => g.on_close(conn, reason))
    }

    pub fn on_timer(&mut self, timer: u64) -> Result<(), Fault> {
        both!(self, g => g.on_timer(timer))
    }

    pub fn on_shutdown(&mut self) -> Result<(), Fault> {
        both!(self, g => g.on_shutdown())
    }

    // A native handler has no outbound sockets, HTTP listeners or migration
    // state: the server never has these events for it.

    pub fn has_datagrams(&self) -> bool {
        wasm_only!(self, g => g.has_datagrams(), native => false)
    }

    pub fn has_http(&self) -> bool {
        wasm_only!(self, g => g.has_http(), native => false)
    }

    pub fn snapshot(&mut self) -> Result<Option<Vec<u8>>, Fault> {
        wasm_only!(self, g => g.snapshot(), native => Ok(None))
    }

    pub fn on_connect(&mut self, conn: u64, outcome: Result<(), ConnectError>) -> Result<(), Fault> {
        wasm_only!(self, g => g.on_connect(conn, outcome), native => Ok(()))
    }

    pub fn on_datagram(&mut self, socket: u64, peer: &str, data: &[u8]) -> Result<(), Fault> {
        wasm_only!(self, g => g.on_datagram(socket, peer, data), native => Ok(()))
    }

    pub fn on_request(&mut self, req: u64, head: RequestHead<'_>, body: &[u8], end: bool) -> Result<(), Fault> {
        wasm_only!(self, g => g.on_request(req, head, body, end), native => Ok(()))
    }

    pub fn on_request_body(&mut self, req: u64, data: &[u8], end: bool) -> Result<(), Fault> {
        wasm_only!(self, g => g.on_request_body(req, data, end), native => Ok(()))
    }

    pub fn on_response_writable(&mut self, req: u64) -> Result<(), Fault> {
        wasm_only!(self, g => g.on_response_writable(req), native => Ok(()))
    }

    pub fn on_request_closed(&mut self, req: u64) -> Result<(), Fault> {
        wasm_only!(self, g => g.on_request_closed(req), native => Ok(()))
    }

    pub fn on_websocket_message(&mut self, ws: u64, message: &Message) -> Result<(), Fault> {
        wasm_only!(self, g => g.on_websocket_message(ws, message), native => Ok(()))
    }

    pub fn on_websocket_writable(&mut self, ws: u64) -> Result<(), Fault> {
        wasm_only!(self, g => g.on_websocket_writable(ws), native => Ok(()))
    }

    pub fn on_websocket_close(&mut self, ws: u64, code: u16, reason: &str) -> Result<(), Fault> {
        wasm_only!(self, g => g.on_websocket_close(ws, code, reason), native => Ok(()))
    }
}
