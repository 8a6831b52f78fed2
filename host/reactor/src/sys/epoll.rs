//! The Linux backend: one epoll instance plus an eventfd for `notify`.
//!
//! Every source is registered edge-triggered (`EPOLLET`): the kernel reports a
//! change of readiness once, and the owner reads or writes until `EAGAIN`.
//! That makes pausing a connection free (no `epoll_ctl`), at the price that
//! the owner must remember sources it stopped reading early.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::buffer::spare_capacity;
use rustix::event::{EventfdFlags, Timespec, epoll, eventfd};

use crate::{Event, Interest, Token};

/// The token of the eventfd that `notify` writes to; never handed to users.
const NOTIFY: u64 = u64::MAX;

pub struct Poller {
    epoll: OwnedFd,
    notify: OwnedFd,
}

pub struct Events {
    list: Vec<epoll::Event>,
}

impl Events {
    pub fn with_capacity(capacity: usize) -> Events {
        Events { list: Vec::with_capacity(capacity.max(1)) }
    }

    pub fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        self.list.iter().filter(|e| e.data.u64() != NOTIFY).map(|e| {
            let flags = e.flags;
            // Hang-up and error are reported as both: the next read or write
            // returns the actual condition, which is the only reliable way to
            // learn it (EPOLLHUP alone does not say whether data is pending).
            let failed = flags.intersects(epoll::EventFlags::HUP | epoll::EventFlags::ERR);
            Event {
                token: Token(e.data.u64()),
                readable: failed || flags.intersects(epoll::EventFlags::IN | epoll::EventFlags::RDHUP),
                writable: failed || flags.contains(epoll::EventFlags::OUT),
                closed: failed || flags.contains(epoll::EventFlags::RDHUP),
            }
        })
    }
}

impl Poller {
    pub fn new() -> io::Result<Poller> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let notify = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        epoll::add(&epoll, &notify, epoll::EventData::new_u64(NOTIFY), epoll::EventFlags::IN | epoll::EventFlags::ET)?;
        Ok(Poller { epoll, notify })
    }

    pub fn add(&self, fd: BorrowedFd<'_>, token: Token, interest: Interest) -> io::Result<()> {
        epoll::add(&self.epoll, fd, epoll::EventData::new_u64(token.0), flags(interest))?;
        Ok(())
    }

    pub fn modify(&self, fd: BorrowedFd<'_>, token: Token, interest: Interest) -> io::Result<()> {
        epoll::modify(&self.epoll, fd, epoll::EventData::new_u64(token.0), flags(interest))?;
        Ok(())
    }

    pub fn delete(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        epoll::delete(&self.epoll, fd)?;
        Ok(())
    }

    /// Waits for events; `timeout` is already rounded up to whole milliseconds
    /// by the caller. An interrupted wait (`EINTR`) returns no events.
    pub fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        events.list.clear();
        let timeout = timeout.map(|t| Timespec {
            tv_sec: t.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: i64::from(t.subsec_nanos()),
        });
        match epoll::wait(&self.epoll, spare_capacity(&mut events.list), timeout.as_ref()) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        if events.list.iter().any(|e| e.data.u64() == NOTIFY) {
            // Reset the counter so it can never saturate; EAGAIN just means a
            // concurrent reader (none here) or a spurious edge.
            let mut buf = [0u8; 8];
            let _ = rustix::io::read(&self.notify, &mut buf);
        }
        Ok(())
    }

    /// Wakes a thread blocked in `wait`. Safe to call from any thread.
    pub fn notify(&self) -> io::Result<()> {
        match rustix::io::write(&self.notify, &1u64.to_ne_bytes()) {
            // EAGAIN: the counter is at its maximum, so a wake is pending anyway.
            Ok(_) | Err(rustix::io::Errno::AGAIN) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.as_fd()
    }
}

fn flags(interest: Interest) -> epoll::EventFlags {
    let mut flags = epoll::EventFlags::ET;
    if interest.readable {
        flags |= epoll::EventFlags::IN | epoll::EventFlags::RDHUP;
    }
    if interest.writable {
        flags |= epoll::EventFlags::OUT;
    }
    flags
}
