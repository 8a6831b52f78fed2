//! The operations of the WIT `outbound` and `datagrams` interfaces: sockets
//! a guest opens itself, each checked against what the operator granted
//! (`Grants`).
//!
//! Imports cannot reach the reactor, so a socket made here is only put in
//! the guest's tables and listed for the server, which registers it right
//! after the callback returns (`GuestIo::dirty`, `GuestIo::udp_new`); a
//! closed UDP socket is handed over the same way (`udp_closed`) so it is
//! deregistered before its descriptor is closed.

use std::io;
use std::net::{SocketAddr, TcpStream, UdpSocket as StdUdpSocket};
use std::os::fd::OwnedFd;

use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketType, sockopt};
use wasmloop_io::{Connection, Handle, UNREGISTERED, UdpKey};

use crate::guest_io::GuestIo;

/// A bound UDP socket of a guest.
pub struct UdpSocket {
    pub socket: std::net::UdpSocket,
    /// The reactor token (route) it is registered under;
    /// [`UNREGISTERED`](wasmloop_io::UNREGISTERED) until the server
    /// registers it after the callback that bound it.
    pub token: u64,
    /// Receiving waits for the guest's CPU share: new datagrams are left to
    /// the queued work.
    pub postponed: std::cell::Cell<bool>,
}

/// Why `connect` failed. Mirrors the WIT `connect-error` one to one (the
/// runtime converts at the wasm boundary; see its docs there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectError {
    Denied,
    InvalidAddress,
    LimitReached,
    Refused,
    TimedOut,
    Unreachable,
    Other,
}

/// Why a `datagrams` call failed. Mirrors the WIT `datagram-error` one to
/// one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatagramError {
    Denied,
    InvalidHandle,
    InvalidAddress,
    TooLarge,
    WouldBlock,
    Other,
}

const ALLOWLIST: &str = "not on the guest's allowlist (--connect)";

/// The largest UDP payload over IPv4 (65,535 - 8 UDP - 20 IP header bytes).
const MAX_DATAGRAM: usize = 65_507;

impl GuestIo {
    /// Starts connecting to `address` (`outbound.connect`).
    pub fn connect(&mut self, address: &str) -> Result<u64, ConnectError> {
        let addr: SocketAddr = address.parse().map_err(|_| ConnectError::InvalidAddress)?;
        if !self.grants.connect.allows(addr) {
            self.log_denied("connect to", addr, ALLOWLIST);
            return Err(ConnectError::Denied);
        }
        if !self.has_outbound {
            if !std::mem::replace(&mut self.logged_no_outbound, true) {
                tracing::warn!(
                    guest = &*self.name,
                    "connect refused: the guest does not export `outbound-callbacks`, so it could never learn the outcome"
                );
            }
            return Err(ConnectError::Other);
        }
        // Pending connects are few (64 by default) but live among all the
        // guest's connections; counting them costs one pass, next to a
        // socket and a connect system call.
        let pending = self.connections.values().filter(|c| c.connecting.get()).count();
        if self.connections.len() >= self.limits.max_connections || pending >= self.limits.max_pending_connects {
            return Err(ConnectError::LimitReached);
        }
        let socket = start_connect(addr).map_err(|e| {
            tracing::debug!(guest = &*self.name, "connect to {addr} failed at once: {e}");
            connect_error(e)
        })?;
        let key = self.connections.insert(Connection::outbound(socket, self.limits.max_output));
        self.dirty.get_mut().push(key);
        Ok(key.handle())
    }

    /// Binds a granted UDP address (`datagrams.bind`).
    pub fn udp_bind(&mut self, address: &str) -> Result<u64, DatagramError> {
        let addr: SocketAddr = address.parse().map_err(|_| DatagramError::InvalidAddress)?;
        // Exact match: a grant of port 0 allows port 0 (the kernel picks).
        if !self.grants.udp.contains(&addr) {
            self.log_denied("UDP bind on", addr, "not a granted UDP address (--udp)");
            return Err(DatagramError::Denied);
        }
        if self.udp.len() >= self.limits.max_connections {
            tracing::debug!(guest = &*self.name, "UDP bind on {addr} refused: too many UDP sockets");
            return Err(DatagramError::Other);
        }
        let socket = bind_udp(addr).map_err(|e| {
            tracing::debug!(guest = &*self.name, "UDP bind on {addr} failed: {e}");
            DatagramError::Other
        })?;
        let key = self.udp.insert(UdpSocket { socket, token: UNREGISTERED, postponed: Default::default() });
        self.udp_new.push(key);
        Ok(key.handle())
    }

    /// Sends one datagram, never blocking (`datagrams.send-to`).
    pub fn udp_send_to(&mut self, s: u64, peer: &str, data: &[u8]) -> Result<(), DatagramError> {
        let key = UdpKey::from_handle(s);
        if !self.udp.contains_key(key) {
            return Err(DatagramError::InvalidHandle);
        }
        let peer: SocketAddr = peer.parse().map_err(|_| DatagramError::InvalidAddress)?;
        if !self.grants.connect.allows(peer) {
            self.log_denied("send to", peer, ALLOWLIST);
            return Err(DatagramError::Denied);
        }
        if data.len() > MAX_DATAGRAM {
            return Err(DatagramError::TooLarge);
        }
        let socket = &self.udp[key].socket;
        loop {
            return match socket.send_to(data, peer) {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(DatagramError::WouldBlock),
                Err(e) if e.raw_os_error() == Some(Errno::MSGSIZE.raw_os_error()) => Err(DatagramError::TooLarge),
                Err(e) => {
                    tracing::debug!(guest = &*self.name, "UDP send to {peer} failed: {e}");
                    Err(DatagramError::Other)
                }
            };
        }
    }

    /// The address a UDP socket is bound to (`datagrams.local-address`).
    pub fn udp_local_address(&self, s: u64) -> Result<SocketAddr, DatagramError> {
        let socket = self.udp.get(UdpKey::from_handle(s)).ok_or(DatagramError::InvalidHandle)?;
        socket.socket.local_addr().map_err(|_| DatagramError::Other)
    }

    /// `datagrams.close`.
    pub fn udp_close(&mut self, s: u64) -> Result<(), DatagramError> {
        let socket = self.udp.remove(UdpKey::from_handle(s)).ok_or(DatagramError::InvalidHandle)?;
        // Still open: the server deregisters it, then drops (closes) it.
        self.udp_closed.push(socket);
        Ok(())
    }
}

/// A non-blocking, close-on-exec TCP socket with its connect to `addr`
/// started.
fn start_connect(addr: SocketAddr) -> Result<TcpStream, Errno> {
    let fd = new_socket(addr, SocketType::STREAM)?;
    // Small messages go out at once, as on accepted connections.
    let _ = sockopt::set_tcp_nodelay(&fd, true);
    match rustix::net::connect(&fd, &addr) {
        // Loopback may connect at once; either way the socket reports
        // writable when the outcome is known, and the server reads it there.
        Ok(()) | Err(Errno::INPROGRESS) | Err(Errno::INTR) => Ok(TcpStream::from(fd)),
        Err(e) => Err(e),
    }
}

fn new_socket(addr: SocketAddr, kind: SocketType) -> Result<OwnedFd, Errno> {
    let family = if addr.is_ipv4() { AddressFamily::INET } else { AddressFamily::INET6 };
    crate::sys::socket(family, kind)
}

/// How a failed connect (its `SO_ERROR`, or the `connect` call itself) is
/// reported to the guest.
pub fn connect_error(errno: Errno) -> ConnectError {
    match errno {
        Errno::CONNREFUSED => ConnectError::Refused,
        Errno::NETUNREACH | Errno::HOSTUNREACH | Errno::NETDOWN | Errno::HOSTDOWN => ConnectError::Unreachable,
        Errno::TIMEDOUT => ConnectError::TimedOut,
        _ => ConnectError::Other,
    }
}

/// A non-blocking, close-on-exec UDP socket bound to `addr`.
fn bind_udp(addr: SocketAddr) -> Result<StdUdpSocket, Errno> {
    let fd = new_socket(addr, SocketType::DGRAM)?;
    rustix::net::bind(&fd, &addr)?;
    Ok(StdUdpSocket::from(fd))
}
