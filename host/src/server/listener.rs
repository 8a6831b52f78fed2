//! Listening sockets: what the host speaks on one ([`Protocol`]), binding
//! with a clear error (one socket per worker with `SO_REUSEPORT`), adopting
//! one a supervisor passed down (its descriptor numbers: `activation.rs`),
//! and accepting in batches without spinning when the process is out of
//! file descriptors.

use std::cell::Cell;
use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::time::Instant;

use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketType, sockopt};
use slotmap::Key;
use tracing::warn;

use super::routes::RouteKey;
use super::slot::GuestKey;

/// Connections closed unserved per accept call while out of descriptors;
/// past that, the listener is retried after a pause.
const MAX_SHED_PER_CALL: usize = 256;

/// Pending connections the kernel queues per listener (capped by
/// `net.core.somaxconn`).
const BACKLOG: i32 = 4096;

/// Binds a non-blocking, close-on-exec listener.
pub fn bind(address: SocketAddr) -> Result<TcpListener, BindError> {
    bind_with(address, false)
}

/// Binds `count` listeners to one address, one per worker loop. With more
/// than one, each has `SO_REUSEPORT`: each has its own accept queue and the
/// kernel spreads incoming connections over them by a hash of the
/// connection's addresses and ports, so no loop takes connections from
/// another's queue and none is woken for a connection another one gets. For
/// port 0 the first bind picks the port and the rest bind that one.
///
/// One listener is bound as [`bind`] does, without `SO_REUSEPORT`: then a
/// second host on the same port fails with "address already in use" instead
/// of silently taking half the connections.
pub fn bind_group(address: SocketAddr, count: usize) -> Result<Vec<TcpListener>, BindError> {
    if count <= 1 {
        return Ok(vec![bind(address)?]);
    }
    let first = bind_with(address, true)?;
    let bound = first.local_addr().map_err(|error| BindError { address, error })?;
    let mut group = vec![first];
    for _ in 1..count {
        group.push(bind_with(bound, true)?);
    }
    Ok(group)
}

fn bind_with(address: SocketAddr, reuse_port: bool) -> Result<TcpListener, BindError> {
    let fail = |e: Errno| BindError { address, error: e.into() };
    let family = if address.is_ipv4() { AddressFamily::INET } else { AddressFamily::INET6 };
    let fd = crate::sys::socket(family, SocketType::STREAM).map_err(fail)?;
    // Restarting the host must not wait for TIME_WAIT connections to expire.
    sockopt::set_socket_reuseaddr(&fd, true).map_err(fail)?;
    if reuse_port {
        sockopt::set_socket_reuseport(&fd, true).map_err(fail)?;
    }
    rustix::net::bind(&fd, &address).map_err(fail)?;
    rustix::net::listen(&fd, BACKLOG).map_err(fail)?;
    Ok(TcpListener::from(fd))
}

/// Makes an inherited descriptor (`--listen-fd`, systemd socket activation)
/// a listener like the ones [`bind`] makes: it must be a TCP socket that is
/// already listening; it is made non-blocking and close-on-exec.
pub fn adopt_listener(fd: OwnedFd) -> Result<TcpListener, AdoptError> {
    use std::os::fd::AsRawFd;
    let number = fd.as_raw_fd();
    let fail = |reason: String| AdoptError { fd: number, reason };
    let kind = match sockopt::socket_type(&fd) {
        Ok(kind) => kind,
        Err(Errno::NOTSOCK) => return Err(fail("it is not a socket".into())),
        Err(e) => return Err(fail(crate::os_error::describe(&e.into()))),
    };
    // The family of its address: `SO_DOMAIN` is not on every system.
    let domain =
        rustix::net::getsockname(&fd).map_err(|e| fail(crate::os_error::describe(&e.into())))?.address_family();
    if domain != AddressFamily::INET && domain != AddressFamily::INET6 {
        return Err(fail("it is not an IPv4 or IPv6 socket (a Unix socket?)".into()));
    }
    if kind != SocketType::STREAM {
        return Err(fail("it is not a TCP (stream) socket".into()));
    }
    if !crate::sys::is_listening(&fd).map_err(|e| fail(crate::os_error::describe(&e.into())))? {
        return Err(fail("it is not listening (the supervisor must call listen)".into()));
    }
    // The file status flag is shared with the supervisor's copy; a
    // supervisor that hands a socket over does not accept on it.
    rustix::io::ioctl_fionbio(&fd, true).map_err(|e| fail(crate::os_error::describe(&e.into())))?;
    rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)
        .map_err(|e| fail(crate::os_error::describe(&e.into())))?;
    Ok(TcpListener::from(fd))
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on inherited descriptor {fd}: {reason}")]
pub struct AdoptError {
    pub fd: i32,
    pub reason: String,
}

thread_local! {
    /// Connections accepted by the listeners of this thread's loop.
    static ACCEPTED: Cell<u64> = const { Cell::new(0) };
}

/// How many connections the listeners of the loop on this thread accepted
/// (one loop per thread: a worker's count, logged when it stops).
pub fn accepted_on_this_thread() -> u64 {
    ACCEPTED.get()
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

/// What the host speaks on a listener's connections: one list from the
/// flags (`--listen`, `--listen-http`, `--listen-ws`, `--listen-fd FD:ws`)
/// and the config file's keys to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Raw TCP: the guest gets `on-accept` and bytes.
    Tcp,
    /// HTTP/1.1: the guest gets requests (`http-callbacks`).
    Http,
    /// HTTP/1.1 with WebSocket upgrades.
    WebSocket,
}

/// A listening socket granted to a guest, and what the host speaks on it.
#[derive(Debug)]
pub struct ListenerSpec {
    pub socket: TcpListener,
    pub protocol: Protocol,
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
    /// Accepting waits for the guest's CPU share: new connections are left
    /// to the queued `Accept`.
    pub accept_postponed: bool,
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
            accept_postponed: false,
        })
    }

    pub fn accept(&mut self) -> Accepted {
        let mut shed = 0;
        loop {
            match crate::sys::accept(&self.socket) {
                Ok(fd) => {
                    ACCEPTED.set(ACCEPTED.get() + 1);
                    return Accepted::Stream(TcpStream::from(fd));
                }
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
        drop(crate::sys::accept(&self.socket));
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
