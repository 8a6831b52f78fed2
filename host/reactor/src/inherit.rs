//! Descriptors inherited from whoever started the process: a supervisor
//! (systemd socket activation, a launcher script, an inetd-like daemon)
//! binds a listening socket and passes it down by number. This is the one
//! place where a bare descriptor number becomes an owned descriptor.

use std::io;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

/// Takes ownership of descriptor `fd`, inherited open from the parent.
///
/// Call it before the process opens descriptors of its own: the number must
/// name the inherited file, not one that some other part of the process owns
/// (which it could be if the inherited one had been closed and the number
/// reused). Each number is taken at most once, and stdin, stdout and stderr
/// (0–2) are refused, since std owns those; so no two owners close one
/// descriptor. Fails if `fd` is not open.
pub fn take_inherited(fd: RawFd) -> io::Result<OwnedFd> {
    static TAKEN: Mutex<Vec<RawFd>> = Mutex::new(Vec::new());
    if fd <= 2 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "descriptors 0-2 are stdin, stdout and stderr"));
    }
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    if taken.contains(&fd) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "it was already taken"));
    }
    // SAFETY: the borrow lives for this one call; `fcntl(F_GETFD)` on a
    // number that is not open fails with EBADF and touches nothing.
    let open = rustix::io::fcntl_getfd(unsafe { BorrowedFd::borrow_raw(fd) });
    open.map_err(|_| io::Error::new(io::ErrorKind::NotFound, "it is not open (was it passed to this process?)"))?;
    taken.push(fd);
    // SAFETY: `fd` is open, is not stdio, and is taken once (checked above);
    // that nothing else in the process owns it is the caller's contract.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_stdio_and_closed_descriptors() {
        assert!(take_inherited(1).is_err());
        // Far above anything a test process opens.
        assert_eq!(take_inherited(900_000).unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
