//! Listening sockets: binding with a clear error, and accepting in batches
//! without spinning when the process is out of file descriptors.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Instant;

use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketFlags, SocketType, sockopt};
use slotmap::Key;
use tracing::warn;

use super::{GuestKey, RouteKey};

/// Connections closed unserved per accept call while out of descriptors;
/// past that, the listener is retried after a pause.
const MAX_SHED_PER_CALL: usize = 256;

/// Pending connections the kernel queues per listener (capped by
/// `net.core.somaxconn`).
const BACKLOG: i32 = 4096;

/// Binds a non-blocking, close-on-exec listener.
pub fn bind(address: SocketAddr) -> Result<TcpListener, BindError> {
    let fail = |e: Errno| BindError { address, error: e.into() };
    let family = if address.is_ipv4() { AddressFamily::INET } else { AddressFamily::INET6 };
    let fd = rustix::net::socket_with(family, SocketType::STREAM, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC, None)
        .map_err(fail)?;
    // Restarting the host must not wait for TIME_WAIT connections to expire.
    sockopt::set_socket_reuseaddr(&fd, true).map_err(fail)?;
    rustix::net::bind(&fd, &address).map_err(fail)?;
    rustix::net::listen(&fd, BACKLOG).map_err(fail)?;
    Ok(TcpListener::from(fd))
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address}: {}", describe(error))]
pub struct BindError {
    pub address: SocketAddr,
    pub error: io::Error,
}

fn describe(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::AddrInUse => "address already in use".into(),
        io::ErrorKind::AddrNotAvailable => "address not available on this machine".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => crate::os_error::describe(e),
    }
}

/// What the host speaks on a listener's connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Protocol {
    /// Raw TCP: the guest gets `on-accept` and bytes.
    Tcp,
    /// HTTP/1.1: the guest gets requests.
    Http,
    /// HTTP/1.1 with WebSocket upgrades.
    WebSocket,
}

pub(super) struct Listener {
    pub socket: TcpListener,
    pub protocol: Protocol,
    pub guest: GuestKey,
    /// The guest's handle for this listener.
    pub handle: u64,
    pub route: RouteKey,
    /// A descriptor held in reserve: when accept fails with EMFILE, closing
    /// it lets us accept and close the pending connection, so the peer gets
    /// a prompt close instead of hanging, and the loop does not spin on a
    /// listener that stays readable (libev's and nginx's remedy).
    reserve: Option<File>,
    last_warning: Option<Instant>,
}

pub(super) enum Accepted {
    Stream(TcpStream),
    /// Nothing more to accept now.
    Drained,
    /// Out of descriptors even after shedding: try again after a pause.
    RetryLater,
}

impl Listener {
    pub fn new(
        socket: TcpListener,
        guest: GuestKey,
        handle: u64,
        route: RouteKey,
        protocol: Protocol,
    ) -> io::Result<Listener> {
        debug_assert!(!route.is_null());
        Ok(Listener {
            socket,
            protocol,
            guest,
            handle,
            route,
            reserve: Some(File::open("/dev/null")?),
            last_warning: None,
        })
    }

    pub fn accept(&mut self) -> Accepted {
        let mut shed = 0;
        loop {
            match rustix::net::accept_with(&self.socket, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC) {
                Ok(fd) => return Accepted::Stream(TcpStream::from(fd)),
                Err(Errno::AGAIN) => return Accepted::Drained,
                // The peer gave up before we got to it; try the next one.
                Err(Errno::INTR) | Err(Errno::CONNABORTED) | Err(Errno::PROTO) => {}
                Err(e @ (Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM)) => {
                    self.warn(e);
                    // Shed the whole backlog (edge-triggered: no new event
                    // would come for connections already queued), but in
                    // bounded batches so a flood cannot hold the loop.
                    if shed == MAX_SHED_PER_CALL || !self.shed_one() {
                        return Accepted::RetryLater;
                    }
                    shed += 1;
                }
                Err(e) => {
                    self.warn(e);
                    return Accepted::RetryLater;
                }
            }
        }
    }

    /// Accepts one pending connection with the reserve descriptor and closes
    /// it at once. False if the reserve could not be reopened.
    fn shed_one(&mut self) -> bool {
        let Some(reserve) = self.reserve.take() else {
            return false;
        };
        drop(reserve);
        drop(rustix::net::accept_with(&self.socket, SocketFlags::CLOEXEC));
        self.reserve = File::open("/dev/null").ok();
        self.reserve.is_some()
    }

    fn warn(&mut self, e: Errno) {
        let now = Instant::now();
        if self.last_warning.is_none_or(|t| now.duration_since(t).as_secs() >= 1) {
            self.last_warning = Some(now);
            warn!("accept failed: {}; refusing connections until descriptors free up", io::Error::from(e));
        }
    }
}
