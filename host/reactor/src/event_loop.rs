//! The loop itself: the phases of one turn, in the order the crate docs give.

use std::cell::RefCell;
use std::io;
use std::mem;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::foreign::LoopOps;
use crate::handle::{Job, LoopHandle, Shared, Wake};
use crate::{Event, Events, Expired, Interest, Poller, TimerHeap, TimerId, Token};

/// Events collected per wait; more stay queued in the kernel for the next.
const EVENTS_PER_WAIT: usize = 1024;

/// What a [`Handler`] works with during a callback: registration, timers,
/// the tick's clock reading, and stopping the loop.
pub struct Reactor {
    backend: Backend,
    timers: TimerHeap,
    now: Instant,
    stopping: bool,
    deferred: bool,
    /// Report each turn to [`Handler::turned`] ([`EventLoop::measure`]).
    measure: bool,
    /// When the last turn ended, if measuring.
    turn_ended: Option<Instant>,
}

/// One turn of the loop, for metrics ([`EventLoop::measure`]).
#[derive(Clone, Copy, Debug)]
pub struct Turn {
    /// IO events dispatched.
    pub events: usize,
    /// From the end of the previous turn to this one's wakeup: blocked in
    /// the wait (or, on a foreign loop, anything outside our turns).
    pub waited: Duration,
    /// From the wakeup to the end of the turn (phases 2 to 6).
    pub busy: Duration,
}

/// Who watches the descriptors: our own OS poller, or a foreign loop
/// ([`crate::foreign`]). One predictable branch per call; the OS path
/// neither allocates nor takes a lock.
enum Backend {
    Os(Arc<Poller>),
    /// A `RefCell` because registration takes `&Reactor`; a backend never
    /// calls back into the reactor, so the borrow cannot nest.
    Foreign(RefCell<Box<dyn LoopOps>>),
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
    /// A turn ended; only called once [`EventLoop::measure`] is on.
    fn turned(&mut self, _reactor: &mut Reactor, _turn: Turn) {}
}

impl Reactor {
    /// Watches `fd`, edge-triggered. The descriptor should be non-blocking.
    pub fn add(&self, fd: impl AsFd, token: Token, interest: Interest) -> io::Result<()> {
        match &self.backend {
            Backend::Os(poller) => poller.add(fd.as_fd(), token, interest),
            Backend::Foreign(ops) => ops.borrow_mut().watch(fd.as_fd(), token, interest),
        }
    }

    pub fn modify(&self, fd: impl AsFd, token: Token, interest: Interest) -> io::Result<()> {
        match &self.backend {
            Backend::Os(poller) => poller.modify(fd.as_fd(), token, interest),
            Backend::Foreign(ops) => ops.borrow_mut().watch(fd.as_fd(), token, interest),
        }
    }

    /// Stops watching `fd`. Call before closing it.
    pub fn delete(&self, fd: impl AsFd) -> io::Result<()> {
        match &self.backend {
            Backend::Os(poller) => poller.delete(fd.as_fd()),
            Backend::Foreign(ops) => ops.borrow_mut().unwatch(fd.as_fd()),
        }
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
        Ok(EventLoop::with_backend(Wake::Os(poller.clone()), Backend::Os(poller), EVENTS_PER_WAIT))
    }

    /// A loop that runs on a foreign loop: `ops` watches our descriptors and
    /// arms our timer there, and the foreign loop calls
    /// [`dispatch`](EventLoop::dispatch) when they fire. [`run`](EventLoop::run),
    /// [`run_once`](EventLoop::run_once) and
    /// [`backend_fd`](EventLoop::backend_fd) are then not available.
    pub fn with_foreign(mut ops: Box<dyn LoopOps>) -> io::Result<EventLoop<H>> {
        let waker = ops.waker()?;
        // No OS events are ever collected: no buffer.
        Ok(EventLoop::with_backend(Wake::Foreign(waker), Backend::Foreign(RefCell::new(ops)), 0))
    }

    fn with_backend(wake: Wake, backend: Backend, capacity: usize) -> EventLoop<H> {
        let shared = Arc::new(Shared {
            wake,
            woken: AtomicBool::new(false),
            jobs: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        });
        EventLoop {
            reactor: Reactor {
                backend,
                timers: TimerHeap::new(),
                now: Instant::now(),
                stopping: false,
                deferred: false,
                measure: false,
                turn_ended: None,
            },
            events: Events::with_capacity(capacity),
            shared,
            jobs: Vec::new(),
        }
    }

    /// Whether a foreign loop drives this loop ([`EventLoop::with_foreign`]).
    pub fn is_foreign(&self) -> bool {
        matches!(self.reactor.backend, Backend::Foreign(_))
    }

    pub fn handle(&self) -> LoopHandle<H> {
        LoopHandle { shared: self.shared.clone() }
    }

    pub fn reactor(&mut self) -> &mut Reactor {
        &mut self.reactor
    }

    /// Reports every turn to [`Handler::turned`], at the cost of two clock
    /// readings per turn. Off by default.
    pub fn measure(&mut self, on: bool) {
        self.reactor.measure = on;
        self.reactor.turn_ended = on.then(Instant::now);
    }

    /// Turns the loop until [`Reactor::stop`].
    pub fn run(&mut self, handler: &mut H) -> io::Result<()> {
        while !self.reactor.stopping {
            self.run_once(handler, None)?;
        }
        Ok(())
    }

    /// One turn: wait (at most `max_wait`, if given), then dispatch.
    /// Fails with `Unsupported` on a foreign loop (it waits, not us).
    pub fn run_once(&mut self, handler: &mut H, max_wait: Option<Duration>) -> io::Result<()> {
        if self.is_foreign() {
            return Err(foreign_loop_waits());
        }
        // 1. Wait, after the prepare hook if the wait may block.
        let timeout = match (self.next_timeout(), max_wait) {
            (Some(t), Some(m)) => Some(t.min(m)),
            (t, m) => t.or(m),
        };
        if timeout != Some(Duration::ZERO) {
            handler.prepare(&mut self.reactor);
        }
        if let Backend::Os(poller) = &self.reactor.backend {
            poller.wait(&mut self.events, timeout)?;
        }
        Self::phases(&mut self.reactor, &self.shared, &mut self.jobs, handler, self.events.iter());
        Ok(())
    }

    /// One turn on a foreign loop, after it reported `events` (ready
    /// descriptors; none when only our timer or waker fired): phases 2 to 6
    /// of [`run_once`](EventLoop::run_once), then the prepare hook if
    /// nothing is pending, and the foreign timer re-armed at our earliest
    /// deadline (or at once if work is pending). Call it once right after
    /// setting up, so timers and closures from before are seen.
    pub fn dispatch(&mut self, handler: &mut H, events: impl IntoIterator<Item = Event>) {
        Self::phases(&mut self.reactor, &self.shared, &mut self.jobs, handler, events.into_iter());
        if !matches!(self.reactor.backend, Backend::Foreign(_)) {
            return;
        }
        let deadline = if self.reactor.stopping {
            // Whoever runs the foreign loop sees `is_stopping` and detaches.
            None
        } else if self.work_pending() {
            Some(Instant::now())
        } else {
            handler.prepare(&mut self.reactor);
            self.reactor.timers.next_deadline()
        };
        if let Backend::Foreign(ops) = &self.reactor.backend {
            ops.borrow_mut().arm_timer(deadline);
        }
    }

    /// Removes everything a foreign backend registered on its loop (our
    /// descriptors, timer and waker), leaving that loop as it was. Nothing
    /// on the OS backend. Also done when the loop is dropped.
    pub fn detach(&mut self) {
        if let Backend::Foreign(ops) = &self.reactor.backend {
            ops.borrow_mut().detach();
        }
    }

    /// Phases 2 to 6 of a turn, after the wait.
    fn phases(
        reactor: &mut Reactor,
        shared: &Shared<H>,
        jobs: &mut Vec<Job<H>>,
        handler: &mut H,
        events: impl Iterator<Item = Event>,
    ) {
        // 2. Read the clock, once for the whole turn.
        reactor.now = Instant::now();

        // 3. IO.
        let mut dispatched = 0;
        for event in events {
            dispatched += 1;
            handler.io(reactor, event);
        }

        // 4. Posted closures. Clear the flag before taking the queue: a post
        //    racing with us then either lands in this batch or wakes us again.
        if shared.woken.swap(false, Ordering::AcqRel) {
            mem::swap(&mut *shared.jobs.lock().unwrap_or_else(PoisonError::into_inner), jobs);
            for job in jobs.drain(..) {
                job(handler, reactor);
            }
        }

        // 5. Timers.
        let barrier = reactor.timers.barrier();
        while let Some(expired) = reactor.timers.pop_due(reactor.now, barrier) {
            handler.timer(reactor, expired);
        }

        // 6. Deferred work.
        if mem::take(&mut reactor.deferred) {
            handler.deferred(reactor);
        }

        if reactor.measure {
            let ended = Instant::now();
            let woke = reactor.now;
            let waited = reactor.turn_ended.map_or(Duration::ZERO, |t| woke.saturating_duration_since(t));
            reactor.turn_ended = Some(ended);
            handler.turned(reactor, Turn { events: dispatched, waited, busy: ended - woke });
        }
    }

    /// How long the next wait may block: `Some(ZERO)` if work is pending,
    /// `None` for "until an event", otherwise until the earliest timer,
    /// rounded up to a whole millisecond. For embedding in a foreign loop.
    pub fn next_timeout(&mut self) -> Option<Duration> {
        if self.reactor.stopping || self.work_pending() {
            return Some(Duration::ZERO);
        }
        let deadline = self.reactor.timers.next_deadline()?;
        // A fresh reading, not the turn's: a long turn has already used up
        // part of the wait, and counting from its start would fire late.
        let left = deadline.saturating_duration_since(Instant::now());
        let millis = left.as_nanos().div_ceil(1_000_000);
        Some(Duration::from_millis(millis.min(u64::MAX as u128) as u64))
    }

    /// Deferred work or posted closures wait: the next turn must not block.
    fn work_pending(&self) -> bool {
        self.reactor.deferred || self.shared.woken.load(Ordering::Acquire)
    }

    /// The backend's descriptor (epoll or kqueue): readable when the loop has
    /// something to do. For embedding in a foreign loop.
    ///
    /// # Panics
    ///
    /// On a foreign loop ([`EventLoop::with_foreign`]): there is no such
    /// descriptor, the foreign loop watches each of ours.
    pub fn backend_fd(&self) -> BorrowedFd<'_> {
        match &self.reactor.backend {
            Backend::Os(poller) => poller.as_fd(),
            Backend::Foreign(_) => panic!("a loop on a foreign backend has no backend descriptor"),
        }
    }
}

fn foreign_loop_waits() -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, "a foreign loop drives this event loop: call dispatch, not run")
}

impl<H> Drop for EventLoop<H> {
    fn drop(&mut self) {
        if let Backend::Foreign(ops) = &self.reactor.backend {
            ops.borrow_mut().detach();
        }
        self.shared.closed.store(true, Ordering::Release);
        // Closures still queued are dropped here, on the loop thread.
        self.shared.jobs.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }
}
