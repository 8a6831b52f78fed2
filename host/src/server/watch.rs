//! `--watch`: reload a guest when its module file changes. The reactor's
//! [`FileWatcher`] reports changed files (inotify on Linux, kqueue
//! `EVFILT_VNODE` on macOS and the BSDs); this maps them to guests.
//!
//! Events are debounced: a burst (create, write, close) becomes one reload
//! once the file has been quiet for [`DEBOUNCE`].

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::PermissionsExt;
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

    /// Watches `path` on behalf of `guest`, unless others could write it
    /// (see [`check_watchable`]).
    pub fn watch(&mut self, path: &Path, guest: &str) -> io::Result<()> {
        check_watchable(path)?;
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

/// `--watch` loads whatever lands in a module file, so only its owner may
/// be able to put something there: refused are a module file, or its
/// directory, that group or others can write (as the compiled cache refuses
/// such a directory, runtime/cache.rs). Through a symlink, the file and
/// directory it names are checked too. A file that is not there passes:
/// loading it says so better.
pub fn check_watchable(path: &Path) -> io::Result<()> {
    let mut files = vec![path.to_path_buf()];
    if let Ok(real) = std::fs::canonicalize(path)
        && real != path
    {
        files.push(real);
    }
    for file in &files {
        let dir = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        for checked in [file.as_path(), dir] {
            let mode = match std::fs::metadata(checked) {
                Ok(meta) => meta.permissions().mode(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if mode & 0o022 != 0 {
                let who = if mode & 0o002 != 0 { "others" } else { "its group" };
                return Err(io::Error::other(format!(
                    "{} can be written by {who} (mode {:o}), who could have the host load their code: \
                     chmod go-w it, or run without --watch",
                    checked.display(),
                    mode & 0o777
                )));
            }
        }
    }
    Ok(())
}

impl AsFd for Watcher {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.files.as_fd()
    }
}
