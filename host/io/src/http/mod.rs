//! One HTTP/1.1 connection, and the WebSocket it may become: a state
//! machine that takes bytes from the peer and calls from the guest, and
//! says what the server must do. It never touches a socket: output goes
//! through [`Output`], time comes in as `now`, and the loop timer that
//! enforces [`HttpConn::deadline`] is the server's. The protocol itself
//! (parsing, framing) is `wasmloop-http`.
//!
//! One request at a time: while a request waits for its response, the
//! next (pipelined) one waits in the input buffer or the kernel. The state
//! is one enum, [`State`]; what a reader asks ("is a body still coming? has
//! the response begun?") is [`HttpConn::phase`].
//!
//! Everything is `Cell`/`RefCell` because the guest's calls (`respond`,
//! `send`, ...) run inside host imports that borrow the guest's store
//! immutably. No borrow is held across a guest call.

mod request;
mod respond;
#[cfg(test)]
mod tests;
mod websocket;

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wasmloop_http::{h1, ws};
use wasmloop_reactor::TimerId;

pub use request::{Env, Request, Settle, Step, TimerOutcome};

use crate::conn::UNREGISTERED;
use crate::error::ErrorCode;

/// Bodies at most this long that arrived with their head are handed to
/// `on-request` whole.
pub const WHOLE_BODY: usize = 64 * 1024;

/// How long a closing connection keeps reading (and dropping) what the
/// client still sends, so its response is not destroyed by a reset.
pub const LINGER_READ: Duration = Duration::from_secs(2);

/// WebSocket close code for an abnormal end (connection lost). Never sent.
pub const ABNORMAL: u16 = 1006;

/// Protocol limits of one guest's HTTP listeners. No defaults here: the
/// host has one set for all its limits (`wasmloop::limits::Limits`).
#[derive(Clone, Debug)]
pub struct HttpLimits {
    pub max_head: usize,
    pub max_headers: usize,
    pub max_body: u64,
    /// A WebSocket message, reassembled.
    pub max_message: usize,
    /// From the first byte of a request head to its end, and between two
    /// reads of a request body (slowloris).
    pub header_timeout: Duration,
    /// A keep-alive connection with no request in progress.
    pub idle_timeout: Duration,
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

/// The request in progress. There is at most one per connection.
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
    /// The body still coming, if it did not arrive whole with the head.
    pub body: Option<h1::BodyDecoder>,
    /// The response was finished before the body was read: close after it.
    pub close_after: bool,
    /// The guest asked for `on-response-writable`.
    pub notify_writable: bool,
    /// A valid WebSocket upgrade request: its key and the offered
    /// subprotocols (comma-separated), for `accept-websocket`.
    pub upgrade: Option<(String, String)>,
}

impl Exchange {
    /// The whole request body has been read.
    pub fn body_done(&self) -> bool {
        self.body.is_none()
    }
}

/// A WebSocket after the handshake.
#[derive(Debug)]
pub struct WebSocket {
    pub handle: u64,
    /// Frames being read.
    pub frames: ws::Decoder,
    /// `accept-websocket` ran in the callback that just returned: reading
    /// starts when the server settles it.
    pub fresh: bool,
    /// We sent a close frame: nothing more may be sent.
    pub close_sent: bool,
    /// The peer's close frame arrived (or the connection dropped).
    pub close_received: bool,
    /// The code and reason `on-websocket-close` will carry.
    pub close_info: Option<(u16, String)>,
    pub notify_writable: bool,
}

/// The connection's state: exactly one at a time.
#[derive(Debug)]
pub enum State {
    /// No request in progress. `started`: part of a head has arrived, and
    /// the header timeout runs (further bytes do not extend it, so a
    /// trickle cannot hold the connection).
    Head { started: bool },
    /// A request is live: its body may still be arriving, and its response
    /// may be unstarted, streaming or done.
    Exchange(Exchange),
    /// Switched protocols.
    WebSocket(WebSocket),
    /// Our side is done (an error answered, a close frame sent): what is
    /// buffered is sent, then FIN; input is read and dropped until the
    /// client closes or [`LINGER_READ`] passes, so the kernel does not
    /// answer unread input with a reset that could destroy our answer. A
    /// WebSocket's close code is kept for `on-websocket-close`.
    Lingering(Option<WebSocket>),
    /// The connection is gone; what the guest had to learn was taken.
    Closed,
}

/// The named phases of [`State`], for logs, tests and readers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    ReadingHead,
    ReadingBody,
    AwaitingResponse,
    StreamingResponse,
    /// The response is complete; the server settles it next.
    Responded,
    WebSocket,
    Lingering,
    Closed,
}

pub struct HttpConn {
    /// The listener accepts WebSocket upgrades.
    pub websocket_allowed: bool,
    pub state: RefCell<State>,
    /// Bytes read but not yet consumed: part of a head, the next pipelined
    /// request, body or frames not yet delivered. The server takes it out
    /// while it feeds it through [`HttpConn::step`].
    pub input: RefCell<Vec<u8>>,
    /// When the connection's pending timeout (header, body, idle or
    /// linger) expires, if one runs.
    pub deadline: Cell<Option<Instant>>,
    /// The loop timer armed for the deadline, if any, and when it fires.
    /// The server re-arms it lazily when the deadline moved later, so a busy
    /// keep-alive connection costs no timer per request.
    pub timer_armed: Cell<Option<(TimerId, Instant)>>,
    /// The reactor token of the connection's protocol timer.
    pub timer: Cell<u64>,
    /// Bytes of input last counted against the guest's `max_input_total`.
    pub counted: Cell<usize>,
}

impl HttpConn {
    /// A connection just accepted: idle until `now + idle_timeout`.
    pub fn new(websocket_allowed: bool, now: Instant, limits: &HttpLimits) -> HttpConn {
        HttpConn {
            websocket_allowed,
            state: RefCell::new(State::Head { started: false }),
            input: RefCell::new(Vec::new()),
            deadline: Cell::new(Some(now + limits.idle_timeout)),
            timer_armed: Cell::new(None),
            timer: Cell::new(UNREGISTERED),
            counted: Cell::new(0),
        }
    }

    pub fn phase(&self) -> Phase {
        match &*self.state.borrow() {
            State::Head { .. } => Phase::ReadingHead,
            State::Exchange(ex) if !ex.body_done() => Phase::ReadingBody,
            State::Exchange(ex) => match ex.response {
                Response::NotStarted => Phase::AwaitingResponse,
                Response::Streaming { .. } => Phase::StreamingResponse,
                // The server settles it next: the request ends.
                Response::Done => Phase::Responded,
            },
            State::WebSocket(_) => Phase::WebSocket,
            State::Lingering(_) => Phase::Lingering,
            State::Closed => Phase::Closed,
        }
    }

    /// A request's body is read and its response is pending or being
    /// sent: further input is the next request, which waits.
    pub fn awaits_response(&self) -> bool {
        matches!(&*self.state.borrow(), State::Exchange(ex) if ex.body_done())
    }

    pub fn is_websocket(&self) -> bool {
        matches!(&*self.state.borrow(), State::WebSocket(_) | State::Lingering(Some(_)))
    }

    /// Input the connection holds for its peer: the input buffer and a
    /// WebSocket message being reassembled.
    pub fn held(&self) -> usize {
        let frames = match &*self.state.borrow() {
            State::WebSocket(ws) | State::Lingering(Some(ws)) => ws.frames.buffered(),
            _ => 0,
        };
        self.input.borrow().len() + frames
    }

    /// Drops a WebSocket message being reassembled (the connection is
    /// being refused for holding too much).
    pub fn abandon_message(&self) {
        if let State::WebSocket(ws) | State::Lingering(Some(ws)) = &mut *self.state.borrow_mut() {
            ws.frames.abandon();
        }
    }

    /// The connection is gone: the request and WebSocket handles that die
    /// with it, for the guest's `on-request-closed` and
    /// `on-websocket-close` (code and reason).
    pub fn closed(&self) -> (Option<u64>, Option<(u64, u16, String)>) {
        match self.state.replace(State::Closed) {
            State::Exchange(ex) => (ex.request, None),
            State::WebSocket(ws) | State::Lingering(Some(ws)) => {
                let (code, reason) = ws.close_info.unwrap_or((ABNORMAL, String::new()));
                (None, Some((ws.handle, code, reason)))
            }
            _ => (None, None),
        }
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
