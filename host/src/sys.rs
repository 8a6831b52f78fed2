//! The socket calls whose form differs between systems. Linux and the BSDs
//! make a socket non-blocking and close-on-exec in the call that creates it
//! (`SOCK_NONBLOCK | SOCK_CLOEXEC`, `accept4`); macOS has neither, so there
//! the flags are set by two more calls right after. The host never forks
//! (it runs no other programs), so no child can inherit a descriptor in
//! between; an embedder that spawns processes from another thread could.

use std::os::fd::OwnedFd;

use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketType};

#[cfg(not(target_vendor = "apple"))]
use rustix::net::SocketFlags;

/// A new non-blocking, close-on-exec socket.
pub(crate) fn socket(family: AddressFamily, kind: SocketType) -> Result<OwnedFd, Errno> {
    #[cfg(not(target_vendor = "apple"))]
    {
        rustix::net::socket_with(family, kind, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC, None)
    }
    #[cfg(target_vendor = "apple")]
    {
        flagged(rustix::net::socket(family, kind, None)?)
    }
}

/// The next pending connection of `listener`, non-blocking and
/// close-on-exec.
pub(crate) fn accept(listener: &impl std::os::fd::AsFd) -> Result<OwnedFd, Errno> {
    #[cfg(not(target_vendor = "apple"))]
    {
        rustix::net::accept_with(listener, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC)
    }
    #[cfg(target_vendor = "apple")]
    {
        flagged(rustix::net::accept(listener)?)
    }
}

/// Whether `fd`, a socket, is listening. macOS declares `SO_ACCEPTCONN` but
/// does not implement it: there the answer is "yes", and a socket that is
/// not listening fails later, at `accept`, which the listener reports.
pub(crate) fn is_listening(fd: &OwnedFd) -> Result<bool, Errno> {
    #[cfg(not(target_vendor = "apple"))]
    {
        rustix::net::sockopt::socket_acceptconn(fd)
    }
    #[cfg(target_vendor = "apple")]
    {
        let _ = fd;
        Ok(true)
    }
}

#[cfg(target_vendor = "apple")]
fn flagged(fd: OwnedFd) -> Result<OwnedFd, Errno> {
    rustix::io::ioctl_fionbio(&fd, true)?;
    rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)?;
    Ok(fd)
}
