//! The HTTP side of a connection accepted on an HTTP or WebSocket listener:
//! the request in progress, its response, and after an upgrade the
//! WebSocket. The protocol itself (parsing, framing) is `wasmloop-http`;
//! this file holds the state and the guest's side of it (`respond`, `send`,
//! ...), which the imports call with the store borrowed immutably, hence
//! `Cell`/`RefCell` as in [`Connection`].
//!
//! The server (`server/http.rs`) reads and parses; after every callback it
//! settles what the guest did here (a finished response lets the next
//! pipelined request in, a close handshake ends the connection).

use std::cell::{Cell, RefCell};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use wasmloop_http::{h1, ws};

use crate::connection::{Connection, OutputBudget};
use crate::runtime::bindings::ErrorCode;

/// Bodies at most this long that arrived with their head are handed to
/// `on-request` whole.
pub const WHOLE_BODY: usize = 64 * 1024;

/// Protocol limits of one guest's HTTP listeners.
#[derive(Clone, Debug)]
pub struct HttpLimits {
    pub max_head: usize,
    pub max_headers: usize,
    pub max_body: u64,
    /// A WebSocket message, reassembled.
    pub max_message: usize,
    /// From the first byte of a request head to its end, and between two
    /// reads of a request body (slowloris).
    pub header_timeout: std::time::Duration,
    /// A keep-alive connection with no request in progress.
    pub idle_timeout: std::time::Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_head: 16 * 1024,
            max_headers: 64,
            max_body: 1 << 20,
            max_message: 1 << 20,
            header_timeout: std::time::Duration::from_secs(10),
            idle_timeout: std::time::Duration::from_secs(60),
        }
    }
}

impl HttpLimits {
    pub fn h1(&self) -> h1::Limits {
        h1::Limits { max_head: self.max_head, max_headers: self.max_headers, max_body: self.max_body }
    }
}

/// Where the response to the current request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Response {
    NotStarted,
    /// Head sent; body parts follow (`chunked`, or until the connection
    /// closes for an HTTP/1.0 client).
    Streaming {
        chunked: bool,
    },
    Done,
}

/// The request in progress on a connection. There is at most one: the next
/// pipelined request waits (in the input buffer or the kernel) until this
/// one's response is done.
#[derive(Debug)]
pub struct Exchange {
    /// The guest's handle for it; `None` once it is dead for the guest.
    pub request: Option<u64>,
    pub response: Response,
    /// `HEAD`: body bytes are counted, not sent.
    pub head_only: bool,
    /// The request allows the connection to stay open after it.
    pub keep_alive: bool,
    /// HTTP/1.0: no chunked responses.
    pub http10: bool,
    /// The whole request body has been read.
    pub body_done: bool,
    /// The response was finished before the body was read: close after it.
    pub close_after: bool,
    /// The guest asked for `on-response-writable`.
    pub notify_writable: bool,
    /// A valid WebSocket upgrade request: its key and the offered
    /// subprotocols (comma-separated), for `accept-websocket`.
    pub upgrade: Option<(String, String)>,
    /// `accept-websocket` was called: the connection is a WebSocket now,
    /// with this handle.
    pub upgraded: Option<u64>,
}

/// A WebSocket after the handshake.
#[derive(Debug, Default)]
pub struct WebSocket {
    pub handle: u64,
    /// We sent a close frame: nothing more may be sent.
    pub close_sent: bool,
    /// The peer's close frame arrived (or the connection dropped).
    pub close_received: bool,
    /// The code and reason `on-websocket-close` will carry.
    pub close_info: Option<(u16, String)>,
    pub notify_writable: bool,
}

pub struct HttpState {
    /// The listener accepts WebSocket upgrades.
    pub websocket_allowed: bool,
    pub exchange: RefCell<Option<Exchange>>,
    pub websocket: RefCell<Option<WebSocket>>,
    /// Bytes read but not yet consumed: part of a head, the next pipelined
    /// request, body or frames not yet delivered. Taken out while in use.
    pub input: RefCell<Vec<u8>>,
    /// Reading stopped because a request is in progress and `input` holds
    /// enough; resumed when the response is done.
    pub stalled: Cell<bool>,
    /// The pending timeout (header, body or idle) and whether a loop timer
    /// is armed for the connection; it re-arms itself lazily when the
    /// deadline moved later.
    pub deadline: Cell<Option<Instant>>,
    pub timer_armed: Cell<Option<(wasmloop_reactor::TimerId, Instant)>>,
    /// The reactor token of the connection's protocol timer (its own route,
    /// apart from the linger timer on the connection's token).
    pub timer: Cell<u64>,
    /// The request body being read.
    pub body: RefCell<Option<h1::BodyDecoder>>,
    /// After the upgrade: frames being read.
    pub frames: RefCell<Option<ws::Decoder>>,
    /// Closing after a response while the client may still be sending
    /// (a refused body): our side is shut, input is read and dropped until
    /// the client closes or the deadline passes, so the kernel does not
    /// answer unread input with a reset that could destroy the response.
    pub lingering: Cell<bool>,
    /// Part of a request head has arrived: the header timeout runs (it is
    /// not extended by further bytes, so a trickle cannot hold the
    /// connection).
    pub head_started: Cell<bool>,
    /// Bytes of `input` and of the WebSocket reassembly buffer last counted
    /// against the guest's `max_input_total`.
    pub counted: Cell<usize>,
}

impl HttpState {
    pub fn new(websocket_allowed: bool) -> HttpState {
        HttpState {
            websocket_allowed,
            exchange: RefCell::new(None),
            websocket: RefCell::new(None),
            input: RefCell::new(Vec::new()),
            stalled: Cell::new(false),
            deadline: Cell::new(None),
            timer_armed: Cell::new(None),
            timer: Cell::new(crate::connection::UNREGISTERED),
            body: RefCell::new(None),
            frames: RefCell::new(None),
            lingering: Cell::new(false),
            head_started: Cell::new(false),
            counted: Cell::new(0),
        }
    }

    pub fn is_websocket(&self) -> bool {
        self.websocket.borrow().is_some()
    }
}

/// The `Date` header value, formatted once per second.
pub fn date() -> [u8; 29] {
    thread_local! {
        static CACHE: Cell<(u64, [u8; 29])> = const { Cell::new((u64::MAX, [0; 29])) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    CACHE.with(|cache| {
        let (at, text) = cache.get();
        if at == second {
            return text;
        }
        let text = h1::http_date(now);
        cache.set((second, text));
        text
    })
}

/// Checks the status and the guest's headers of a response.
fn check_response<'h>(status: u16, headers: impl Iterator<Item = (&'h str, &'h str)>) -> Result<(), ErrorCode> {
    if !(200..=599).contains(&status) {
        return Err(ErrorCode::InvalidArgument);
    }
    for (name, value) in headers {
        h1::check_header(name, value).map_err(|_| ErrorCode::InvalidArgument)?;
    }
    Ok(())
}

/// The guest's side of one HTTP connection: what the `http` imports do.
/// Every function is given the connection its handle named.
impl Connection {
    fn http_state(&self) -> Result<&HttpState, ErrorCode> {
        self.http.as_deref().ok_or(ErrorCode::InvalidHandle)
    }

    /// The live exchange of this connection, if no response has begun and
    /// output is still accepted.
    fn unanswered(&self) -> Result<std::cell::RefMut<'_, Exchange>, ErrorCode> {
        let state = self.http_state()?;
        let ex = std::cell::RefMut::filter_map(state.exchange.borrow_mut(), Option::as_mut)
            .map_err(|_| ErrorCode::InvalidHandle)?;
        if ex.response != Response::NotStarted || !self.accepts_output() {
            return Err(ErrorCode::Closed);
        }
        Ok(ex)
    }

    /// `respond`: the whole response, or nothing.
    pub fn respond<'h>(
        &self,
        status: u16,
        headers: impl Iterator<Item = (&'h str, &'h str)> + Clone,
        body: &[u8],
        budget: &OutputBudget,
        scratch: &mut Vec<u8>,
    ) -> Result<(), ErrorCode> {
        let mut ex = self.unanswered()?;
        check_response(status, headers.clone())?;
        if !h1::status_allows_body(status) && !body.is_empty() {
            return Err(ErrorCode::InvalidArgument);
        }
        let close = !ex.keep_alive || !ex.body_done;
        scratch.clear();
        let framing = h1::Framing::Length(body.len() as u64);
        h1::write_head(scratch, status, headers, framing, close, &date());
        let body = if ex.head_only { &[][..] } else { body };
        if !self.write_all(&[scratch, body], budget) {
            return Err(ErrorCode::LimitReached);
        }
        ex.response = Response::Done;
        ex.close_after = close;
        Ok(())
    }

    /// `respond-start`: the head of a streamed response.
    pub fn respond_start<'h>(
        &self,
        status: u16,
        headers: impl Iterator<Item = (&'h str, &'h str)> + Clone,
        budget: &OutputBudget,
        scratch: &mut Vec<u8>,
    ) -> Result<(), ErrorCode> {
        let mut ex = self.unanswered()?;
        check_response(status, headers.clone())?;
        // An HTTP/1.0 client knows no chunked encoding: the body ends when
        // the connection does.
        let chunked = !ex.http10 && h1::status_allows_body(status);
        let close = !ex.keep_alive || !ex.body_done || ex.http10;
        let framing = if chunked { h1::Framing::Chunked } else { h1::Framing::UntilClose };
        scratch.clear();
        h1::write_head(scratch, status, headers, framing, close, &date());
        if !self.write_all(&[scratch], budget) {
            return Err(ErrorCode::LimitReached);
        }
        ex.response = Response::Streaming { chunked };
        ex.close_after = close;
        Ok(())
    }

    /// `respond-write`: as much of `data` as fits, framed as one chunk.
    pub fn respond_write(&self, data: &[u8], budget: &OutputBudget) -> Result<u32, ErrorCode> {
        let state = self.http_state()?;
        let exchange = state.exchange.borrow();
        let ex = exchange.as_ref().ok_or(ErrorCode::InvalidHandle)?;
        let Response::Streaming { chunked } = ex.response else {
            return Err(ErrorCode::Closed);
        };
        if !self.accepts_output() {
            return Err(ErrorCode::Closed);
        }
        if ex.head_only || data.is_empty() {
            return Ok(data.len().min(u32::MAX as usize) as u32);
        }
        // Chunk header and trailing CRLF: at most 18 + 2 bytes.
        let overhead = if chunked { 20 } else { 0 };
        let n = data.len().min(self.room(budget).saturating_sub(overhead)).min(u32::MAX as usize);
        if n == 0 {
            return Ok(0);
        }
        let mut header = [0; 18];
        let taken = if chunked {
            let header = h1::chunk_header(&mut header, n);
            self.write_all(&[header, &data[..n], h1::CHUNK_END], budget)
        } else {
            self.write_all(&[&data[..n]], budget)
        };
        Ok(if taken { n as u32 } else { 0 })
    }

    /// `respond-finish`.
    pub fn respond_finish(&self, budget: &OutputBudget) -> Result<(), ErrorCode> {
        let state = self.http_state()?;
        let mut exchange = state.exchange.borrow_mut();
        let ex = exchange.as_mut().ok_or(ErrorCode::InvalidHandle)?;
        let Response::Streaming { chunked } = ex.response else {
            return Err(ErrorCode::Closed);
        };
        if chunked && !ex.head_only && !self.write_all(&[h1::LAST_CHUNK], budget) {
            return Err(ErrorCode::LimitReached);
        }
        ex.response = Response::Done;
        Ok(())
    }

    /// `accept-websocket`: the 101 response; the caller mints the handle.
    pub fn accept_websocket(
        &self,
        protocol: Option<&str>,
        budget: &OutputBudget,
        scratch: &mut Vec<u8>,
    ) -> Result<(), ErrorCode> {
        let mut ex = self.unanswered()?;
        let Some((key, offered)) = &ex.upgrade else {
            return Err(ErrorCode::InvalidArgument);
        };
        if let Some(p) = protocol
            && !offered.split(',').any(|o| o.trim() == p)
        {
            return Err(ErrorCode::InvalidArgument);
        }
        scratch.clear();
        ws::write_accept(scratch, key, protocol);
        if !self.write_all(&[scratch], budget) {
            return Err(ErrorCode::LimitReached);
        }
        ex.response = Response::Done;
        Ok(())
    }

    fn websocket_open(&self) -> Result<std::cell::RefMut<'_, WebSocket>, ErrorCode> {
        let state = self.http_state()?;
        let ws = std::cell::RefMut::filter_map(state.websocket.borrow_mut(), Option::as_mut)
            .map_err(|_| ErrorCode::InvalidHandle)?;
        if ws.close_sent || ws.close_received || !self.accepts_output() {
            return Err(ErrorCode::Closed);
        }
        Ok(ws)
    }

    /// `send`: one message, whole or not at all.
    pub fn ws_send(&self, opcode: ws::Opcode, payload: &[u8], budget: &OutputBudget) -> Result<(), ErrorCode> {
        let _ws = self.websocket_open()?;
        let mut header = [0; 10];
        let header = ws::frame_header(&mut header, opcode, payload.len());
        if self.write_all(&[header, payload], budget) { Ok(()) } else { Err(ErrorCode::LimitReached) }
    }

    /// A control frame from the host (pong, close), sent whatever the
    /// guest's budget: it is at most 127 bytes.
    pub fn ws_control(&self, opcode: ws::Opcode, payload: &[u8]) {
        let mut header = [0; 10];
        let header = ws::frame_header(&mut header, opcode, payload.len());
        self.write_all(&[header, payload], &OutputBudget::new(usize::MAX, None));
    }

    /// `close-websocket`: sends the close frame; the handshake ends when
    /// the peer answers (`server/http.rs`).
    pub fn ws_close(&self, code: u16, reason: &str) -> Result<(), ErrorCode> {
        if !ws::valid_close_code(code) || reason.len() > 123 {
            return Err(ErrorCode::InvalidArgument);
        }
        let mut ws = self.websocket_open()?;
        let mut buf = [0; 125];
        self.ws_control(ws::Opcode::Close, ws::close_payload(&mut buf, code, reason));
        ws.close_sent = true;
        ws.close_info = Some((code, reason.to_owned()));
        Ok(())
    }

    /// The host is shutting down: a WebSocket still open gets 1001.
    pub fn ws_going_away(&self) {
        if let Ok(mut ws) = self.websocket_open() {
            let reason = "the server is shutting down";
            let mut buf = [0; 125];
            self.ws_control(ws::Opcode::Close, ws::close_payload(&mut buf, 1001, reason));
            ws.close_sent = true;
            ws.close_info = Some((1001, reason.to_owned()));
        }
    }
}
