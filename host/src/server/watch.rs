//! `--watch`: reload a guest when its module file changes. The reactor's
//! [`FileWatcher`] reports changed files (inotify on Linux, kqueue
//! `EVFILT_VNODE` on macOS and the BSDs); this maps them to guests.
//!
//! Events are debounced: a burst (create, write, close) becomes one reload
//! once the file has been quiet for [`DEBOUNCE`].

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::time::Duration;

use wasmloop_reactor::FileWatcher;

/// How long a module file must stay quiet before it is reloaded.
pub(super) const DEBOUNCE: Duration = Duration::from_millis(100);

pub(super) struct Watcher {
    files: FileWatcher,
    /// The guest of each watched file, by `WatchId`.
    guests: Vec<String>,
}

impl Watcher {
    pub fn new() -> io::Result<Watcher> {
        Ok(Watcher { files: FileWatcher::new()?, guests: Vec::new() })
    }

    /// Watches `path` on behalf of `guest`.
    pub fn watch(&mut self, path: &Path, guest: &str) -> io::Result<()> {
        let id = self.files.watch(path)?;
        debug_assert_eq!(id.0, self.guests.len());
        self.guests.push(guest.to_string());
        Ok(())
    }

    /// Reads pending events; calls `changed` with the guest of every
    /// watched file they concern.
    pub fn drain(&mut self, mut changed: impl FnMut(&str)) {
        let guests = &self.guests;
        self.files.drain(|id| changed(&guests[id.0]));
    }
}

impl AsFd for Watcher {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.files.as_fd()
    }
}
