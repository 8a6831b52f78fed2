//! The macOS / BSD backend: one kqueue, with an `EVFILT_USER` event for
//! `notify`.
//!
//! Sources are registered with `EV_CLEAR`, kqueue's edge-triggered mode:
//! readiness is reported once per change and the owner drains until `EAGAIN`,
//! as with the epoll backend. Read and write interest are separate filters.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::buffer::spare_capacity;
use rustix::event::kqueue::{self, EventFilter, EventFlags, UserDefinedFlags, UserFlags};

use crate::{Event, Interest, Token};

/// The identifier and token of the `EVFILT_USER` event behind `notify`.
const NOTIFY: u64 = u64::MAX;

pub struct Poller {
    kqueue: OwnedFd,
}

pub struct Events {
    list: Vec<kqueue::Event>,
}

impl Events {
    pub fn with_capacity(capacity: usize) -> Events {
        Events { list: Vec::with_capacity(capacity.max(1)) }
    }

    pub fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        // kqueue reports read and write readiness as separate events; the
        // consumer handles two events for one token like one with both set.
        self.list.iter().filter_map(|e| {
            let token = e.udata() as usize as u64;
            if token == NOTIFY {
                return None;
            }
            // EV_EOF on the read filter: the peer closed its side (the FIN
            // is queued behind any data); EV_ERROR: the socket failed.
            let failed = e.flags().intersects(EventFlags::EOF | EventFlags::ERROR);
            let token = Token(token);
            match e.filter() {
                EventFilter::Read(_) => Some(Event { token, readable: true, writable: failed, closed: failed }),
                EventFilter::Write(_) => Some(Event { token, readable: failed, writable: true, closed: failed }),
                _ => None,
            }
        })
    }
}

impl Poller {
    pub fn new() -> io::Result<Poller> {
        // kqueue descriptors are not inherited across fork and rustix opens
        // them close-on-exec where the platform allows.
        let poller = Poller { kqueue: kqueue::kqueue()? };
        let wake = kqueue::Event::new(
            EventFilter::User {
                ident: NOTIFY as usize as _,
                flags: UserFlags::empty(),
                user_flags: UserDefinedFlags::new(0),
            },
            EventFlags::ADD | EventFlags::CLEAR | EventFlags::RECEIPT,
            NOTIFY as usize as *mut _,
        );
        poller.apply(&[wake], &[])?;
        Ok(poller)
    }

    pub fn add(&self, fd: BorrowedFd<'_>, token: Token, interest: Interest) -> io::Result<()> {
        self.register(fd, token, interest)
    }

    pub fn modify(&self, fd: BorrowedFd<'_>, token: Token, interest: Interest) -> io::Result<()> {
        self.register(fd, token, interest)
    }

    pub fn delete(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        let raw = fd.as_raw_fd();
        let flags = EventFlags::DELETE | EventFlags::RECEIPT;
        let changes = [
            kqueue::Event::new(EventFilter::Read(raw), flags, std::ptr::null_mut()),
            kqueue::Event::new(EventFilter::Write(raw), flags, std::ptr::null_mut()),
        ];
        // A filter that was never added reports ENOENT: not an error here.
        self.apply(&changes, &[rustix::io::Errno::NOENT])
    }

    pub fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        events.list.clear();
        // SAFETY: the change list is empty, so no descriptor is handed to the
        // kernel here; registered descriptors are deleted before they close.
        let result = unsafe { kqueue::kevent(&self.kqueue, &[], spare_capacity(&mut events.list), timeout) };
        match result {
            Ok(_) | Err(rustix::io::Errno::INTR) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Wakes a thread blocked in `wait`. Safe to call from any thread.
    pub fn notify(&self) -> io::Result<()> {
        let trigger = kqueue::Event::new(
            EventFilter::User {
                ident: NOTIFY as usize as _,
                flags: UserFlags::TRIGGER,
                user_flags: UserDefinedFlags::new(0),
            },
            EventFlags::RECEIPT,
            NOTIFY as usize as *mut _,
        );
        self.apply(&[trigger], &[])
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.kqueue.as_fd()
    }

    fn register(&self, fd: BorrowedFd<'_>, token: Token, interest: Interest) -> io::Result<()> {
        let raw = fd.as_raw_fd();
        let udata = token.0 as usize as *mut _;
        let change = |want: bool| {
            if want {
                EventFlags::ADD | EventFlags::CLEAR | EventFlags::RECEIPT
            } else {
                EventFlags::DELETE | EventFlags::RECEIPT
            }
        };
        let changes = [
            kqueue::Event::new(EventFilter::Read(raw), change(interest.readable), udata),
            kqueue::Event::new(EventFilter::Write(raw), change(interest.writable), udata),
        ];
        // Deleting a filter that was not there (a new source, or interest
        // unchanged by `modify`) is fine.
        self.apply(&changes, &[rustix::io::Errno::NOENT])
    }

    /// Submits `changes` with `EV_RECEIPT`, so each one reports its own result
    /// instead of the first failure hiding the rest.
    fn apply(&self, changes: &[kqueue::Event], ignored: &[rustix::io::Errno]) -> io::Result<()> {
        debug_assert!(changes.len() <= 2);
        let mut receipts = [const { MaybeUninit::<kqueue::Event>::uninit() }; 2];
        // SAFETY: every descriptor in `changes` is borrowed from a live
        // `BorrowedFd` for this call, and the owner deletes its registration
        // before closing it (the reactor's documented contract).
        let (receipts, _) =
            unsafe { kqueue::kevent(&self.kqueue, changes, &mut receipts[..changes.len()], Some(Duration::ZERO))? };
        for receipt in receipts.iter() {
            let errno = receipt.data();
            if receipt.flags().contains(EventFlags::ERROR) && errno != 0 {
                let errno = rustix::io::Errno::from_raw_os_error(errno as i32);
                if !ignored.contains(&errno) {
                    return Err(errno.into());
                }
            }
        }
        Ok(())
    }
}
