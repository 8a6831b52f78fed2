//! Connections on HTTP and WebSocket listeners: the server's side of the
//! I/O core's HTTP state machine (`wasmloop_io::http`). Here bytes go into
//! it, its steps become guest calls (`http-callbacks`), its deadline gets
//! a loop timer, and the guest's input is counted against its cap. Every
//! protocol decision is the state machine's.
//!
//! The first bytes are parsed straight from the shared read buffer; only
//! what is left over is copied into the connection's input buffer.

use std::time::Instant;

use tracing::debug;
use wasmloop_http::h1;
use wasmloop_io::http::{Env, HttpConn, Settle, Step, TimerOutcome};
use wasmloop_io::{CloseReason, Connection};
use wasmloop_reactor::{Reactor, Token};

use super::Server;
use super::deferred::Deferred;
use super::fairness::Gate;
use super::read::READ_CHUNK;
use super::routes::{Route, token};
use super::slot::GuestKey;
use crate::runtime::bindings::Message;
use crate::runtime::{ConnKey, GuestIo, Handle, ReqKey, RequestHead, WsKey, recycle};

/// WebSocket close code "try again later" (IANA registry): the host's
/// input cap for the guest was reached.
const TRY_AGAIN_LATER: u16 = 1013;

/// Input a connection may hold whatever the guest's total: a request head
/// (`--http-max-head` is 16 KiB by default) or a small frame.
const INPUT_ALLOWANCE: usize = 16 * 1024;

/// Capacity an HTTP connection's input buffer keeps when empty.
const KEEP_INPUT: usize = 4 * 1024;

/// What parsing needs, shared by all HTTP connections of the loop and
/// kept for its capacity.
#[derive(Default)]
pub(super) struct HttpScratch {
    /// The head parser, keyed by the limits it was made with.
    head_parser: Option<((usize, usize, u64), h1::HeadParser)>,
    /// The header list handed to `on-request`.
    header_list: Vec<(&'static str, &'static str)>,
    /// The buffer a WebSocket message is handed to the guest in.
    message_buf: Vec<u8>,
}

impl HttpScratch {
    /// The head parser for `limits`: guests may differ in limits, and the
    /// parser (which keeps its header list between requests) is rebuilt
    /// when they do.
    fn head_parser(&mut self, limits: &wasmloop_io::http::HttpLimits) -> &mut h1::HeadParser {
        let wanted = limits.h1();
        let key = (wanted.max_head, wanted.max_headers, wanted.max_body);
        if self.head_parser.as_ref().is_none_or(|(l, _)| *l != key) {
            self.head_parser = Some((key, h1::HeadParser::new(wanted)));
        }
        &mut self.head_parser.as_mut().expect("just set").1
    }
}

impl Server {
    /// The guest state, connection and HTTP state of a live connection.
    fn http(&self, g: GuestKey, c: ConnKey) -> Option<(&GuestIo, &Connection, &HttpConn)> {
        let state = self.guests.get(g)?.state()?;
        let conn = state.connections.get(c)?;
        Some((state, conn, conn.http.as_deref()?))
    }

    /// A connection accepted on an HTTP listener: its timer route, and the
    /// idle deadline until the first request.
    pub(super) fn adopt_http(&mut self, reactor: &mut Reactor, g: GuestKey, c: ConnKey, websocket: bool) {
        let timer = token(self.routes.insert(Route::HttpTimer(g, c))).0;
        let Some(state) = self.guests.get_mut(g).and_then(|s| s.guest.as_mut()).map(|g| g.state_mut()) else {
            return;
        };
        let http = HttpConn::new(websocket, Instant::now(), &state.limits.http);
        let Some(conn) = state.connections.get_mut(c) else { return };
        http.timer.set(timer);
        conn.http = Some(Box::new(http));
        self.arm_timer(reactor, g, c);
    }

    /// Keeps a loop timer armed at the connection's deadline. A later
    /// deadline keeps the armed timer (it re-arms when it fires), so a busy
    /// keep-alive connection costs no timer per request; an earlier one
    /// replaces it.
    fn arm_timer(&self, reactor: &mut Reactor, g: GuestKey, c: ConnKey) {
        let Some((_, _, http)) = self.http(g, c) else { return };
        let Some(at) = http.deadline.get() else { return };
        match http.timer_armed.get() {
            Some((_, armed)) if armed <= at => {}
            armed => {
                if let Some((id, _)) = armed {
                    reactor.cancel_timer(id);
                }
                http.timer_armed.set(Some((reactor.set_deadline(at, Token(http.timer.get())), at)));
            }
        }
    }

    /// The protocol timer fired: a client too slow with its request (408),
    /// an idle keep-alive connection, or the end of a lingering close.
    pub(super) fn http_timer(&mut self, reactor: &mut Reactor, g: GuestKey, c: ConnKey) {
        let Some((state, conn, http)) = self.http(g, c) else { return };
        http.timer_armed.set(None);
        match http.timer_fired(&conn.out(&state.output), Instant::now()) {
            TimerOutcome::Nothing => {}
            TimerOutcome::Rearm(at) => {
                http.timer_armed.set(Some((reactor.set_deadline(at, Token(http.timer.get())), at)));
            }
            TimerOutcome::Close => {
                let reason = conn.closing.borrow().clone().unwrap_or(CloseReason::Local);
                self.finish(reactor, g, c, reason, false);
            }
            TimerOutcome::TimedOut { ended } => {
                debug!("HTTP request timed out; answered 408");
                self.ended(reactor, g, c, ended);
            }
        }
    }

    /// The state machine ended the exchange itself (a refusal, a close
    /// handshake): the request handle dies, the deadline moved, and the
    /// connection is settled.
    fn ended(&mut self, reactor: &mut Reactor, g: GuestKey, c: ConnKey, request: Option<u64>) {
        self.end_request(g, request);
        self.arm_timer(reactor, g, c);
        self.settle_connection(reactor, g, c);
    }

    /// Bytes read from an HTTP connection (`fresh`, in the shared read
    /// buffer), or `&mut []` to go on with what is buffered.
    pub(super) fn http_input(&mut self, reactor: &mut Reactor, g: GuestKey, c: ConnKey, fresh: &mut [u8]) {
        let Some((_, _, http)) = self.http(g, c) else { return };
        let mut input = http.input.take();
        if input.is_empty() {
            let used = self.http_consume(reactor, g, c, fresh);
            input.extend_from_slice(&fresh[used..]);
        } else {
            input.extend_from_slice(fresh);
            let used = self.http_consume(reactor, g, c, &mut input);
            input.drain(..used);
        }
        let Some((_, conn, http)) = self.http(g, c) else { return };
        // A request is waiting for its response and a read's worth is
        // buffered: leave the rest in the kernel.
        if input.len() >= READ_CHUNK && http.awaits_response() {
            conn.paused.set(true);
        }
        // Give back what a burst made the buffer grow to: a connection
        // keeps at most a read's worth beyond what it holds.
        if input.is_empty() && input.capacity() > KEEP_INPUT {
            input = Vec::new();
        } else if input.capacity() > input.len() + READ_CHUNK {
            input.shrink_to(input.len() + READ_CHUNK);
        }
        http.input.replace(input);
        self.count_input(reactor, g, c);
    }

    /// Counts what connection `c` holds of its peer's input against the
    /// guest's `max_input_total`. Past the cap, a connection that grew and
    /// holds more than [`INPUT_ALLOWANCE`] is refused (503, or WebSocket
    /// close 1013 "try again later"), so peers together cannot make the
    /// host hold more than the cap plus that allowance per connection, and
    /// small requests are still served while large ones are refused.
    fn count_input(&mut self, reactor: &mut Reactor, g: GuestKey, c: ConnKey) {
        let Some((state, conn, http)) = self.http(g, c) else { return };
        let held = http.held();
        let before = http.counted.replace(held);
        let total = state.input.get() - before + held;
        state.input.set(total);
        if held <= before || held <= INPUT_ALLOWANCE || total <= state.limits.max_input_total {
            return;
        }
        debug!(guest = &*state.name, "input buffered for the guest's connections reached its cap: refusing one");
        if let Some(metrics) = &state.metrics {
            metrics.input_refused.inc();
        }
        // Drop what it held now, not when the refused connection closes
        // (the lingering close empties its input buffer).
        http.abandon_message();
        state.input.set(total - held);
        http.counted.set(0);
        let (out, now) = (conn.out(&state.output), Instant::now());
        let step = if http.is_websocket() {
            http.fail_websocket(TRY_AGAIN_LATER, "the server's input buffer is full", &out, now)
        } else {
            http.refuse(h1::HttpError { status: 503, reason: "input buffer full" }, &out, now)
        };
        if let Step::Ended { ended } = step {
            self.ended(reactor, g, c, ended);
        }
    }

    /// Feeds `bytes` to the state machine and carries out its steps;
    /// returns how much was used.
    fn http_consume(&mut self, reactor: &mut Reactor, g: GuestKey, c: ConnKey, bytes: &mut [u8]) -> usize {
        let (mut used, len) = (0, bytes.len());
        loop {
            // Past the guest's share of the loop: the rest waits in the
            // input buffer (`read` postpones the connection).
            if self.gate(reactor, g) != Gate::Open {
                return used;
            }
            let Some(limits) = self.guests.get(g).and_then(|s| s.state()).map(|state| state.limits.http.clone()) else {
                return bytes.len();
            };
            let scratch = &mut self.http_scratch;
            let mut headers = recycle(std::mem::take(&mut scratch.header_list));
            let mut message = std::mem::take(&mut scratch.message_buf);
            let parser = scratch.head_parser(&limits);
            let Some((state, conn, http)) = self.guests.get(g).and_then(|s| s.guest.as_ref()).and_then(|guest| {
                let state = guest.state();
                let conn = state.connections.get(c)?;
                Some((state, conn, conn.http.as_deref()?))
            }) else {
                return bytes.len();
            };
            let out = conn.out(&state.output);
            let mut env = Env {
                out: &out,
                limits: &limits,
                now: Instant::now(),
                parser,
                headers: &mut headers,
                message: &mut message,
            };
            let step = http.step(&mut bytes[used..], &mut env);
            // `Err(n)`: stop, `n` bytes used.
            let next: Result<(), usize> = match step {
                Step::Wait => Err(used),
                Step::Drop => Err(len),
                Step::Consumed { used: n } => {
                    used += n;
                    Ok(())
                }
                Step::Request { used: n, head, body, body_done } => {
                    let req = state.requests.borrow_mut().insert(c).handle();
                    http.set_request(req);
                    self.arm_timer(reactor, g, c);
                    let head = RequestHead {
                        method: head.method,
                        target: head.target,
                        headers: &headers,
                        body_length: head.body_length,
                        websocket: head.websocket,
                    };
                    self.call(reactor, g, |guest| guest.on_request(req, head, body, body_done));
                    used += n;
                    Ok(())
                }
                Step::Body { used: n, request, data, done } => {
                    self.arm_timer(reactor, g, c);
                    if let Some(req) = request {
                        self.call(reactor, g, |guest| guest.on_request_body(req, data, done));
                    }
                    if done {
                        // The response may have been finished before the body was read.
                        self.settle_connection(reactor, g, c);
                    }
                    used += n;
                    Ok(())
                }
                Step::Message { used: n, websocket, text } => {
                    let message_ = if text {
                        Message::Text(String::from_utf8(std::mem::take(&mut message)).unwrap_or_default())
                    } else {
                        Message::Binary(std::mem::take(&mut message))
                    };
                    self.call(reactor, g, |guest| guest.on_websocket_message(websocket, &message_));
                    message = match message_ {
                        Message::Text(s) => s.into_bytes(),
                        Message::Binary(v) => v,
                    };
                    used += n;
                    Ok(())
                }
                Step::Ended { ended } => {
                    self.ended(reactor, g, c, ended);
                    Err(len)
                }
            };
            self.http_scratch.header_list = recycle(headers);
            self.http_scratch.message_buf = message;
            if let Err(done) = next {
                self.arm_timer(reactor, g, c);
                return done;
            }
        }
    }

    /// The client closed its side (read end-of-stream).
    pub(super) fn http_eof(&mut self, reactor: &mut Reactor, g: GuestKey, c: ConnKey) {
        let Some((state, conn, http)) = self.http(g, c) else { return };
        conn.eof.set(true);
        http.peer_eof(&conn.out(&state.output));
        self.settle_connection(reactor, g, c);
    }

    /// The request handle dies (its response is done, or it was refused).
    fn end_request(&mut self, g: GuestKey, request: Option<u64>) {
        if let Some(req) = request
            && let Some(guest) = self.guests.get(g).and_then(|s| s.guest.as_ref())
        {
            guest.state().requests.borrow_mut().remove(ReqKey::from_handle(req));
        }
    }

    /// After a callback or a writable event: act on what the guest did to
    /// the request or WebSocket of connection `c`.
    pub(super) fn http_settle(&mut self, reactor: &mut Reactor, g: GuestKey, c: ConnKey) {
        let Some((state, conn, http)) = self.http(g, c) else { return };
        match http.settle(&conn.out(&state.output), &state.limits.http, Instant::now()) {
            Settle::Nothing => {}
            Settle::ResponseWritable(req) => self.defer(reactor, Deferred::ResponseWritable(g, c, req)),
            Settle::WebSocketWritable(ws) => self.defer(reactor, Deferred::WebSocketWritable(g, c, ws)),
            Settle::RequestEnded(req) => self.end_request(g, Some(req)),
        }
        self.arm_timer(reactor, g, c);
    }

    /// The connection is gone: the callback that tells the guest, if its
    /// request or WebSocket was still live. Called from `finish`.
    pub(super) fn http_closed(&mut self, reactor: &mut Reactor, g: GuestKey, conn: &Connection) {
        let Some(http) = conn.http.as_deref() else { return };
        let Some(guest) = self.guests.get(g).and_then(|s| s.guest.as_ref()) else { return };
        let input = &guest.state().input;
        input.set(input.get().saturating_sub(http.counted.take()));
        let (request, websocket) = http.closed();
        if let Some(req) = request {
            guest.state().requests.borrow_mut().remove(ReqKey::from_handle(req));
        }
        if let Some((handle, ..)) = &websocket {
            guest.state().websockets.borrow_mut().remove(WsKey::from_handle(*handle));
        }
        if let Some(req) = request {
            self.defer(reactor, Deferred::RequestClosed(g, req));
        }
        if let Some((handle, code, reason)) = websocket {
            self.defer(reactor, Deferred::WebSocketClosed(g, handle, code, reason));
        }
    }
}
