//! `--watch`: reload a guest when its module file changes, watched through
//! the loop itself (inotify on Linux; elsewhere the flag is refused and
//! SIGHUP remains).
//!
//! The directory is watched, not the file: an atomic deploy (`rename` over
//! the old file) replaces the inode a file watch would follow. Events are
//! debounced: a burst (create, write, close) becomes one reload once the
//! file has been quiet for [`DEBOUNCE`].

use std::time::Duration;

/// How long a module file must stay quiet before it is reloaded.
pub(super) const DEBOUNCE: Duration = Duration::from_millis(100);

#[cfg(target_os = "linux")]
pub(super) use linux::Watcher;

#[cfg(target_os = "linux")]
mod linux {
    use std::ffi::OsString;
    use std::io;
    use std::mem::MaybeUninit;
    use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};

    pub struct Watcher {
        fd: OwnedFd,
        /// (watch descriptor, file name in that directory, guest name)
        files: Vec<(i32, OsString, String)>,
        buf: Vec<MaybeUninit<u8>>,
    }

    impl Watcher {
        pub fn new() -> io::Result<Watcher> {
            let fd = inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC)?;
            Ok(Watcher { fd, files: Vec::new(), buf: vec![MaybeUninit::uninit(); 4096] })
        }

        /// Watches `path` (its directory) on behalf of `guest`.
        pub fn watch(&mut self, path: &Path, guest: &str) -> io::Result<()> {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            let name = path.file_name().ok_or_else(|| io::Error::other("the module path names no file"))?;
            let flags = WatchFlags::CLOSE_WRITE | WatchFlags::MOVED_TO | WatchFlags::CREATE;
            let wd = inotify::add_watch(&self.fd, dir, flags)?;
            self.files.push((wd, name.to_os_string(), guest.to_string()));
            Ok(())
        }

        /// Reads pending events; calls `changed` with the guest of every
        /// watched file an event names.
        pub fn drain(&mut self, mut changed: impl FnMut(&str)) {
            let mut reader = inotify::Reader::new(&self.fd, &mut self.buf);
            while let Ok(event) = reader.next() {
                if event.events().contains(ReadFlags::QUEUE_OVERFLOW) {
                    // Lost events: treat every watched file as changed.
                    self.files.iter().for_each(|(_, _, guest)| changed(guest));
                    continue;
                }
                let Some(name) = event.file_name() else { continue };
                let name = name.to_bytes();
                for (wd, file, guest) in &self.files {
                    if *wd == event.wd() && file.as_bytes() == name {
                        changed(guest);
                    }
                }
            }
        }
    }

    impl AsFd for Watcher {
        fn as_fd(&self) -> BorrowedFd<'_> {
            self.fd.as_fd()
        }
    }
}

/// Platforms without inotify: `--watch` is refused with a clear error.
#[cfg(not(target_os = "linux"))]
pub(super) struct Watcher;

#[cfg(not(target_os = "linux"))]
impl Watcher {
    pub fn new() -> std::io::Result<Watcher> {
        Err(std::io::Error::other("--watch needs inotify (Linux) for now; send SIGHUP to reload instead"))
    }
}
