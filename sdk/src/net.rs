//! Connections and listeners.

use std::fmt;

use crate::Result;
use crate::bindings::wasmloop::handler::{connections, outbound};

/// A TCP connection, from [`Handler::on_accept`](crate::Handler::on_accept)
/// (or a successful [`Handler::on_connect`](crate::Handler::on_connect))
/// until [`Handler::on_close`](crate::Handler::on_close).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Connection(pub(crate) u64);

impl Connection {
    /// Starts an outbound TCP connect to `address`, an `IP:port` such as
    /// `127.0.0.1:6379` or `[::1]:8080` (names are not resolved).
    ///
    /// Returns at once with the new connection's handle; the outcome comes
    /// later, in [`Handler::on_connect`](crate::Handler::on_connect). No other
    /// callback arrives for the connection before that one. Meanwhile the
    /// connection can be used as usual, but nothing reaches the socket yet:
    /// [`write`](Self::write) buffers (up to the host's per-connection limit)
    /// and the bytes are sent once connected; [`close`](Self::close) lets the
    /// connect finish, sends the buffered bytes and closes
    /// (`on_connect(Ok)` then `on_close`); [`abort`](Self::abort) cancels the
    /// connect (`on_close` only). Every connection from `connect` ends with
    /// exactly one of `on_connect(Err(..))` or `on_close`.
    ///
    /// The operator must allow the address (`--connect`); otherwise this
    /// fails with [`ConnectError::Denied`].
    pub fn connect(address: &str) -> Result<Connection, ConnectError> {
        Ok(Connection(outbound::connect(address)?))
    }

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
}

/// Why an outbound connect failed: from [`Connection::connect`] at once, or
/// later in [`Handler::on_connect`](crate::Handler::on_connect).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnectError {
    /// Not on the guest's allowlist (the operator's `--connect` rules).
    Denied,
    /// Not an `IP:port`; names are not resolved.
    InvalidAddress,
    /// Too many connections or pending connects for this guest.
    LimitReached,
    /// The peer refused the connection.
    Refused,
    /// No answer within the host's connect timeout.
    TimedOut,
    /// No route to the host or network.
    Unreachable,
    /// Any other failure.
    Other,
}

impl From<outbound::ConnectError> for ConnectError {
    fn from(error: outbound::ConnectError) -> Self {
        match error {
            outbound::ConnectError::Denied => ConnectError::Denied,
            outbound::ConnectError::InvalidAddress => ConnectError::InvalidAddress,
            outbound::ConnectError::LimitReached => ConnectError::LimitReached,
            outbound::ConnectError::Refused => ConnectError::Refused,
            outbound::ConnectError::TimedOut => ConnectError::TimedOut,
            outbound::ConnectError::Unreachable => ConnectError::Unreachable,
            outbound::ConnectError::Other => ConnectError::Other,
        }
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConnectError::Denied => "address not allowed",
            ConnectError::InvalidAddress => "not an IP:port address",
            ConnectError::LimitReached => "too many connections",
            ConnectError::Refused => "connection refused",
            ConnectError::TimedOut => "connect timed out",
            ConnectError::Unreachable => "host or network unreachable",
            ConnectError::Other => "connect failed",
        })
    }
}

impl std::error::Error for ConnectError {}
