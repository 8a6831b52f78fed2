//! Relay: a TCP proxy. Each accepted client gets its own connection to the
//! upstream address given as the guest config (`IP:port`; the operator must
//! allow it with `--connect`), and bytes are piped both ways.
//!
//! - Backpressure: when one side's output buffer is full, the rest waits
//!   here, reading from the other side is paused (TCP flow control slows
//!   that peer down) and `on_writable` sends it once the buffer drains.
//! - Half-close: an EOF from one side becomes a FIN to the other once
//!   everything before it was sent; when both directions have ended, both
//!   connections are closed.
//! - A failed connect, a reset or any error closes both sides together.

use std::collections::HashMap;
use std::net::SocketAddr;

use wasmloop_sdk::{CloseReason, ConnectError, Connection, EofAction, Handler, Listener, debug, export, warn};

struct Relay {
    upstream: String,
    /// Both connections of every pair, each with what flows into it.
    sides: HashMap<Connection, Side>,
}

/// One connection of a pair, seen as the destination of the other's bytes.
struct Side {
    /// The other connection of the pair.
    peer: Connection,
    /// Bytes for this connection the host has not taken yet. Reading from
    /// `peer` is paused while there are any.
    pending: Vec<u8>,
    /// This connection's peer sent EOF: nothing more comes from it.
    eof: bool,
    /// FIN sent on this connection (`peer` ended and all of it was sent).
    shut: bool,
}

impl Side {
    fn new(peer: Connection) -> Side {
        Side { peer, pending: Vec::new(), eof: false, shut: false }
    }
}

impl Relay {
    /// Sends `data`, read from `src`, to `dst`; keeps what the host does not
    /// take and pauses `src` until `dst` has drained.
    fn forward(&mut self, src: Connection, dst: Connection, data: &[u8]) {
        let Some(side) = self.sides.get_mut(&dst) else { return };
        if !side.pending.is_empty() {
            // Reading `src` is paused while bytes are pending, so the host
            // should not get here; if it does, keep the order anyway.
            side.pending.extend_from_slice(data);
            return;
        }
        match dst.write(data) {
            Ok(taken) if taken == data.len() => {}
            Ok(taken) => {
                side.pending.extend_from_slice(&data[taken..]);
                let _ = src.pause_reading();
                let _ = dst.notify_writable();
            }
            Err(e) => {
                warn!("{dst:?}: write failed ({e}); aborting both sides");
                self.abort_pair(dst);
            }
        }
    }

    /// Sends FIN on `dst` once its peer has ended and everything it sent
    /// was passed on; closes the pair when both directions are done.
    fn pass_eof(&mut self, dst: Connection) {
        let Some(side) = self.sides.get(&dst) else { return };
        let src = side.peer;
        let ended = self.sides.get(&src).is_some_and(|s| s.eof);
        if !ended || side.shut || !side.pending.is_empty() {
            return;
        }
        let _ = dst.shutdown_write();
        if let Some(side) = self.sides.get_mut(&dst) {
            side.shut = true;
        }
        if self.sides.get(&src).is_some_and(|s| s.shut) {
            // Both directions ended: close both (the host still sends what
            // it buffered).
            self.sides.remove(&dst);
            self.sides.remove(&src);
            let _ = dst.close();
            let _ = src.close();
        }
    }

    /// Forgets the pair of `conn` and closes both (gracefully).
    fn close_pair(&mut self, conn: Connection) {
        if let Some(side) = self.sides.remove(&conn) {
            self.sides.remove(&side.peer);
            let _ = side.peer.close();
        }
        let _ = conn.close();
    }

    /// Forgets the pair of `conn` and resets both.
    fn abort_pair(&mut self, conn: Connection) {
        if let Some(side) = self.sides.remove(&conn) {
            self.sides.remove(&side.peer);
            let _ = side.peer.abort();
        }
        let _ = conn.abort();
    }
}

impl Handler for Relay {
    fn init(config: &str, _listeners: &[Listener]) -> Result<Self, String> {
        let upstream = config.trim();
        upstream
            .parse::<SocketAddr>()
            .map_err(|_| format!("the config must be the upstream address (IP:port), got {config:?}"))?;
        Ok(Relay { upstream: upstream.to_string(), sides: HashMap::new() })
    }

    fn on_accept(&mut self, _listener: Listener, client: Connection) {
        match Connection::connect(&self.upstream) {
            Ok(upstream) => {
                // Bytes from the client may be written to `upstream` at once:
                // the host buffers them until the connect completes.
                self.sides.insert(client, Side::new(upstream));
                self.sides.insert(upstream, Side::new(client));
            }
            Err(e) => {
                warn!("{client:?}: cannot connect to {}: {e}", self.upstream);
                let _ = client.close();
            }
        }
    }

    fn on_connect(&mut self, upstream: Connection, outcome: Result<(), ConnectError>) {
        match outcome {
            Ok(()) => debug!("{upstream:?}: connected to {}", self.upstream),
            Err(e) => {
                warn!("{upstream:?}: connect to {} failed: {e}", self.upstream);
                // `upstream` is dead already (no on_close comes): close the
                // client alone.
                if let Some(side) = self.sides.remove(&upstream) {
                    self.sides.remove(&side.peer);
                    let _ = side.peer.close();
                }
            }
        }
    }

    fn on_data(&mut self, src: Connection, data: &[u8]) {
        if let Some(dst) = self.sides.get(&src).map(|s| s.peer) {
            self.forward(src, dst, data);
        }
    }

    fn on_writable(&mut self, dst: Connection) {
        let Some(side) = self.sides.get_mut(&dst) else { return };
        if side.pending.is_empty() {
            return;
        }
        match dst.write(&side.pending) {
            Ok(taken) => {
                side.pending.drain(..taken);
                if !side.pending.is_empty() {
                    let _ = dst.notify_writable();
                    return;
                }
                let src = side.peer;
                let _ = src.resume_reading();
                self.pass_eof(dst);
            }
            Err(e) => {
                warn!("{dst:?}: write failed ({e}); aborting both sides");
                self.abort_pair(dst);
            }
        }
    }

    fn on_eof(&mut self, src: Connection) -> EofAction {
        let Some(side) = self.sides.get_mut(&src) else { return EofAction::Close };
        side.eof = true;
        let dst = side.peer;
        self.pass_eof(dst);
        // Closed with its peer, once both directions are done.
        EofAction::KeepOpen
    }

    fn on_close(&mut self, conn: Connection, reason: CloseReason) {
        if self.sides.contains_key(&conn) {
            debug!("{conn:?} closed ({reason:?}); closing its peer");
            self.close_pair(conn);
        }
    }
}

export!(Relay);
