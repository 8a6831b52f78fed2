//! The macOS / BSD backend: a kqueue of its own holding `EVFILT_VNODE`
//! filters; the loop watches that kqueue's descriptor, which is readable
//! while it has events pending.
//!
//! A vnode filter follows an open file, that is an inode, so each watched
//! path has two: one on its directory (`NOTE_WRITE`: an entry was added,
//! removed or renamed, as an atomic deploy does) and one on the file itself
//! (written, extended, attributes changed, deleted, renamed). After any
//! event the path is opened again, so the file filter follows whatever the
//! path names now. A directory event counts as a change of the file only if
//! the file's identity (inode, size, modification time) changed: other files
//! come and go in the same directory.

use std::fs::Metadata;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::buffer::spare_capacity;
use rustix::event::kqueue::{self, EventFilter, EventFlags, VnodeEvents};
use rustix::fs::{Mode, OFlags};

/// Events read per `kevent` call while draining.
const BATCH: usize = 32;

pub struct Watcher {
    kqueue: OwnedFd,
    files: Vec<Watched>,
    events: Vec<kqueue::Event>,
}

struct Watched {
    path: PathBuf,
    /// Kept open for its filter; a directory filter's `udata` is `2 * i`.
    _dir: OwnedFd,
    /// The file the path named when last opened (`udata` `2 * i + 1`);
    /// `None` while it does not exist.
    file: Option<OwnedFd>,
    identity: Option<Identity>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
}

impl Identity {
    fn of(path: &Path) -> Option<Identity> {
        let meta: Metadata = std::fs::metadata(path).ok()?;
        Some(Identity { dev: meta.dev(), ino: meta.ino(), len: meta.len(), mtime: (meta.mtime(), meta.mtime_nsec()) })
    }
}

impl Watcher {
    pub fn new() -> io::Result<Watcher> {
        Ok(Watcher { kqueue: kqueue::kqueue()?, files: Vec::new(), events: Vec::with_capacity(BATCH) })
    }

    pub fn watch(&mut self, path: &Path) -> io::Result<usize> {
        let (dir, _) = super::split(path)?;
        let i = self.files.len();
        let dir_fd = rustix::fs::open(dir, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        self.register(dir_fd.as_fd(), VnodeEvents::WRITE, 2 * i)?;
        self.files.push(Watched { path: path.to_path_buf(), _dir: dir_fd, file: None, identity: None });
        self.reopen(i);
        Ok(i)
    }

    pub fn drain(&mut self, changed: &mut dyn FnMut(usize)) {
        loop {
            self.events.clear();
            // SAFETY: no change list, so no descriptor is handed to the kernel.
            let got =
                unsafe { kqueue::kevent(&self.kqueue, &[], spare_capacity(&mut self.events), Some(Duration::ZERO)) };
            if got.is_err() || self.events.is_empty() {
                return;
            }
            let full = self.events.len() == BATCH;
            for k in 0..self.events.len() {
                let udata = self.events[k].udata() as usize;
                let (i, is_dir) = (udata / 2, udata % 2 == 0);
                if i >= self.files.len() {
                    continue;
                }
                let before = self.files[i].identity;
                self.reopen(i);
                if !is_dir || self.files[i].identity != before {
                    changed(i);
                }
            }
            if !full {
                return;
            }
        }
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.kqueue.as_fd()
    }

    /// Opens the path again and points the file filter at what it names now.
    /// Closing the old descriptor removes its filter (close(2) does).
    fn reopen(&mut self, i: usize) {
        let watched = &mut self.files[i];
        watched.file = None;
        watched.identity = Identity::of(&watched.path);
        let Ok(file) = rustix::fs::open(&watched.path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()) else {
            // Not there (between unlink and rename): the directory filter
            // reports its return.
            return;
        };
        let wanted = VnodeEvents::WRITE
            | VnodeEvents::EXTEND
            | VnodeEvents::ATTRIBUTES
            | VnodeEvents::DELETE
            | VnodeEvents::RENAME;
        if self.register(file.as_fd(), wanted, 2 * i + 1).is_ok() {
            self.files[i].file = Some(file);
        }
    }

    fn register(&self, fd: BorrowedFd<'_>, flags: VnodeEvents, udata: usize) -> io::Result<()> {
        let change = kqueue::Event::new(
            EventFilter::Vnode { vnode: fd.as_raw_fd(), flags },
            EventFlags::ADD | EventFlags::CLEAR | EventFlags::RECEIPT,
            udata as *mut _,
        );
        let mut receipt = Vec::with_capacity(1);
        // SAFETY: `fd` is open for this call and owned by this watcher next
        // to the kqueue; it is only ever closed by dropping it, and closing
        // a descriptor removes its filters from every kqueue, so no filter
        // outlives the descriptor it names.
        unsafe { kqueue::kevent(&self.kqueue, &[change], spare_capacity(&mut receipt), Some(Duration::ZERO))? };
        match receipt.first() {
            Some(r) if r.flags().contains(EventFlags::ERROR) && r.data() != 0 => {
                Err(rustix::io::Errno::from_raw_os_error(r.data() as i32).into())
            }
            _ => Ok(()),
        }
    }
}
