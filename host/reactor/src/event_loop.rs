//! The loop itself: the phases of one turn, in the order the crate docs give.

use std::io;
use std::mem;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::handle::{Job, LoopHandle, Shared};
use crate::{Event, Events, Expired, Interest, Poller, TimerHeap, TimerId, Token};

/// Events collected per wait; more stay queued in the kernel for the next.
const EVENTS_PER_WAIT: usize = 1024;

/// What a [`Handler`] works with during a callback: registration, timers,
/// the tick's clock reading, and stopping the loop.
pub struct Reactor {
    poller: Arc<Poller>,
    timers: TimerHeap,
    now: Instant,
    stopping: bool,
    deferred: bool,
}

/// The callbacks an [`EventLoop`] makes. All run on the loop thread, one at a
/// time.
pub trait Handler {
    /// A registered source is ready.
    fn io(&mut self, reactor: &mut Reactor, event: Event);
    /// A timer came due.
    fn timer(&mut self, reactor: &mut Reactor, timer: Expired);
    /// Work queued with [`Reactor::defer`] during this turn.
    fn deferred(&mut self, _reactor: &mut Reactor) {}
    /// The loop is about to wait for events and may block (libuv's
    /// "prepare" phase): stop anything that must not run while idle.
    fn prepare(&mut self, _reactor: &mut Reactor) {}
}

impl Reactor {
    /// Watches `fd`, edge-triggered. The descriptor should be non-blocking.
    pub fn add(&self, fd: impl AsFd, token: Token, interest: Interest) -> io::Result<()> {
        self.poller.add(fd.as_fd(), token, interest)
    }

    pub fn modify(&self, fd: impl AsFd, token: Token, interest: Interest) -> io::Result<()> {
        self.poller.modify(fd.as_fd(), token, interest)
    }

    /// Stops watching `fd`. Call before closing it.
    pub fn delete(&self, fd: impl AsFd) -> io::Result<()> {
        self.poller.delete(fd.as_fd())
    }

    /// The clock reading of the current turn.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Fires once, `delay` after this call (the clock is read here, so the
    /// timer is never early relative to the caller).
    pub fn set_timeout(&mut self, delay: Duration, token: Token) -> TimerId {
        self.timers.insert(Instant::now() + delay, None, token)
    }

    /// Fires once at `deadline`.
    pub fn set_deadline(&mut self, deadline: Instant, token: Token) -> TimerId {
        self.timers.insert(deadline, None, token)
    }

    /// Fires every `interval`, first `interval` after this call.
    pub fn set_interval(&mut self, interval: Duration, token: Token) -> TimerId {
        self.timers.insert(Instant::now() + interval, Some(interval), token)
    }

    /// Returns false if the timer was not live (fired or cancelled).
    pub fn cancel_timer(&mut self, timer: TimerId) -> bool {
        self.timers.cancel(timer)
    }

    pub fn timer_count(&self) -> usize {
        self.timers.len()
    }

    /// Asks for [`Handler::deferred`] at the end of this turn; the next wait
    /// then does not block.
    pub fn defer(&mut self) {
        self.deferred = true;
    }

    /// Makes [`EventLoop::run`] return after the current turn.
    pub fn stop(&mut self) {
        self.stopping = true;
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping
    }
}

/// The event loop. Create it, take [`LoopHandle`]s for other threads, then
/// [`run`](EventLoop::run) it with a handler.
pub struct EventLoop<H> {
    reactor: Reactor,
    events: Events,
    shared: Arc<Shared<H>>,
    /// Posted closures are swapped out of the shared queue into this buffer
    /// so they run without the lock held and without allocating.
    jobs: Vec<Job<H>>,
}

impl<H: Handler> EventLoop<H> {
    pub fn new() -> io::Result<EventLoop<H>> {
        let poller = Arc::new(Poller::new()?);
        let shared = Arc::new(Shared {
            poller: poller.clone(),
            woken: AtomicBool::new(false),
            jobs: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        });
        Ok(EventLoop {
            reactor: Reactor {
                poller,
                timers: TimerHeap::new(),
                now: Instant::now(),
                stopping: false,
                deferred: false,
            },
            events: Events::with_capacity(EVENTS_PER_WAIT),
            shared,
            jobs: Vec::new(),
        })
    }

    pub fn handle(&self) -> LoopHandle<H> {
        LoopHandle { shared: self.shared.clone() }
    }

    pub fn reactor(&mut self) -> &mut Reactor {
        &mut self.reactor
    }

    /// Turns the loop until [`Reactor::stop`].
    pub fn run(&mut self, handler: &mut H) -> io::Result<()> {
        while !self.reactor.stopping {
            self.run_once(handler, None)?;
        }
        Ok(())
    }

    /// One turn: wait (at most `max_wait`, if given), then dispatch.
    pub fn run_once(&mut self, handler: &mut H, max_wait: Option<Duration>) -> io::Result<()> {
        // 1. Wait, after the prepare hook if the wait may block.
        let timeout = match (self.next_timeout(), max_wait) {
            (Some(t), Some(m)) => Some(t.min(m)),
            (t, m) => t.or(m),
        };
        if timeout != Some(Duration::ZERO) {
            handler.prepare(&mut self.reactor);
        }
        self.reactor.poller.wait(&mut self.events, timeout)?;

        // 2. Read the clock, once for the whole turn.
        self.reactor.now = Instant::now();

        // 3. IO.
        for event in self.events.iter() {
            handler.io(&mut self.reactor, event);
        }

        // 4. Posted closures. Clear the flag before taking the queue: a post
        //    racing with us then either lands in this batch or wakes us again.
        if self.shared.woken.swap(false, Ordering::AcqRel) {
            mem::swap(&mut *self.shared.jobs.lock().unwrap_or_else(PoisonError::into_inner), &mut self.jobs);
            for job in self.jobs.drain(..) {
                job(handler, &mut self.reactor);
            }
        }

        // 5. Timers.
        let barrier = self.reactor.timers.barrier();
        while let Some(expired) = self.reactor.timers.pop_due(self.reactor.now, barrier) {
            handler.timer(&mut self.reactor, expired);
        }

        // 6. Deferred work.
        if mem::take(&mut self.reactor.deferred) {
            handler.deferred(&mut self.reactor);
        }
        Ok(())
    }

    /// How long the next wait may block: `Some(ZERO)` if work is pending,
    /// `None` for "until an event", otherwise until the earliest timer,
    /// rounded up to a whole millisecond. For embedding in a foreign loop.
    pub fn next_timeout(&mut self) -> Option<Duration> {
        if self.reactor.stopping || self.reactor.deferred || self.shared.woken.load(Ordering::Acquire) {
            return Some(Duration::ZERO);
        }
        let deadline = self.reactor.timers.next_deadline()?;
        // A fresh reading, not the turn's: a long turn has already used up
        // part of the wait, and counting from its start would fire late.
        let left = deadline.saturating_duration_since(Instant::now());
        let millis = left.as_nanos().div_ceil(1_000_000);
        Some(Duration::from_millis(millis.min(u64::MAX as u128) as u64))
    }

    /// The backend's descriptor (epoll or kqueue): readable when the loop has
    /// something to do. For embedding in a foreign loop.
    pub fn backend_fd(&self) -> BorrowedFd<'_> {
        self.reactor.poller.as_fd()
    }
}

impl<H> Drop for EventLoop<H> {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        // Closures still queued are dropped here, on the loop thread.
        self.shared.jobs.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }
}
