//! Connections on HTTP and WebSocket listeners: the server reads, the
//! protocol code in `wasmloop-http` parses, and the guest sees requests and
//! messages (`http-callbacks`). The guest's answers (`http_conn.rs`) are
//! settled here after each callback, like any connection's.
//!
//! One request at a time per connection: while a request waits for its
//! response, further input (pipelined requests) stays in the connection's
//! input buffer, or in the kernel once that holds a read's worth, so TCP
//! flow control slows the client. The first bytes are parsed straight from
//! the shared read buffer; only what is left over is copied.

use std::time::Instant;

use tracing::debug;
use wasmloop_http::{h1, ws};
use wasmloop_reactor::{Reactor, Token};

use super::{Deferred, Gate, GuestKey, READ_CHUNK, Route, Server, token};
use crate::connection::Connection;
use crate::http_conn::{Exchange, HttpState, Response, WHOLE_BODY};
use crate::runtime::bindings::{CloseReason, Message};
use crate::runtime::{ConnKey, Handle, ReqKey, RequestHead, WsKey, recycle};

/// How long a closing connection keeps reading (and dropping) what the
/// client still sends, so its response is not destroyed by a reset.
const LINGER_READ: std::time::Duration = std::time::Duration::from_secs(2);

/// WebSocket close code for an abnormal end (connection lost). Never sent.
const ABNORMAL: u16 = 1006;

/// WebSocket close code "try again later" (IANA registry): the host's
/// input cap for the guest was reached.
const TRY_AGAIN_LATER: u16 = 1013;

/// Input a connection may hold whatever the guest's total: a request head
/// (`--http-max-head` is 16 KiB by default) or a small frame.
const INPUT_ALLOWANCE: usize = 16 * 1024;

/// Capacity an HTTP connection's input buffer keeps when empty.
const KEEP_INPUT: usize = 4 * 1024;

impl Server {
    /// The HTTP state of a live connection of guest `g`.
    fn http(&self, g: GuestKey, c: ConnKey) -> Option<(&Connection, &HttpState)> {
        let conn = self.connection(g, c)?;
        Some((conn, conn.http.as_deref()?))
    }

    /// A connection accepted on an HTTP listener: its timer route, and the
    /// idle deadline until the first request.
    pub(super) fn adopt_http(&mut self, reactor: &mut Reactor, g: GuestKey, c: ConnKey, websocket: bool) {
        let timer = token(self.routes.insert(Route::HttpTimer(g, c))).0;
        let Some(state) = self.guests.get_mut(g).and_then(|s| s.guest.as_mut()).map(|g| g.state_mut()) else {
            return;
        };
        let idle = state.limits.http.idle_timeout;
        let Some(conn) = state.connections.get_mut(c) else { return };
        let http = HttpState::new(websocket);
        http.timer.set(timer);
        conn.http = Some(Box::new(http));
        self.set_deadline(reactor, g, c, Some(Instant::now() + idle));
    }

    /// Moves the connection's protocol deadline. A later deadline keeps
    /// the armed timer (it re-arms when it fires), so a busy keep-alive
    /// connection costs no timer per request; an earlier one replaces it.
    fn set_deadline(&self, reactor: &mut Reactor, g: GuestKey, c: ConnKey, at: Option<Instant>) {
        let Some((_, http)) = self.http(g, c) else { return };
        http.deadline.set(at);
        let Some(at) = at else { return };
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
        let Some((conn, http)) = self.http(g, c) else { return };
        http.timer_armed.set(None);
        let Some(deadline) = http.deadline.get() else { return };
        if deadline > Instant::now() {
            http.timer_armed.set(Some((reactor.set_deadline(deadline, Token(http.timer.get())), deadline)));
            return;
        }
        http.deadline.set(None);
        let partial = http.head_started.get() || http.body.borrow().is_some();
        let in_request = http.exchange.borrow().is_some();
        if http.lingering.get() || !partial && !in_request {
            // Idle, or done lingering: close quietly.
            let reason = conn.closing.borrow().clone().unwrap_or(CloseReason::Local);
            return self.finish(reactor, g, c, reason, false);
        }
        debug!("HTTP request timed out; answering 408");
        self.http_refuse(reactor, g, c, h1::HttpError { status: 408, reason: "request timed out" });
    }

    /// Bytes read from an HTTP connection (`fresh`, in the shared read
    /// buffer), or `&mut []` to go on with what is buffered.
    pub(super) fn http_input(&mut self, reactor: &mut Reactor, g: GuestKey, c: ConnKey, fresh: &mut [u8]) {
        let Some((_, http)) = self.http(g, c) else { return };
        if http.lingering.get() {
            return;
        }
        let mut input = http.input.take();
        if input.is_empty() {
            let used = self.http_consume(reactor, g, c, fresh);
            input.extend_from_slice(&fresh[used..]);
        } else {
            input.extend_from_slice(fresh);
            let used = self.http_consume(reactor, g, c, &mut input);
            input.drain(..used);
        }
        let Some((conn, http)) = self.http(g, c) else { return };
        // A request is waiting for its response and a read's worth is
        // buffered: leave the rest in the kernel.
        if input.len() >= READ_CHUNK && http.exchange.borrow().as_ref().is_some_and(|ex| ex.body_done) {
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
        let Some(state) = self.guests.get(g).and_then(|s| s.guest.as_ref()).map(|g| g.state()) else { return };
        let Some(http) = state.connections.get(c).and_then(|conn| conn.http.as_deref()) else { return };
        let held = http.input.borrow().len() + http.frames.borrow().as_ref().map_or(0, |d| d.buffered());
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
        // (the lingering close below empties its input buffer).
        if let Some(frames) = http.frames.borrow_mut().as_mut() {
            frames.abandon();
        }
        state.input.set(total - held);
        http.counted.set(0);
        if http.is_websocket() {
            self.ws_fail(reactor, g, c, TRY_AGAIN_LATER, "the server's input buffer is full");
        } else {
            self.http_refuse(reactor, g, c, h1::HttpError { status: 503, reason: "input buffer full" });
        }
    }

    /// Parses and delivers what `bytes` holds; returns how much was used.
    fn http_consume(&mut self, reactor: &mut Reactor, g: GuestKey, c: ConnKey, bytes: &mut [u8]) -> usize {
        let mut used = 0;
        loop {
            // Past the guest's share of the loop: the rest waits in the
            // input buffer (`read` postpones the connection).
            if self.gate(reactor, g) != Gate::Open {
                return used;
            }
            let Some((conn, http)) = self.http(g, c) else { return bytes.len() };
            if conn.closing.borrow().is_some() || http.lingering.get() {
                return bytes.len();
            }
            if http.is_websocket() {
                return used + self.ws_consume(reactor, g, c, &mut bytes[used..]);
            }
            let waiting = http.exchange.borrow().as_ref().map(|ex| ex.body_done);
            let n = match waiting {
                // The response is pending: the rest waits.
                Some(true) => return used,
                Some(false) => self.body_consume(reactor, g, c, &bytes[used..]),
                None => self.head_consume(reactor, g, c, &bytes[used..]),
            };
            if n == 0 {
                return used;
            }
            used += n;
        }
    }

    /// A request head: parse it, mint the request handle, call `on-request`.
    fn head_consume(&mut self, reactor: &mut Reactor, g: GuestKey, c: ConnKey, bytes: &[u8]) -> usize {
        if bytes.is_empty() {
            return 0;
        }
        let Some(limits) = self.guests.get(g).and_then(|s| s.guest.as_ref()).map(|g| g.state().limits.http.clone())
        else {
            return 0;
        };
        let mut headers = recycle(std::mem::take(&mut self.header_list));
        let parsed = match self.head_parser(&limits).parse(bytes) {
            Ok(Some(head)) => {
                headers.extend(head.headers.iter().map(|(n, v)| (head.str(bytes, n), head.str(bytes, v))));
                let fields = (head.len, head.body, head.minor_version, head.keep_alive, head.expect_continue);
                Ok(Some((fields, head.is_head, head.str(bytes, &head.method), head.str(bytes, &head.target))))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        let ((head_len, kind, minor, keep_alive, expect), is_head, method, target) = match parsed {
            Ok(Some(head)) => head,
            Ok(None) => {
                self.header_list = recycle(headers);
                // A head has begun: it must be done within the header timeout.
                if self.http(g, c).is_some_and(|(_, h)| !h.head_started.replace(true)) {
                    self.set_deadline(reactor, g, c, Some(Instant::now() + limits.header_timeout));
                }
                return 0;
            }
            Err(e) => {
                self.header_list = recycle(headers);
                self.http_refuse(reactor, g, c, e);
                return bytes.len();
            }
        };

        let websocket_allowed = self.http(g, c).is_some_and(|(_, h)| h.websocket_allowed);
        let mut upgrade = None;
        if websocket_allowed {
            match ws::check_upgrade(method, minor, headers.iter().copied()) {
                Ok(Some(up)) => {
                    let offered: Vec<&str> = headers
                        .iter()
                        .filter(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-protocol"))
                        .map(|(_, v)| *v)
                        .collect();
                    upgrade = Some((up.key.to_owned(), offered.join(",")));
                }
                Ok(None) => {}
                Err(e) => {
                    self.header_list = recycle(headers);
                    let e = h1::HttpError { status: e.status, reason: e.reason };
                    self.http_refuse(reactor, g, c, e);
                    return bytes.len();
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
        let Some(slot) = self.guests.get_mut(g) else { return bytes.len() };
        let Some(guest) = slot.guest.as_mut() else { return bytes.len() };
        let req = guest.state().requests.borrow_mut().insert(c).handle();
        let Some(conn) = guest.state().connections.get(c) else { return bytes.len() };
        let http = conn.http.as_deref().expect("an HTTP connection");
        http.head_started.set(false);
        if !body_done {
            let mut decoder = h1::BodyDecoder::new(kind, &limits.h1());
            if body_used > 0 {
                // Content-Length bodies are contiguous: account for the part
                // handed over with the head.
                let _ = decoder.decode(body);
            }
            *http.body.borrow_mut() = Some(decoder);
            if expect {
                conn.write_all(&[h1::CONTINUE], &crate::connection::OutputBudget::new(usize::MAX, None));
            }
        }
        *http.exchange.borrow_mut() = Some(Exchange {
            request: Some(req),
            response: Response::NotStarted,
            head_only: is_head,
            keep_alive,
            http10: minor == 0,
            body_done,
            close_after: false,
            notify_writable: false,
            upgrade,
            upgraded: None,
        });
        let deadline = if body_done { None } else { Some(Instant::now() + limits.header_timeout) };
        self.set_deadline(reactor, g, c, deadline);
        let head = RequestHead {
            method,
            target,
            headers: &headers,
            body_length: match kind {
                h1::BodyKind::Length(n) => Some(n),
                h1::BodyKind::Chunked => None,
            },
            websocket: self
                .http(g, c)
                .is_some_and(|(_, h)| h.exchange.borrow().as_ref().is_some_and(|e| e.upgrade.is_some())),
        };
        self.call(reactor, g, |guest| guest.on_request(req, head, body, body_done));
        self.header_list = recycle(headers);
        if body_done && let Some((_, http)) = self.http(g, c) {
            http.body.take();
        }
        head_len + body_used
    }

    fn head_parser(&mut self, limits: &crate::http_conn::HttpLimits) -> &mut h1::HeadParser {
        // Guests may differ in limits; the parser is rebuilt when they do.
        let wanted = limits.h1();
        if self.head_parser.as_ref().is_none_or(|(l, _)| *l != (wanted.max_head, wanted.max_headers, wanted.max_body)) {
            self.head_parser =
                Some(((wanted.max_head, wanted.max_headers, wanted.max_body), h1::HeadParser::new(wanted)));
        }
        &mut self.head_parser.as_mut().expect("just set").1
    }

    /// Request body bytes: decode and deliver `on-request-body`.
    fn body_consume(&mut self, reactor: &mut Reactor, g: GuestKey, c: ConnKey, bytes: &[u8]) -> usize {
        let Some((_, http)) = self.http(g, c) else { return bytes.len() };
        let Some(mut decoder) = http.body.take() else {
            // The whole body was handed over with the head.
            if let Some(ex) = http.exchange.borrow_mut().as_mut() {
                ex.body_done = true;
            }
            return 0;
        };
        let (n, data) = match decoder.decode(bytes) {
            Ok(found) => found,
            Err(e) => {
                self.http_refuse(reactor, g, c, e);
                return bytes.len();
            }
        };
        let done = decoder.is_done();
        let Some((_, http)) = self.http(g, c) else { return bytes.len() };
        if !done {
            *http.body.borrow_mut() = Some(decoder);
        }
        if n == 0 {
            return 0;
        }
        let req = http.exchange.borrow_mut().as_mut().and_then(|ex| {
            ex.body_done = done;
            ex.request
        });
        let header_timeout =
            self.guests.get(g).and_then(|s| s.guest.as_ref()).map(|g| g.state().limits.http.header_timeout);
        let deadline = if done { None } else { header_timeout.map(|t| Instant::now() + t) };
        self.set_deadline(reactor, g, c, deadline);
        // A request the guest already answered gets no more body.
        if let Some(req) = req
            && (!data.is_empty() || done)
        {
            self.call(reactor, g, |guest| guest.on_request_body(req, data, done));
        }
        if done {
            // The response may have been finished before the body was read.
            self.settle_connection(reactor, g, c);
        }
        n
    }

    /// WebSocket frames: messages to the guest, pings answered, the close
    /// handshake.
    fn ws_consume(&mut self, reactor: &mut Reactor, g: GuestKey, c: ConnKey, bytes: &mut [u8]) -> usize {
        let mut used = 0;
        loop {
            // A message per callback: each waits for the guest's share of
            // the loop (the first was checked by the caller).
            if used > 0 && self.gate(reactor, g) != Gate::Open {
                return used;
            }
            let Some((conn, http)) = self.http(g, c) else { return bytes.len() };
            if conn.closing.borrow().is_some() || http.websocket.borrow().as_ref().is_none_or(|w| w.close_received) {
                return bytes.len();
            }
            let Some(mut decoder) = http.frames.take() else { return bytes.len() };
            let handle = http.websocket.borrow().as_ref().map_or(0, |w| w.handle);
            let (n, event) = match decoder.decode(&mut bytes[used..]) {
                Ok(found) => found,
                Err(e) => {
                    if let Some((_, http)) = self.http(g, c) {
                        http.frames.replace(Some(decoder));
                    }
                    self.ws_fail(reactor, g, c, e.code, e.reason);
                    return bytes.len();
                }
            };
            used += n;
            let message = match event {
                None => None,
                Some(ws::Event::Text(text)) => {
                    let mut buf = std::mem::take(&mut self.message_buf);
                    buf.clear();
                    buf.extend_from_slice(text.as_bytes());
                    Some(Message::Text(String::from_utf8(buf).unwrap_or_default()))
                }
                Some(ws::Event::Binary(data)) => {
                    let mut buf = std::mem::take(&mut self.message_buf);
                    buf.clear();
                    buf.extend_from_slice(data);
                    Some(Message::Binary(buf))
                }
                Some(ws::Event::Ping(payload)) => {
                    if http.websocket.borrow().as_ref().is_some_and(|w| !w.close_sent) {
                        conn.ws_control(ws::Opcode::Pong, payload);
                    }
                    None
                }
                Some(ws::Event::Pong(_)) => None,
                Some(ws::Event::Close { code, reason }) => {
                    let reason = reason.to_owned();
                    http.frames.replace(Some(decoder));
                    self.ws_peer_closed(reactor, g, c, code, reason);
                    return bytes.len();
                }
            };
            if let Some((_, http)) = self.http(g, c) {
                http.frames.replace(Some(decoder));
            }
            if let Some(message) = message {
                self.call(reactor, g, |guest| guest.on_websocket_message(handle, &message));
                self.message_buf = match message {
                    Message::Text(s) => s.into_bytes(),
                    Message::Binary(v) => v,
                };
            }
            if n == 0 {
                return used;
            }
        }
    }

    /// The peer's close frame: answer it (unless we began), then close; the
    /// guest learns the outcome after the connection is gone.
    fn ws_peer_closed(&mut self, reactor: &mut Reactor, g: GuestKey, c: ConnKey, code: Option<u16>, reason: String) {
        let Some((conn, http)) = self.http(g, c) else { return };
        if let Some(ws) = http.websocket.borrow_mut().as_mut() {
            ws.close_received = true;
            if !ws.close_sent {
                // Echo the code (RFC 6455 §5.5.1); an empty close gets an empty one.
                let mut buf = [0; 125];
                let payload = match code {
                    Some(code) => ws::close_payload(&mut buf, code, ""),
                    None => &[][..],
                };
                conn.ws_control(ws::Opcode::Close, payload);
                ws.close_sent = true;
                ws.close_info = Some((code.unwrap_or(1005), reason));
            }
        }
        conn.closing.borrow_mut().get_or_insert(CloseReason::PeerClosed);
        self.settle_connection(reactor, g, c);
    }

    /// A protocol violation by the client: close frame with `code`, close.
    fn ws_fail(&mut self, reactor: &mut Reactor, g: GuestKey, c: ConnKey, code: u16, reason: &str) {
        let Some((conn, http)) = self.http(g, c) else { return };
        debug!("WebSocket protocol error ({code}): {reason}");
        if let Some(ws) = http.websocket.borrow_mut().as_mut() {
            if !ws.close_sent {
                let mut buf = [0; 125];
                conn.ws_control(ws::Opcode::Close, ws::close_payload(&mut buf, code, reason));
                ws.close_sent = true;
            }
            ws.close_info = Some((code, reason.to_owned()));
        }
        // Linger, so the client reads our close frame rather than a reset
        // for the rest of what it is sending.
        self.linger(reactor, g, c);
        self.settle_connection(reactor, g, c);
    }

    /// Refuses the request with `error`'s status and closes the
    /// connection, lingering for what the client is still sending.
    fn http_refuse(&mut self, reactor: &mut Reactor, g: GuestKey, c: ConnKey, error: h1::HttpError) {
        let Some((conn, http)) = self.http(g, c) else { return };
        debug!(status = error.status, "refusing an HTTP request: {}", error.reason);
        let started = http.exchange.borrow().as_ref().is_some_and(|ex| ex.response != Response::NotStarted);
        if !started {
            let mut out = Vec::new();
            error.write_response(&mut out, &crate::http_conn::date());
            if error.status == 426 {
                // The versions we speak (RFC 6455 §4.4).
                if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
                    out.splice(end + 2..end + 2, b"Sec-WebSocket-Version: 13\r\n".iter().copied());
                }
            }
            conn.write_all(&[&out], &crate::connection::OutputBudget::new(usize::MAX, None));
            if let Some(ex) = http.exchange.borrow_mut().as_mut() {
                ex.response = Response::Done;
            }
        }
        self.linger(reactor, g, c);
        self.settle_connection(reactor, g, c);
    }

    /// Our side is done: send what is buffered, FIN, and drop input until
    /// the client closes or [`LINGER_READ`] passes.
    fn linger(&mut self, reactor: &mut Reactor, g: GuestKey, c: ConnKey) {
        let Some((conn, http)) = self.http(g, c) else { return };
        http.lingering.set(true);
        http.body.take();
        http.input.borrow_mut().clear();
        conn.shutdown_requested.set(true);
        conn.paused.set(false);
        self.set_deadline(reactor, g, c, Some(Instant::now() + LINGER_READ));
        self.end_exchange(g, c);
        if let Some((_, http)) = self.http(g, c) {
            *http.exchange.borrow_mut() = None;
        }
    }

    /// The client closed its side (read end-of-stream). A request still
    /// waiting for its answer is abandoned, as nginx takes it: clients that
    /// half-close and still wait for the answer are rare, and a guest that
    /// holds a request open (long polling) must learn that its client left
    /// (`on-request-closed`).
    pub(super) fn http_eof(&mut self, reactor: &mut Reactor, g: GuestKey, c: ConnKey) {
        let Some((conn, http)) = self.http(g, c) else { return };
        conn.eof.set(true);
        if let Some(ws) = http.websocket.borrow_mut().as_mut() {
            ws.close_received = true;
            ws.close_info.get_or_insert((ABNORMAL, String::new()));
        }
        conn.closing.borrow_mut().get_or_insert(CloseReason::PeerClosed);
        self.settle_connection(reactor, g, c);
    }

    /// The request handle dies (its response is done, or it was refused).
    fn end_exchange(&mut self, g: GuestKey, c: ConnKey) {
        let Some(guest) = self.guests.get(g).and_then(|s| s.guest.as_ref()) else { return };
        let Some(http) = guest.state().connections.get(c).and_then(|conn| conn.http.as_deref()) else { return };
        let mut exchange = http.exchange.borrow_mut();
        if let Some(req) = exchange.as_mut().and_then(|ex| ex.request.take()) {
            guest.state().requests.borrow_mut().remove(ReqKey::from_handle(req));
        }
    }

    /// After a callback or a writable event: act on what the guest did to
    /// the request or WebSocket of connection `c`.
    pub(super) fn http_settle(&mut self, reactor: &mut Reactor, g: GuestKey, c: ConnKey) {
        let Some((conn, http)) = self.http(g, c) else { return };
        let drained = conn.buffered() == 0;
        let mut ws_writable = None;
        if let Some(ws) = http.websocket.borrow_mut().as_mut() {
            if ws.close_sent && ws.close_received {
                conn.closing.borrow_mut().get_or_insert(CloseReason::Local);
            } else if ws.notify_writable && drained {
                ws.notify_writable = false;
                ws_writable = Some(ws.handle);
            }
        }
        if http.is_websocket() && http.exchange.borrow().is_none() {
            if let Some(handle) = ws_writable {
                self.defer(reactor, Deferred::WebSocketWritable(g, c, handle));
            }
            return;
        }
        let Some((response, upgraded, close_after, keep_alive, body_done, notify, request)) =
            http.exchange.borrow().as_ref().map(|ex| {
                let fields = (ex.response, ex.upgraded, ex.close_after, ex.keep_alive, ex.body_done);
                (fields.0, fields.1, fields.2, fields.3, fields.4, ex.notify_writable, ex.request)
            })
        else {
            return;
        };
        if response != Response::Done {
            if notify && drained {
                if let Some(ex) = http.exchange.borrow_mut().as_mut() {
                    ex.notify_writable = false;
                }
                if let Some(req) = request {
                    self.defer(reactor, Deferred::ResponseWritable(g, c, req));
                }
            }
            return;
        }
        if upgraded.is_some() {
            // Switched protocols: what follows the request is frames.
            let limits = self.guests.get(g).and_then(|s| s.guest.as_ref()).map(|g| g.state().limits.http.clone());
            let max_message = limits.map_or(1 << 20, |l| l.max_message);
            let Some((conn, http)) = self.http(g, c) else { return };
            *http.exchange.borrow_mut() = None;
            http.body.take();
            *http.frames.borrow_mut() = Some(ws::Decoder::new(ws::Limits { max_message }));
            http.deadline.set(None);
            conn.resumed.set(true);
            return;
        }
        self.end_exchange(g, c);
        let Some((conn, http)) = self.http(g, c) else { return };
        if close_after || !keep_alive {
            if body_done || http.lingering.get() {
                conn.closing.borrow_mut().get_or_insert(CloseReason::Local);
            } else {
                self.linger(reactor, g, c);
            }
            return;
        }
        // Keep-alive: the next request, perhaps already buffered.
        *http.exchange.borrow_mut() = None;
        conn.paused.set(false);
        conn.resumed.set(true);
        let idle = self.guests.get(g).and_then(|s| s.guest.as_ref()).map(|g| g.state().limits.http.idle_timeout);
        self.set_deadline(reactor, g, c, idle.map(|t| Instant::now() + t));
    }

    /// The connection is gone: the callback that tells the guest, if its
    /// request or WebSocket was still live. Called from `finish`.
    pub(super) fn http_closed(&mut self, reactor: &mut Reactor, g: GuestKey, conn: &Connection) {
        let Some(http) = conn.http.as_deref() else { return };
        let Some(guest) = self.guests.get(g).and_then(|s| s.guest.as_ref()) else { return };
        let input = &guest.state().input;
        input.set(input.get().saturating_sub(http.counted.take()));
        let mut callbacks = Vec::new();
        if let Some(req) = http.exchange.borrow_mut().as_mut().and_then(|ex| ex.request.take()) {
            guest.state().requests.borrow_mut().remove(ReqKey::from_handle(req));
            callbacks.push(Deferred::RequestClosed(g, req));
        }
        if let Some(ws) = http.websocket.borrow_mut().take() {
            guest.state().websockets.borrow_mut().remove(WsKey::from_handle(ws.handle));
            let (code, reason) = ws.close_info.unwrap_or((ABNORMAL, String::new()));
            callbacks.push(Deferred::WebSocketClosed(g, ws.handle, code, reason));
        }
        for work in callbacks {
            self.defer(reactor, work);
        }
    }
}
