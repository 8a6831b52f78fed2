//! Connections and listeners.

use crate::Result;
use crate::bindings::wasmloop::handler::connections;

/// A TCP connection, from [`Handler::on_accept`](crate::Handler::on_accept)
/// until [`Handler::on_close`](crate::Handler::on_close).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Connection(pub(crate) u64);

impl Connection {
    /// Queues `data` for sending and returns how many bytes the host took.
    ///
    /// Less than `data.len()` means the connection's output buffer is full:
    /// the rest was not taken and is still the guest's to send later (see
    /// [`notify_writable`](Self::notify_writable)).
    ///
    /// Fails with [`Error::Closed`](crate::Error::Closed) after
    /// [`close`](Self::close), [`abort`](Self::abort) or
    /// [`shutdown_write`](Self::shutdown_write).
    pub fn write(&self, data: &[u8]) -> Result<usize> {
        Ok(connections::write(self.0, data)? as usize)
    }

    /// Asks for one [`on_writable`](crate::Handler::on_writable) call once the
    /// output buffer is empty (right after this callback if it already is).
    pub fn notify_writable(&self) -> Result<()> {
        Ok(connections::notify_writable(self.0)?)
    }

    /// Stops [`on_data`](crate::Handler::on_data) until
    /// [`resume_reading`](Self::resume_reading); the peer is slowed down by
    /// TCP flow control meanwhile.
    pub fn pause_reading(&self) -> Result<()> {
        Ok(connections::pause_reading(self.0)?)
    }

    /// Undoes [`pause_reading`](Self::pause_reading); bytes that arrived
    /// meanwhile come after the current callback.
    pub fn resume_reading(&self) -> Result<()> {
        Ok(connections::resume_reading(self.0)?)
    }

    /// Half-close: sends FIN once buffered output is sent. Reading goes on;
    /// later writes fail.
    pub fn shutdown_write(&self) -> Result<()> {
        Ok(connections::shutdown_write(self.0)?)
    }

    /// Graceful close: no more data is delivered, buffered output is still
    /// sent, then [`on_close`](crate::Handler::on_close) follows.
    pub fn close(&self) -> Result<()> {
        Ok(connections::close(self.0)?)
    }

    /// Immediate close: buffered output is discarded and the peer gets a
    /// reset. [`on_close`](crate::Handler::on_close) follows.
    pub fn abort(&self) -> Result<()> {
        Ok(connections::abort(self.0)?)
    }

    /// Bytes in the output buffer not yet handed to the kernel.
    pub fn buffered(&self) -> Result<usize> {
        Ok(connections::buffered(self.0)? as usize)
    }

    /// The peer's address, e.g. `127.0.0.1:51234`.
    pub fn peer_address(&self) -> Result<String> {
        Ok(connections::peer_address(self.0)?)
    }

    /// Our side's address.
    pub fn local_address(&self) -> Result<String> {
        Ok(connections::local_address(self.0)?)
    }

    /// The host's handle number, e.g. for logs.
    pub fn raw(&self) -> u64 {
        self.0
    }
}

/// A listening socket granted to the guest, as passed to
/// [`Handler::init`](crate::Handler::init).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Listener(pub(crate) u64);

impl Listener {
    /// The bound address, e.g. `127.0.0.1:7000` or `[::1]:7000`.
    pub fn address(&self) -> Result<String> {
        Ok(connections::listener_address(self.0)?)
    }

    /// The host's handle number, e.g. for logs.
    pub fn raw(&self) -> u64 {
        self.0
    }
}
