//! WebSocket chat (`host run ... --listen-ws ADDR`): every text message a
//! client sends goes to every *other* connected client.
//!
//! - Every upgrade request is accepted, with the subprotocol `chat` if the
//!   client offers it, else none.
//! - A plain `GET /` (or `HEAD /`) gets a short text saying what this is;
//!   any other request gets `404`.
//! - Binary messages are echoed back to their sender only: a way to test
//!   large messages end to end.
//! - The text message `/quit` makes the server close that client with 1000
//!   `bye`.
//!
//! Slow readers: sending a message is all or nothing, and the host refuses
//! one that does not fit the client's output buffer (`LimitReached`). Such
//! a client has fallen a whole buffer behind; it is closed with 1008 (policy
//! violation) rather than given a backlog here, which would let one slow
//! reader grow our memory without bound, or skipped, which would silently
//! lose messages. A binary echo that does not fit counts the same.

use std::collections::BTreeSet;

use wasmloop_sdk::{Error, Handler, Listener, Message, Request, RequestHead, WebSocket, export, warn};

const ABOUT: &[u8] = b"ws-chat: a WebSocket chat. Connect with a WebSocket client (subprotocol `chat` \
is optional). Each text message goes to every other client; binary messages come back to their \
sender; the text `/quit` closes your connection.\n";
const TEXT: &[(&str, &str)] = &[("content-type", "text/plain")];

/// The subprotocol chosen when the client offers it.
const PROTOCOL: &str = "chat";

#[derive(Default)]
struct WsChat {
    /// Clients that get messages: accepted, and not being closed by us.
    /// (A client we close stays known to the host until
    /// `on_websocket_close`, but gets nothing more from us.)
    open: BTreeSet<WebSocket>,
}

impl Handler for WsChat {
    fn init(_config: &str, _listeners: &[Listener]) -> Result<Self, String> {
        Ok(WsChat::default())
    }

    fn on_request(&mut self, req: Request, head: &RequestHead, _body: &[u8], _end: bool) {
        let result = if head.is_websocket() {
            let protocol = head.websocket_protocols().any(|p| p == PROTOCOL).then_some(PROTOCOL);
            req.accept_websocket(protocol).map(|ws| {
                self.open.insert(ws);
            })
        } else if head.path() == "/" && matches!(head.method(), "GET" | "HEAD") {
            req.respond(200, TEXT, ABOUT)
        } else {
            req.respond(404, TEXT, b"not found: this is a WebSocket chat, see GET /\n")
        };
        if let Err(e) = result {
            // Only a client that is already gone makes these fail.
            warn!("{req:?}: cannot answer ({e})");
        }
    }

    fn on_websocket_message(&mut self, ws: WebSocket, message: Message<'_>) {
        if !self.open.contains(&ws) {
            // In flight before our close; the client is leaving.
            return;
        }
        match message {
            Message::Text(text) if text.trim() == "/quit" => self.close(ws, 1000, "bye"),
            Message::Text(text) => self.broadcast(ws, text),
            Message::Binary(data) => {
                if let Err(e) = ws.send_binary(data) {
                    self.failed(ws, e);
                }
            }
        }
    }

    fn on_websocket_close(&mut self, ws: WebSocket, _code: u16, _reason: &str) {
        self.open.remove(&ws);
    }
}

impl WsChat {
    /// Sends `text` to every open client but `from`.
    fn broadcast(&mut self, from: WebSocket, text: &str) {
        // Allocates only when someone failed.
        let mut failed = Vec::new();
        for &client in self.open.iter().filter(|&&client| client != from) {
            if let Err(e) = client.send_text(text) {
                failed.push((client, e));
            }
        }
        for (client, e) in failed {
            self.failed(client, e);
        }
    }

    /// Deals with a send to `ws` that failed with `e`.
    fn failed(&mut self, ws: WebSocket, e: Error) {
        match e {
            Error::LimitReached => self.close(ws, 1008, "too slow: messages are piling up"),
            // The peer began closing: `on_websocket_close` follows.
            Error::Closed => {
                self.open.remove(&ws);
            }
            e => {
                warn!("{ws:?}: send failed ({e}); forgetting it");
                self.open.remove(&ws);
            }
        }
    }

    fn close(&mut self, ws: WebSocket, code: u16, reason: &str) {
        self.open.remove(&ws);
        if let Err(e) = ws.close(code, reason) {
            warn!("{ws:?}: cannot close with {code} ({e})");
        }
    }
}

export!(WsChat);
