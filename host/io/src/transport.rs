//! The transport seam: what carries a connection's bytes. Everything above
//! it — the raw byte path, HTTP, WebSocket — reads and writes through a
//! [`Transport`] and never sees what is underneath.
//!
//! Today there is one kind, plain TCP. TLS will be a second variant that
//! owns the TCP stream and a sans-IO session: it takes ciphertext from the
//! socket and gives plaintext up, so the layers above stay as they are. An
//! enum rather than a trait object: the variant is known at every call, so
//! the per-event path pays a predictable branch, not an indirect call.
//!
//! Not guaranteed: a read or write may return `WouldBlock` at any time
//! (sockets are non-blocking and edge-triggered); the caller keeps what was
//! not taken.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};

/// What carries one connection's bytes.
#[derive(Debug)]
pub enum Transport {
    /// A TCP stream, bytes as they are.
    Tcp(TcpStream),
}

impl Transport {
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => (&*s).read(buf),
        }
    }

    pub fn write(&self, data: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => (&*s).write(data),
        }
    }

    pub fn write_vectored(&self, parts: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => (&*s).write_vectored(parts),
        }
    }

    /// Sends FIN: the peer reads end-of-stream once it has the rest.
    pub fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Transport::Tcp(s) => s.shutdown(Shutdown::Write),
        }
    }

    /// Makes the coming close send a reset instead of a FIN.
    pub fn set_reset_on_close(&self) {
        match self {
            Transport::Tcp(s) => drop(rustix::net::sockopt::set_socket_linger(s, Some(std::time::Duration::ZERO))),
        }
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Transport::Tcp(s) => s.peer_addr(),
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Transport::Tcp(s) => s.local_addr(),
        }
    }

    /// The pending error of a non-blocking connect (`SO_ERROR`).
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            Transport::Tcp(s) => s.take_error(),
        }
    }
}

/// The descriptor the reactor watches.
impl AsFd for Transport {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Transport::Tcp(s) => s.as_fd(),
        }
    }
}
