//! Chat: every line a client sends (`\n`-terminated) goes to every other
//! connected client.
//!
//! Slow readers get every line, in order, as long as their backlog fits in
//! the host's per-connection output buffer. A client that falls further
//! behind is aborted: keeping its lines here would let one slow reader grow
//! our memory without bound, and dropping lines silently would corrupt its
//! stream.

use std::collections::HashMap;

use wasmloop_sdk::{CloseReason, Connection, Handler, Listener, export, warn};

/// The longest line accepted, not counting its `\n`.
const MAX_LINE: usize = 64 * 1024;

#[derive(Default)]
struct Chat {
    /// Every connected client, with the start of a line it has not finished.
    clients: HashMap<Connection, Vec<u8>>,
}

impl Chat {
    /// Writes `line` to every client but `from`, dropping those that cannot
    /// take all of it.
    fn broadcast(&mut self, from: Connection, line: &[u8]) {
        let mut behind = Vec::new();
        for &client in self.clients.keys().filter(|&&c| c != from) {
            // Anything short of the whole line means the client's output
            // buffer is full (or the write failed): its stream is broken.
            if client.write(line) != Ok(line.len()) {
                behind.push(client);
            }
        }
        for client in behind {
            self.drop_client(client, "cannot keep up");
        }
    }

    /// Aborts `client` and forgets it at once, so no more lines go to it
    /// before its `on_close`.
    fn drop_client(&mut self, client: Connection, why: &str) {
        warn!("{client:?} {why}; aborting it");
        let _ = client.abort();
        self.clients.remove(&client);
    }
}

impl Handler for Chat {
    fn init(_config: &str, _listeners: &[Listener]) -> Result<Self, String> {
        Ok(Chat::default())
    }

    fn on_accept(&mut self, _listener: Listener, conn: Connection) {
        self.clients.insert(conn, Vec::new());
    }

    fn on_data(&mut self, conn: Connection, data: &[u8]) {
        let Some(partial) = self.clients.get_mut(&conn) else {
            return;
        };
        // Split off the complete lines: the unfinished one plus `data` up to
        // its last `\n`. Only `data` is searched, so a long line arriving in
        // many small pieces is not rescanned each time.
        let lines = match data.iter().rposition(|&b| b == b'\n') {
            Some(last) => {
                let mut lines = std::mem::take(partial);
                lines.extend_from_slice(&data[..=last]);
                partial.extend_from_slice(&data[last + 1..]);
                lines
            }
            None => {
                partial.extend_from_slice(data);
                Vec::new()
            }
        };
        let unfinished_too_long = partial.len() > MAX_LINE;

        for line in lines.split_inclusive(|&b| b == b'\n') {
            if line.len() > MAX_LINE + 1 {
                return self.drop_client(conn, "sent a line over 64 KiB");
            }
            self.broadcast(conn, line);
        }
        if unfinished_too_long {
            self.drop_client(conn, "sent a line over 64 KiB");
        }
    }

    fn on_close(&mut self, conn: Connection, _reason: CloseReason) {
        self.clients.remove(&conn);
    }
}

export!(Chat);
