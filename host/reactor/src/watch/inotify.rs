//! The Linux backend: one inotify instance watching each file's directory.
//!
//! The directory is watched, not the file: `rename` over the file replaces
//! the inode a file watch would follow. Of the directory's events, those
//! naming a watched file count: closed after writing, moved in, created.

use std::ffi::OsString;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};

pub struct Watcher {
    fd: OwnedFd,
    /// Per watched file: its directory's watch descriptor and its name.
    files: Vec<(i32, OsString)>,
    buf: Vec<MaybeUninit<u8>>,
}

impl Watcher {
    pub fn new() -> io::Result<Watcher> {
        let fd = inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC)?;
        Ok(Watcher { fd, files: Vec::new(), buf: vec![MaybeUninit::uninit(); 4096] })
    }

    pub fn watch(&mut self, path: &Path) -> io::Result<usize> {
        let (dir, name) = super::split(path)?;
        // Watching a directory twice returns the same descriptor.
        let wd =
            inotify::add_watch(&self.fd, dir, WatchFlags::CLOSE_WRITE | WatchFlags::MOVED_TO | WatchFlags::CREATE)?;
        self.files.push((wd, name.to_os_string()));
        Ok(self.files.len() - 1)
    }

    pub fn drain(&mut self, changed: &mut dyn FnMut(usize)) {
        let mut reader = inotify::Reader::new(&self.fd, &mut self.buf);
        while let Ok(event) = reader.next() {
            if event.events().contains(ReadFlags::QUEUE_OVERFLOW) {
                // Events were lost: any file may have changed.
                (0..self.files.len()).for_each(&mut *changed);
                continue;
            }
            let Some(name) = event.file_name() else { continue };
            let name = name.to_bytes();
            for (i, (wd, file)) in self.files.iter().enumerate() {
                if *wd == event.wd() && file.as_bytes() == name {
                    changed(i);
                }
            }
        }
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
