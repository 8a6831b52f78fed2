//! A WebSocket after the handshake: frames in ([`HttpConn::step`] decodes
//! one per call), and the guest's `send`, `close-websocket` and
//! `websocket-notify-writable`. Pings are answered by the host.

use std::cell::RefMut;
use std::time::Instant;

use wasmloop_http::ws;

use super::request::{Env, Step};
use super::{HttpConn, State, WebSocket};
use crate::error::{CloseReason, ErrorCode};
use crate::output::Output;

/// A close frame's or pong's header and payload, sent as host output.
fn control<O: Output>(out: &O, opcode: ws::Opcode, payload: &[u8]) {
    let mut header = [0; 10];
    let header = ws::frame_header(&mut header, opcode, payload.len());
    out.write_control(&[header, payload]);
}

/// Sends a close frame with `code` and `reason` unless one was sent, and
/// records what `on-websocket-close` will carry.
fn send_close<O: Output>(ws: &mut WebSocket, out: &O, code: u16, reason: &str) {
    if !ws.close_sent {
        let mut buf = [0; 125];
        control(out, ws::Opcode::Close, ws::close_payload(&mut buf, code, reason));
        ws.close_sent = true;
    }
    ws.close_info = Some((code, reason.to_owned()));
}

impl HttpConn {
    /// One frame of `bytes`.
    pub(super) fn frame<'b, O: Output>(&self, bytes: &'b mut [u8], env: &mut Env<'_, 'b, O>) -> Step<'b> {
        let mut state = self.state.borrow_mut();
        let State::WebSocket(ws) = &mut *state else { return Step::Drop };
        if ws.close_received {
            return Step::Drop;
        }
        let (used, event) = match ws.frames.decode(bytes) {
            Ok(found) => found,
            Err(e) => {
                drop(state);
                return self.fail_websocket(e.code, e.reason, env.out, env.now);
            }
        };
        let (text, payload) = match event {
            None if used == 0 => return Step::Wait,
            None | Some(ws::Event::Pong(_)) => return Step::Consumed { used },
            Some(ws::Event::Ping(payload)) => {
                if !ws.close_sent {
                    control(env.out, ws::Opcode::Pong, payload);
                }
                return Step::Consumed { used };
            }
            Some(ws::Event::Close { code, reason }) => {
                // Answer it (unless we began): echo the code (RFC 6455
                // §5.5.1); an empty close gets an empty one.
                ws.close_received = true;
                if !ws.close_sent {
                    let mut buf = [0; 125];
                    let payload = match code {
                        Some(code) => ws::close_payload(&mut buf, code, ""),
                        None => &[][..],
                    };
                    control(env.out, ws::Opcode::Close, payload);
                    ws.close_sent = true;
                    ws.close_info = Some((code.unwrap_or(1005), reason.to_owned()));
                }
                env.out.close(CloseReason::PeerClosed);
                return Step::Ended { ended: None };
            }
            Some(ws::Event::Text(text)) => (true, text.as_bytes()),
            Some(ws::Event::Binary(data)) => (false, data),
        };
        env.message.clear();
        env.message.extend_from_slice(payload);
        Step::Message { used, websocket: ws.handle, text }
    }

    /// A protocol violation by the client: a close frame with `code`, then
    /// linger, so the client reads it rather than a reset for the rest of
    /// what it is sending.
    pub fn fail_websocket<O: Output>(&self, code: u16, reason: &str, out: &O, now: Instant) -> Step<'static> {
        if let State::WebSocket(ws) = &mut *self.state.borrow_mut() {
            send_close(ws, out, code, reason);
        }
        Step::Ended { ended: self.linger(out, now) }
    }

    /// The WebSocket, if it may still send.
    fn websocket_open<O: Output>(&self, out: &O) -> Result<RefMut<'_, WebSocket>, ErrorCode> {
        let ws = self.websocket()?;
        if ws.close_sent || ws.close_received || !out.open() {
            return Err(ErrorCode::Closed);
        }
        Ok(ws)
    }

    fn websocket(&self) -> Result<RefMut<'_, WebSocket>, ErrorCode> {
        RefMut::filter_map(self.state.borrow_mut(), |s| match s {
            State::WebSocket(ws) | State::Lingering(Some(ws)) => Some(ws),
            _ => None,
        })
        .map_err(|_| ErrorCode::InvalidHandle)
    }

    /// `send`: one message, whole or not at all.
    pub fn send<O: Output>(&self, opcode: ws::Opcode, payload: &[u8], out: &O) -> Result<(), ErrorCode> {
        let _ws = self.websocket_open(out)?;
        let mut header = [0; 10];
        let header = ws::frame_header(&mut header, opcode, payload.len());
        if out.write_all(&[header, payload]) { Ok(()) } else { Err(ErrorCode::LimitReached) }
    }

    /// `websocket-notify-writable`.
    pub fn notify_websocket_writable(&self) -> Result<(), ErrorCode> {
        self.websocket().map(|mut ws| ws.notify_writable = true)
    }

    /// `close-websocket`: sends the close frame; the handshake ends when
    /// the peer answers.
    pub fn close_websocket<O: Output>(&self, code: u16, reason: &str, out: &O) -> Result<(), ErrorCode> {
        if !ws::valid_close_code(code) || reason.len() > 123 {
            return Err(ErrorCode::InvalidArgument);
        }
        send_close(&mut *self.websocket_open(out)?, out, code, reason);
        Ok(())
    }

    /// The host is shutting down: a WebSocket still open gets 1001.
    pub fn going_away<O: Output>(&self, out: &O) {
        if let Ok(mut ws) = self.websocket_open(out) {
            send_close(&mut ws, out, 1001, "the server is shutting down");
        }
    }
}
