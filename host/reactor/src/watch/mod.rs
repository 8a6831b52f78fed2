//! [`FileWatcher`]: tells the loop when files change, through one descriptor
//! it watches like a socket. One file per backend: `inotify.rs` on Linux,
//! `vnode.rs` (kqueue `EVFILT_VNODE`) on macOS and the BSDs.
//!
//! Both follow a *path*, not an inode: an atomic deploy (write a temporary
//! file, `rename` it over the old one) counts as a change, and so does a
//! write in place.
//!
//! # Guarantees and non-guarantees
//!
//! - After a change to a watched file, the descriptor becomes readable and
//!   [`FileWatcher::drain`] reports the file's [`WatchId`] at least once.
//! - One change may be reported several times (a write, then the close after
//!   it): debounce before acting.
//! - A report may name a file that did not change in content (its
//!   attributes changed, or the kernel dropped events and every file is
//!   reported to be safe).
//! - The file need not exist when it is watched; its creation is a change.
//!   Its directory must exist and stay.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

#[cfg(any(target_os = "linux", target_os = "android"))]
#[path = "inotify.rs"]
mod sys;
#[cfg(any(target_os = "macos", target_os = "ios", target_os = "freebsd", target_os = "dragonfly"))]
#[path = "vnode.rs"]
mod sys;

/// Which watched file changed: the order of [`FileWatcher::watch`] calls,
/// from 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WatchId(pub usize);

/// Watches files for changes; register [`AsFd`] with the reactor for
/// readability and call [`FileWatcher::drain`] when it is readable.
pub struct FileWatcher {
    sys: sys::Watcher,
}

impl FileWatcher {
    pub fn new() -> io::Result<FileWatcher> {
        Ok(FileWatcher { sys: sys::Watcher::new()? })
    }

    /// Starts watching `path`.
    pub fn watch(&mut self, path: &Path) -> io::Result<WatchId> {
        self.sys.watch(path).map(WatchId)
    }

    /// Reads every pending notification without blocking, calling `changed`
    /// for each watched file it concerns.
    pub fn drain(&mut self, mut changed: impl FnMut(WatchId)) {
        self.sys.drain(&mut |i| changed(WatchId(i)));
    }
}

impl AsFd for FileWatcher {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sys.as_fd()
    }
}

/// The directory holding `path`, and the file's name in it.
fn split(path: &Path) -> io::Result<(&Path, &std::ffi::OsStr)> {
    let name = path.file_name().ok_or_else(|| io::Error::other(format!("{} names no file", path.display())))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    Ok((dir, name))
}
