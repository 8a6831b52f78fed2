//! The operations of the WIT `connections` interface, shared by the wasm
//! imports (`runtime/imports.rs`) and native handlers (`runtime/native.rs`).
//! The WIT docs of each function are the contract.

use std::net::SocketAddr;

use wasmloop_io::{CloseReason, ErrorCode};

use crate::guest_io::GuestIo;

impl GuestIo {
    /// Takes what fits of `data` and returns how much that is (`write`).
    pub fn write(&self, h: u64, data: &[u8]) -> Result<usize, ErrorCode> {
        let conn = self.connection(h)?;
        if !conn.accepts_output() {
            return Err(ErrorCode::Closed);
        }
        let taken = conn.write(data, &self.output);
        if conn.failed.borrow().is_some() {
            // The socket failed: the host finishes the connection after the
            // callback, and the bytes are lost with it.
            let _ = self.touch(h);
            return Err(ErrorCode::Closed);
        }
        Ok(taken)
    }

    pub fn notify_writable(&self, h: u64) -> Result<(), ErrorCode> {
        self.touch(h).map(|c| c.notify_writable.set(true))
    }

    pub fn pause_reading(&self, h: u64) -> Result<(), ErrorCode> {
        self.connection(h).map(|c| c.paused.set(true))
    }

    pub fn resume_reading(&self, h: u64) -> Result<(), ErrorCode> {
        self.touch(h).map(|c| {
            c.paused.set(false);
            c.resumed.set(true);
        })
    }

    pub fn shutdown_write(&self, h: u64) -> Result<(), ErrorCode> {
        self.touch(h).and_then(|c| {
            if c.accepts_output() {
                c.shutdown_requested.set(true);
                Ok(())
            } else {
                Err(ErrorCode::Closed)
            }
        })
    }

    pub fn close(&self, h: u64) -> Result<(), ErrorCode> {
        self.touch(h).map(|c| {
            c.closing.borrow_mut().get_or_insert(CloseReason::Local);
        })
    }

    pub fn abort(&self, h: u64) -> Result<(), ErrorCode> {
        self.touch(h).map(|c| {
            c.abort.set(true);
            *c.closing.borrow_mut() = Some(CloseReason::Local);
        })
    }

    pub fn buffered(&self, h: u64) -> Result<usize, ErrorCode> {
        self.connection(h).map(|c| c.buffered())
    }

    /// The peer's address; `None` if the OS cannot tell (already reset).
    pub fn peer_address(&self, h: u64) -> Result<Option<SocketAddr>, ErrorCode> {
        self.connection(h).map(|c| c.transport.peer_addr().ok())
    }

    /// Our side's address; `None` if the OS cannot tell.
    pub fn local_address(&self, h: u64) -> Result<Option<SocketAddr>, ErrorCode> {
        self.connection(h).map(|c| c.transport.local_addr().ok())
    }
}
