//! UDP sockets on addresses the operator granted.

use std::fmt;

use crate::bindings::wasmloop::handler::datagrams;

/// A bound UDP socket. Datagrams arriving on it come to
/// [`Handler::on_datagram`](crate::Handler::on_datagram); it lives until
/// [`close`](Self::close) (or until the guest stops).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UdpSocket(pub(crate) u64);

impl UdpSocket {
    /// Binds `address`, which must be one the operator granted with
    /// `--udp ADDR` (exactly; a grant with port 0 lets the kernel pick the
    /// port, see [`local_address`](Self::local_address)).
    pub fn bind(address: &str) -> Result<UdpSocket, DatagramError> {
        Ok(UdpSocket(datagrams::bind(address)?))
    }

    /// Sends one datagram to `peer` (an `IP:port` on the guest's allowlist,
    /// the operator's `--connect` rules). Never blocks: when the kernel's
    /// send buffer is full the datagram is not sent and
    /// [`DatagramError::WouldBlock`] is returned.
    pub fn send_to(&self, peer: &str, data: &[u8]) -> Result<(), DatagramError> {
        Ok(datagrams::send_to(self.0, peer, data)?)
    }

    /// The address the socket is bound to, e.g. `127.0.0.1:5353`.
    pub fn local_address(&self) -> Result<String, DatagramError> {
        Ok(datagrams::local_address(self.0)?)
    }

    /// Closes the socket; the handle is dead afterwards.
    pub fn close(&self) -> Result<(), DatagramError> {
        Ok(datagrams::close(self.0)?)
    }
}

/// Why a [`UdpSocket`] call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DatagramError {
    /// The address is not granted (bind) or the peer is not on the
    /// allowlist (send).
    Denied,
    /// The socket is not one of this guest's live sockets.
    InvalidHandle,
    /// Not an `IP:port`.
    InvalidAddress,
    /// Larger than a datagram can be (65,507 bytes over IPv4).
    TooLarge,
    /// The kernel's send buffer is full; the datagram was not sent.
    WouldBlock,
    /// Any other failure, e.g. the address is in use.
    Other,
}

impl From<datagrams::DatagramError> for DatagramError {
    fn from(error: datagrams::DatagramError) -> Self {
        match error {
            datagrams::DatagramError::Denied => DatagramError::Denied,
            datagrams::DatagramError::InvalidHandle => DatagramError::InvalidHandle,
            datagrams::DatagramError::InvalidAddress => DatagramError::InvalidAddress,
            datagrams::DatagramError::TooLarge => DatagramError::TooLarge,
            datagrams::DatagramError::WouldBlock => DatagramError::WouldBlock,
            datagrams::DatagramError::Other => DatagramError::Other,
        }
    }
}

impl fmt::Display for DatagramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DatagramError::Denied => "address not allowed",
            DatagramError::InvalidHandle => "invalid handle",
            DatagramError::InvalidAddress => "not an IP:port address",
            DatagramError::TooLarge => "datagram too large",
            DatagramError::WouldBlock => "send buffer full",
            DatagramError::Other => "datagram operation failed",
        })
    }
}

impl std::error::Error for DatagramError {}
