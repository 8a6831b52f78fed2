//! The peer's side: bytes in, one [`Step`] at a time out. The server calls
//! [`HttpConn::step`] in a loop, calling the guest for each request, body
//! part and message, and stops when the step says to wait (or when the
//! guest's CPU share says so: the bytes wait in the input buffer).

use std::time::Instant;

use wasmloop_http::{h1, ws};

use super::{Exchange, HttpConn, HttpLimits, LINGER_READ, Response, State, WHOLE_BODY, WebSocket, date};
use crate::error::CloseReason;
use crate::output::Output;

/// A request head as the guest's `on-request` sees it; the strings point
/// into the bytes given to [`HttpConn::step`], and the header list is in
/// [`Env::headers`].
#[derive(Debug)]
pub struct Request<'b> {
    pub method: &'b str,
    pub target: &'b str,
    /// `Content-Length`, or `None` for a chunked body.
    pub body_length: Option<u64>,
    /// A valid WebSocket upgrade request (on a WebSocket listener).
    pub websocket: bool,
}

/// What the bytes given to [`HttpConn::step`] led to.
#[derive(Debug)]
pub enum Step<'b> {
    /// Nothing to do with the rest now: more bytes must arrive, or the
    /// response to the current request must be done first.
    Wait,
    /// Drop the rest: the connection is closing or lingering.
    Drop,
    /// `used` bytes were a request head (and `body`, the whole body if
    /// `body_done`): mint the request's handle, give it to
    /// [`HttpConn::set_request`], call `on-request`.
    Request { used: usize, head: Request<'b>, body: &'b [u8], body_done: bool },
    /// `used` bytes of request body; for the guest (`on-request-body`) if
    /// `request` is set, which it is not once the guest has answered.
    /// When `done`, settle the connection.
    Body { used: usize, request: Option<u64>, data: &'b [u8], done: bool },
    /// `used` bytes completed a WebSocket message, now in the message
    /// buffer given to `step`: `on-websocket-message`.
    Message { used: usize, websocket: u64, text: bool },
    /// `used` bytes the host handled itself (a ping answered, a frame in
    /// progress).
    Consumed { used: usize },
    /// The peer closed the WebSocket (its close frame answered), or the
    /// request was refused (an error response queued, our side lingering):
    /// the request handle in `ended` died; settle the connection.
    Ended { ended: Option<u64> },
}

/// What to do after a callback touched the connection, or room to write.
#[derive(Debug, PartialEq, Eq)]
pub enum Settle {
    Nothing,
    /// Queue `on-response-writable` for this request.
    ResponseWritable(u64),
    /// Queue `on-websocket-writable` for this WebSocket.
    WebSocketWritable(u64),
    /// The response is done: this request handle died.
    RequestEnded(u64),
}

/// What the connection's protocol timer means when it fires.
#[derive(Debug, PartialEq, Eq)]
pub enum TimerOutcome {
    Nothing,
    /// The deadline moved later: arm the timer again for it.
    Rearm(Instant),
    /// Idle, or done lingering: close quietly.
    Close,
    /// A request too slow to arrive: answered 408, lingering; this handle
    /// died.
    TimedOut {
        ended: Option<u64>,
    },
}

/// Everything [`HttpConn::step`] needs besides the bytes.
pub struct Env<'a, 'b, O: Output> {
    pub out: &'a O,
    pub limits: &'a HttpLimits,
    pub now: Instant,
    /// Parses heads; kept by the server so its header list is reused.
    pub parser: &'a mut h1::HeadParser,
    /// Filled with the header list of a [`Step::Request`].
    pub headers: &'a mut Vec<(&'b str, &'b str)>,
    /// Filled with the payload of a [`Step::Message`].
    pub message: &'a mut Vec<u8>,
}

impl HttpConn {
    /// The next thing `bytes` hold.
    pub fn step<'b, O: Output>(&self, bytes: &'b mut [u8], env: &mut Env<'_, 'b, O>) -> Step<'b> {
        if env.out.closing() {
            return Step::Drop;
        }
        enum Next {
            Frames,
            Body,
            Head,
        }
        let next = match &*self.state.borrow() {
            State::Lingering(_) | State::Closed => return Step::Drop,
            State::WebSocket(_) => Next::Frames,
            // The response is pending: the rest waits.
            State::Exchange(ex) if ex.body_done() => return Step::Wait,
            State::Exchange(_) => Next::Body,
            State::Head { .. } => Next::Head,
        };
        match next {
            Next::Frames => self.frame(bytes, env),
            Next::Body => self.body(bytes, env),
            Next::Head => self.head(bytes, env),
        }
    }

    /// Gives the request just returned by [`Step::Request`] its handle.
    pub fn set_request(&self, request: u64) {
        if let State::Exchange(ex) = &mut *self.state.borrow_mut() {
            ex.request = Some(request);
        }
    }

    /// A request head: parse it; the whole body too if it is here and small.
    fn head<'b, O: Output>(&self, bytes: &'b [u8], env: &mut Env<'_, 'b, O>) -> Step<'b> {
        if bytes.is_empty() {
            return Step::Wait;
        }
        let head = match env.parser.parse(bytes) {
            Ok(Some(head)) => head,
            Ok(None) => {
                // A head has begun: it must be done within the header timeout.
                if let State::Head { started } = &mut *self.state.borrow_mut()
                    && !std::mem::replace(started, true)
                {
                    self.deadline.set(Some(env.now + env.limits.header_timeout));
                }
                return Step::Wait;
            }
            Err(e) => return self.refuse(e, env.out, env.now),
        };
        env.headers.clear();
        env.headers.extend(head.headers.iter().map(|(n, v)| (head.str(bytes, n), head.str(bytes, v))));
        let (head_len, kind, minor, keep_alive, expect, is_head) =
            (head.len, head.body, head.minor_version, head.keep_alive, head.expect_continue, head.is_head);
        let (method, target) = (head.str(bytes, &head.method), head.str(bytes, &head.target));

        let mut upgrade = None;
        if self.websocket_allowed {
            match ws::check_upgrade(method, minor, env.headers.iter().copied()) {
                Ok(Some(up)) => {
                    let offered: Vec<&str> = env
                        .headers
                        .iter()
                        .filter(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-protocol"))
                        .map(|(_, v)| *v)
                        .collect();
                    upgrade = Some((up.key.to_owned(), offered.join(",")));
                }
                Ok(None) => {}
                Err(e) => {
                    return self.refuse(h1::HttpError { status: e.status, reason: e.reason }, env.out, env.now);
                }
            }
        }

        // The body, whole if it is here and small; else the first part.
        let rest = &bytes[head_len..];
        let (body, body_used, body_done) = match kind {
            h1::BodyKind::Length(0) => (&[][..], 0, true),
            h1::BodyKind::Length(n) if n as usize <= rest.len() && n as usize <= WHOLE_BODY => {
                (&rest[..n as usize], n as usize, true)
            }
            h1::BodyKind::Length(n) => {
                let part = rest.len().min(n as usize);
                (&rest[..part], part, false)
            }
            h1::BodyKind::Chunked => (&[][..], 0, false),
        };
        let decoder = (!body_done).then(|| {
            let mut decoder = h1::BodyDecoder::new(kind, &env.limits.h1());
            if body_used > 0 {
                // Content-Length bodies are contiguous: account for the
                // part handed over with the head.
                let _ = decoder.decode(body);
            }
            if expect {
                env.out.write_control(&[h1::CONTINUE]);
            }
            decoder
        });
        let websocket = upgrade.is_some();
        *self.state.borrow_mut() = State::Exchange(Exchange {
            request: None,
            response: Response::NotStarted,
            head_only: is_head,
            keep_alive,
            http10: minor == 0,
            body: decoder,
            close_after: false,
            notify_writable: false,
            upgrade,
        });
        self.deadline.set((!body_done).then(|| env.now + env.limits.header_timeout));
        let head = Request {
            method,
            target,
            body_length: match kind {
                h1::BodyKind::Length(n) => Some(n),
                h1::BodyKind::Chunked => None,
            },
            websocket,
        };
        Step::Request { used: head_len + body_used, head, body, body_done }
    }

    /// Request body bytes.
    fn body<'b, O: Output>(&self, bytes: &'b [u8], env: &mut Env<'_, 'b, O>) -> Step<'b> {
        let mut state = self.state.borrow_mut();
        let State::Exchange(ex) = &mut *state else { return Step::Wait };
        let Some(decoder) = ex.body.as_mut() else { return Step::Wait };
        let (n, data) = match decoder.decode(bytes) {
            Ok(found) => found,
            Err(e) => {
                drop(state);
                return self.refuse(e, env.out, env.now);
            }
        };
        let done = decoder.is_done();
        if done {
            ex.body = None;
        }
        if n == 0 {
            return Step::Wait;
        }
        self.deadline.set((!done).then(|| env.now + env.limits.header_timeout));
        // A request the guest already answered gets no more body.
        let request = ex.request.filter(|_| !data.is_empty() || done);
        Step::Body { used: n, request, data, done }
    }

    /// Refuses the request with `error`'s status (unless a response has
    /// begun) and lingers.
    pub fn refuse<O: Output>(&self, error: h1::HttpError, out: &O, now: Instant) -> Step<'static> {
        let started = match &*self.state.borrow() {
            State::Exchange(ex) => ex.response != Response::NotStarted,
            _ => false,
        };
        if !started {
            let mut response = Vec::new();
            error.write_response(&mut response, &date());
            if error.status == 426 {
                // The versions we speak (RFC 6455 §4.4).
                if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
                    response.splice(end + 2..end + 2, b"Sec-WebSocket-Version: 13\r\n".iter().copied());
                }
            }
            out.write_control(&[&response]);
        }
        Step::Ended { ended: self.linger(out, now) }
    }

    /// Our side is done: what is buffered is sent, then FIN; input is
    /// dropped until the client closes or [`LINGER_READ`] passes. Returns
    /// the request handle that died.
    pub(super) fn linger<O: Output>(&self, out: &O, now: Instant) -> Option<u64> {
        let mut state = self.state.borrow_mut();
        let (ended, websocket) = match std::mem::replace(&mut *state, State::Closed) {
            State::Exchange(ex) => (ex.request, None),
            State::WebSocket(ws) | State::Lingering(Some(ws)) => (None, Some(ws)),
            _ => (None, None),
        };
        *state = State::Lingering(websocket);
        self.input.borrow_mut().clear();
        out.shut_write();
        out.set_paused(false);
        self.deadline.set(Some(now + LINGER_READ));
        ended
    }

    /// The client closed its side (end-of-stream). A request still waiting
    /// for its answer is abandoned, as nginx takes it: clients that
    /// half-close and still wait for the answer are rare, and a guest that
    /// holds a request open (long polling) must learn that its client left.
    pub fn peer_eof<O: Output>(&self, out: &O) {
        if let State::WebSocket(ws) | State::Lingering(Some(ws)) = &mut *self.state.borrow_mut() {
            ws.close_received = true;
            ws.close_info.get_or_insert((super::ABNORMAL, String::new()));
        }
        out.close(CloseReason::PeerClosed);
    }

    /// After a callback or room to write: act on what the guest did.
    pub fn settle<O: Output>(&self, out: &O, limits: &HttpLimits, now: Instant) -> Settle {
        let drained = out.buffered() == 0;
        let mut state = self.state.borrow_mut();
        match &mut *state {
            State::WebSocket(ws) | State::Lingering(Some(ws)) => {
                if std::mem::take(&mut ws.fresh) {
                    // Switched protocols: what follows the request is frames.
                    self.deadline.set(None);
                    out.resume();
                }
                if ws.close_sent && ws.close_received {
                    out.close(CloseReason::Local);
                } else if ws.notify_writable && drained {
                    ws.notify_writable = false;
                    return Settle::WebSocketWritable(ws.handle);
                }
                Settle::Nothing
            }
            State::Exchange(ex) if ex.response != Response::Done => {
                if ex.notify_writable && drained {
                    ex.notify_writable = false;
                    if let Some(request) = ex.request {
                        return Settle::ResponseWritable(request);
                    }
                }
                Settle::Nothing
            }
            State::Exchange(ex) => {
                let ended = ex.request.take();
                if ex.close_after || !ex.keep_alive {
                    if ex.body_done() {
                        out.close(CloseReason::Local);
                    } else {
                        drop(state);
                        self.linger(out, now);
                    }
                } else {
                    // Keep-alive: the next request, perhaps already buffered.
                    *state = State::Head { started: false };
                    out.set_paused(false);
                    out.resume();
                    self.deadline.set(Some(now + limits.idle_timeout));
                }
                ended.map_or(Settle::Nothing, Settle::RequestEnded)
            }
            _ => Settle::Nothing,
        }
    }

    /// The protocol timer fired at `now`.
    pub fn timer_fired<O: Output>(&self, out: &O, now: Instant) -> TimerOutcome {
        let Some(deadline) = self.deadline.get() else { return TimerOutcome::Nothing };
        if deadline > now {
            return TimerOutcome::Rearm(deadline);
        }
        self.deadline.set(None);
        let in_request = match &*self.state.borrow() {
            State::Head { started } => *started,
            State::Exchange(_) => true,
            _ => false,
        };
        if !in_request {
            return TimerOutcome::Close;
        }
        let error = h1::HttpError { status: 408, reason: "request timed out" };
        match self.refuse(error, out, now) {
            Step::Ended { ended } => TimerOutcome::TimedOut { ended },
            _ => TimerOutcome::TimedOut { ended: None },
        }
    }

    /// The WebSocket the guest just accepted (see `accept_websocket`).
    pub(super) fn upgrade(&self, handle: u64, limits: &HttpLimits) {
        *self.state.borrow_mut() = State::WebSocket(WebSocket {
            handle,
            frames: ws::Decoder::new(ws::Limits { max_message: limits.max_message }),
            fresh: true,
            close_sent: false,
            close_received: false,
            close_info: None,
            notify_writable: false,
        });
    }
}
