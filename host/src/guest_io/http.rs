//! The operations of the WIT `http` interface, on the requests and
//! WebSockets of connections the host speaks HTTP on. The protocol work is
//! `HttpConn`'s (`wasmloop_io::http`); here handles are checked and the
//! guest's output budget and reused buffers are handed to it. The runtime
//! lifts headers and bodies from guest memory without copying and calls
//! these (`runtime/http.rs`).

use std::net::SocketAddr;

use wasmloop_http::ws::Opcode;
use wasmloop_io::{ErrorCode, Handle, ReqKey};

use crate::guest_io::GuestIo;

impl GuestIo {
    /// `respond`: the whole response, or nothing.
    pub fn respond(&self, req: u64, status: u16, headers: &[(&str, &str)], body: &[u8]) -> Result<(), ErrorCode> {
        let (_, conn) = self.request(req)?;
        let scratch = &mut self.scratch.borrow_mut();
        conn.http()?.respond(status, headers.iter().copied(), body, &conn.out(&self.output), scratch)
    }

    /// `respond-start`: the head of a streamed response.
    pub fn respond_start(&self, req: u64, status: u16, headers: &[(&str, &str)]) -> Result<(), ErrorCode> {
        let (_, conn) = self.request(req)?;
        let scratch = &mut self.scratch.borrow_mut();
        conn.http()?.respond_start(status, headers.iter().copied(), &conn.out(&self.output), scratch)
    }

    /// `respond-write`: as much of `data` as fits.
    pub fn respond_write(&self, req: u64, data: &[u8]) -> Result<u32, ErrorCode> {
        let (_, conn) = self.request(req)?;
        conn.http()?.respond_write(data, &conn.out(&self.output))
    }

    /// `respond-finish`.
    pub fn respond_finish(&self, req: u64) -> Result<(), ErrorCode> {
        let (_, conn) = self.request(req)?;
        conn.http()?.respond_finish(&conn.out(&self.output))
    }

    /// `notify-writable` on a request.
    pub fn notify_response_writable(&self, req: u64) -> Result<(), ErrorCode> {
        self.request(req)?.1.http()?.notify_response_writable()
    }

    /// The request's peer; `None` if the OS cannot tell (already reset).
    pub fn request_peer_address(&self, req: u64) -> Result<Option<SocketAddr>, ErrorCode> {
        self.request(req).map(|(_, conn)| conn.transport.peer_addr().ok())
    }

    /// `accept-websocket`: the request handle dies, the WebSocket's is
    /// returned.
    pub fn accept_websocket(&self, req: u64, protocol: Option<&str>) -> Result<u64, ErrorCode> {
        let (key, conn) = self.request(req)?;
        let out = conn.out(&self.output);
        let scratch = &mut self.scratch.borrow_mut();
        conn.http()?.accept_websocket(protocol, &out, scratch, &self.limits.http, || {
            self.requests.borrow_mut().remove(ReqKey::from_handle(req));
            self.websockets.borrow_mut().insert(key).handle()
        })
    }

    /// `send`: one whole message, or nothing.
    pub fn send(&self, ws: u64, opcode: Opcode, payload: &[u8]) -> Result<(), ErrorCode> {
        let conn = self.websocket(ws)?;
        conn.http()?.send(opcode, payload, &conn.out(&self.output))
    }

    /// `websocket-notify-writable`.
    pub fn notify_websocket_writable(&self, ws: u64) -> Result<(), ErrorCode> {
        self.websocket(ws)?.http()?.notify_websocket_writable()
    }

    /// `close-websocket`.
    pub fn close_websocket(&self, ws: u64, code: u16, reason: &str) -> Result<(), ErrorCode> {
        let conn = self.websocket(ws)?;
        conn.http()?.close_websocket(code, reason, &conn.out(&self.output))
    }
}
