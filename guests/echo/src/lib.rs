//! Echo: sends every byte back, in order, without dropping any under
//! backpressure.
//!
//! When the host's output buffer for a connection is full, `write` takes only
//! part of the data. The rest waits here, reading is paused (so TCP flow
//! control slows the peer down instead of our memory growing), and
//! `on_writable` sends it once the buffer drains.

use std::collections::HashMap;

use wasmloop_sdk::{CloseReason, Connection, EofAction, Handler, Listener, export, warn};

#[derive(Default)]
struct Echo {
    /// Connections with bytes the host has not taken yet. Only connections
    /// under backpressure have an entry.
    pending: HashMap<Connection, Pending>,
}

struct Pending {
    /// Received bytes not yet taken by `write`, oldest first.
    bytes: Vec<u8>,
    /// The peer has sent EOF: close once `bytes` are written.
    close_when_done: bool,
}

impl Handler for Echo {
    fn init(_config: &str, _listeners: &[Listener]) -> Result<Self, String> {
        Ok(Echo::default())
    }

    fn on_data(&mut self, conn: Connection, data: &[u8]) {
        if let Some(pending) = self.pending.get_mut(&conn) {
            // Reading is paused while bytes are pending, so the host should
            // not get here; if it does, keep the order anyway.
            pending.bytes.extend_from_slice(data);
            return;
        }
        let Some(taken) = write(conn, data) else {
            return;
        };
        if taken < data.len() {
            self.pending.insert(conn, Pending { bytes: data[taken..].to_vec(), close_when_done: false });
            // These only fail for a connection that is closing, where there
            // is nothing left to do anyway.
            let _ = conn.pause_reading();
            let _ = conn.notify_writable();
        }
    }

    fn on_writable(&mut self, conn: Connection) {
        let Some(pending) = self.pending.get_mut(&conn) else {
            return;
        };
        let Some(taken) = write(conn, &pending.bytes) else {
            return;
        };
        pending.bytes.drain(..taken);
        if !pending.bytes.is_empty() {
            // The buffer filled up again: wait for the next drain.
            let _ = conn.notify_writable();
            return;
        }
        let done = self.pending.remove(&conn).is_some_and(|p| p.close_when_done);
        if done {
            // Graceful close: the host still sends what it buffered.
            let _ = conn.close();
        } else {
            let _ = conn.resume_reading();
        }
    }

    fn on_eof(&mut self, conn: Connection) -> EofAction {
        match self.pending.get_mut(&conn) {
            // Everything was handed to the host, which sends it before
            // closing.
            None => EofAction::Close,
            // Bytes still wait here: close ourselves once they are written,
            // so a half-closed client still gets all of its bytes back.
            Some(pending) => {
                pending.close_when_done = true;
                EofAction::KeepOpen
            }
        }
    }

    fn on_close(&mut self, conn: Connection, _reason: CloseReason) {
        self.pending.remove(&conn);
    }
}

/// Writes `data` to `conn` and returns how many bytes the host took. A write
/// error means echoing can no longer be complete, so the connection is
/// aborted rather than left with a gap, and `None` is returned.
fn write(conn: Connection, data: &[u8]) -> Option<usize> {
    match conn.write(data) {
        Ok(taken) => Some(taken),
        Err(e) => {
            warn!("{conn:?}: write failed ({e}); aborting");
            let _ = conn.abort();
            None
        }
    }
}

export!(Echo);
