//! wasmloop on a [calloop](https://docs.rs/calloop) loop: the
//! [`LoopOps`] backend that puts each of our descriptors, our one timer and
//! our waker on a calloop `LoopHandle`, and [`Attached`], which runs a turn
//! of our loop whenever calloop reports any of them.
//!
//! ```text
//! let (event_loop, link) = on_calloop::event_loop(&calloop.handle())?;
//! // … add guests through event_loop.reactor() (or Host::with_event_loop) …
//! let attached = link.attach(event_loop, server);
//! calloop.run(None, &mut data, |_| if attached.is_stopping() { … })?;
//! let server = attached.detach(); // calloop is left with its own sources only
//! ```
//!
//! How a turn is batched: each ready descriptor's callback only records an
//! [`Event`]; the first one of a calloop iteration queues an *idle* callback,
//! and calloop runs idles after it has dispatched every ready source. That
//! idle is one turn ([`EventLoop::dispatch`]) with all the iteration's
//! events, as one `epoll_wait` would have given them. Our timer and waker
//! queue the same idle with no events. When the turn leaves work pending we
//! arm our timer at "now", which makes calloop's next poll not block.
//!
//! Costs beside the native loop: each watched descriptor is a duplicate
//! (calloop's `Generic` source wants an owned descriptor, and duplicating is
//! the safe way to give it one); calloop's `polling` does not report
//! `EPOLLRDHUP` apart, so readable events say `closed` too and the server
//! reads to `EAGAIN` (one more `read` per wakeup).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Instant;

use calloop::generic::Generic;
use calloop::ping::make_ping;
use calloop::timer::{TimeoutAction, Timer};
use calloop::{Idle, LoopHandle, Mode, PostAction, RegistrationToken};
use wasmloop_reactor::foreign::{LoopOps, Waker};
use wasmloop_reactor::{Event, EventLoop, Handler, Interest, Token};

/// A new [`EventLoop`] whose descriptors and timer live on `calloop`, and the
/// [`Link`] that attaches it once its handler exists.
pub fn event_loop<H: Handler + 'static, Data: 'static>(
    calloop: &LoopHandle<'static, Data>,
) -> io::Result<(EventLoop<H>, Link<H>)> {
    let weak = calloop.downgrade();
    let inbox = Rc::new(Inbox {
        insert_idle: Box::new(move |turn| Some(weak.upgrade()?.insert_idle(move |_| turn()))),
        events: RefCell::new(Vec::new()),
        queued: RefCell::new(None),
        timer_fired: Cell::new(false),
        turn: RefCell::new(None),
    });
    let ops = CalloopOps {
        calloop: calloop.clone(),
        inbox: inbox.clone(),
        watched: HashMap::new(),
        timer: None,
        waker: None,
    };
    let event_loop = EventLoop::with_foreign(Box::new(ops))?;
    Ok((event_loop, Link { inbox, running: std::marker::PhantomData }))
}

/// Attaches an [`EventLoop`] made by [`event_loop`] to its handler.
pub struct Link<H> {
    inbox: Rc<Inbox>,
    running: std::marker::PhantomData<H>,
}

impl<H: Handler + 'static> Link<H> {
    /// From now on calloop runs turns of `event_loop` with `handler`. The
    /// first turn runs at once (timers, posted closures and deferred work
    /// queued while setting up).
    pub fn attach(self, event_loop: EventLoop<H>, handler: H) -> Attached<H> {
        let running = Rc::new(RefCell::new(Running { event_loop, handler }));
        let weak: Weak<RefCell<Running<H>>> = Rc::downgrade(&running);
        *self.inbox.turn.borrow_mut() = Some(Box::new(move |events: &mut Vec<Event>| {
            if let Some(running) = weak.upgrade() {
                let Running { event_loop, handler } = &mut *running.borrow_mut();
                event_loop.dispatch(handler, events.drain(..));
            }
        }));
        {
            let Running { event_loop, handler } = &mut *running.borrow_mut();
            event_loop.dispatch(handler, []);
        }
        Attached { running }
    }
}

/// Our loop and its handler, running on calloop.
pub struct Attached<H: Handler> {
    running: Rc<RefCell<Running<H>>>,
}

struct Running<H> {
    event_loop: EventLoop<H>,
    handler: H,
}

impl<H: Handler> Attached<H> {
    /// Whether the handler stopped our loop ([`wasmloop_reactor::Reactor::stop`]):
    /// time to [`detach`](Attached::detach) (or stop calloop).
    pub fn is_stopping(&self) -> bool {
        self.running.borrow_mut().event_loop.reactor().is_stopping()
    }

    /// The handler, between turns.
    pub fn handler(&self) -> std::cell::RefMut<'_, H> {
        std::cell::RefMut::map(self.running.borrow_mut(), |r| &mut r.handler)
    }

    /// Removes every source we put on calloop (descriptors, timer, waker,
    /// a queued turn) and returns the handler; calloop goes on with its own
    /// sources only.
    pub fn detach(self) -> H {
        let running = match Rc::try_unwrap(self.running) {
            Ok(running) => running.into_inner(),
            Err(_) => unreachable!("turns hold the loop weakly"),
        };
        let Running { mut event_loop, handler } = running;
        event_loop.detach();
        handler
    }
}

/// What calloop's callbacks share: the events of this iteration and the turn
/// to run them. Callbacks hold it strongly, so it holds calloop weakly (a
/// strong handle inside one of calloop's own sources would keep calloop
/// alive forever).
struct Inbox {
    /// Queues a calloop idle callback, through a weak `LoopHandle`.
    insert_idle: Box<dyn Fn(IdleFn) -> Option<Idle<'static>>>,
    events: RefCell<Vec<Event>>,
    /// The idle callback of a queued turn.
    queued: RefCell<Option<Idle<'static>>>,
    /// Our timer fired (and calloop dropped it).
    timer_fired: Cell<bool>,
    turn: RefCell<Option<TurnFn>>,
}

type TurnFn = Box<dyn FnMut(&mut Vec<Event>)>;
type IdleFn = Box<dyn FnOnce()>;

/// Queues a turn as a calloop idle, once per calloop iteration.
fn queue_turn(inbox: &Rc<Inbox>) {
    if inbox.queued.borrow().is_some() {
        return;
    }
    let for_idle = inbox.clone();
    let idle = (inbox.insert_idle)(Box::new(move || run_turn(&for_idle)));
    *inbox.queued.borrow_mut() = idle;
}

fn run_turn(inbox: &Inbox) {
    inbox.queued.borrow_mut().take();
    let mut events = mem::take(&mut *inbox.events.borrow_mut());
    // Taken out while it runs: the turn registers sources, whose callbacks
    // hold the inbox, but none of them runs before the turn returns.
    let turn = inbox.turn.borrow_mut().take();
    if let Some(mut turn) = turn {
        turn(&mut events);
        let mut slot = inbox.turn.borrow_mut();
        // Still attached (a detach during the turn cleared nothing here).
        if slot.is_none() {
            *slot = Some(turn);
        }
    }
    events.clear();
    // Keep the allocation for the next iteration.
    let mut slot = inbox.events.borrow_mut();
    if slot.is_empty() {
        *slot = events;
    }
}

/// The [`LoopOps`] backend on a calloop `LoopHandle`.
struct CalloopOps<Data: 'static> {
    calloop: LoopHandle<'static, Data>,
    inbox: Rc<Inbox>,
    /// By the descriptor number we were given (not the duplicate's).
    watched: HashMap<RawFd, RegistrationToken>,
    timer: Option<(Instant, RegistrationToken)>,
    waker: Option<RegistrationToken>,
}

impl<Data: 'static> LoopOps for CalloopOps<Data> {
    fn watch(&mut self, fd: BorrowedFd<'_>, token: Token, interest: Interest) -> io::Result<()> {
        if let Some(old) = self.watched.remove(&fd.as_raw_fd()) {
            self.calloop.remove(old);
        }
        let copy: OwnedFd = fd.try_clone_to_owned()?;
        let wanted = calloop::Interest { readable: interest.readable, writable: interest.writable };
        let inbox = self.inbox.clone();
        let source = Generic::new(copy, wanted, Mode::Edge);
        let registration = self
            .calloop
            .insert_source(source, move |readiness, _, _| {
                inbox.events.borrow_mut().push(Event {
                    token,
                    readable: readiness.readable || readiness.error,
                    writable: readiness.writable || readiness.error,
                    closed: readiness.readable || readiness.error,
                });
                queue_turn(&inbox);
                Ok(PostAction::Continue)
            })
            .map_err(|e| io::Error::from(e.error))?;
        self.watched.insert(fd.as_raw_fd(), registration);
        Ok(())
    }

    fn unwatch(&mut self, fd: BorrowedFd<'_>) -> io::Result<()> {
        match self.watched.remove(&fd.as_raw_fd()) {
            Some(registration) => {
                self.calloop.remove(registration);
                Ok(())
            }
            None => Err(io::Error::from_raw_os_error(rustix::io::Errno::NOENT.raw_os_error())),
        }
    }

    fn arm_timer(&mut self, deadline: Option<Instant>) {
        let fired = self.inbox.timer_fired.replace(false);
        if let Some((armed, registration)) = self.timer.take() {
            if !fired && Some(armed) == deadline {
                self.timer = Some((armed, registration));
                return;
            }
            if !fired {
                self.calloop.remove(registration);
            }
        }
        let Some(deadline) = deadline else { return };
        let inbox = self.inbox.clone();
        let inserted = self.calloop.insert_source(Timer::from_deadline(deadline), move |_, _, _| {
            inbox.timer_fired.set(true);
            queue_turn(&inbox);
            TimeoutAction::Drop
        });
        match inserted {
            Ok(registration) => self.timer = Some((deadline, registration)),
            // Timers are a heap inside calloop; inserting one cannot fail
            // short of running out of memory.
            Err(e) => tracing::error!("cannot arm the loop's timer on calloop: {}", e.error),
        }
    }

    fn waker(&mut self) -> io::Result<Waker> {
        let (ping, source) = make_ping()?;
        let inbox = self.inbox.clone();
        let registration = self
            .calloop
            .insert_source(source, move |_, _, _| queue_turn(&inbox))
            .map_err(|e| io::Error::from(e.error))?;
        self.waker = Some(registration);
        Ok(Arc::new(move || ping.ping()))
    }

    fn detach(&mut self) {
        for (_, registration) in self.watched.drain() {
            self.calloop.remove(registration);
        }
        if let Some((_, registration)) = self.timer.take()
            && !self.inbox.timer_fired.get()
        {
            self.calloop.remove(registration);
        }
        if let Some(registration) = self.waker.take() {
            self.calloop.remove(registration);
        }
        if let Some(idle) = self.inbox.queued.borrow_mut().take() {
            idle.cancel();
        }
        self.inbox.turn.borrow_mut().take();
        self.inbox.events.borrow_mut().clear();
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::os::fd::AsRawFd;
    use std::rc::Rc;
    use std::time::Duration;

    use calloop::timer::{TimeoutAction, Timer};
    use wasmloop_reactor::{Event, Expired, Handler, Interest, Reactor, Token};

    use super::*;

    /// Records what our loop reported.
    #[derive(Default)]
    struct Recorder {
        io: Vec<Token>,
        timers: Vec<Token>,
        posted: usize,
    }

    impl Handler for Recorder {
        fn io(&mut self, _reactor: &mut Reactor, event: Event) {
            self.io.push(event.token);
        }

        fn timer(&mut self, _reactor: &mut Reactor, timer: Expired) {
            self.timers.push(timer.token);
        }
    }

    /// The descriptors calloop's epoll instance watches, from
    /// /proc/self/fdinfo (one `tfd:` line each).
    #[cfg(target_os = "linux")]
    fn watched_by(epoll: RawFd) -> usize {
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{epoll}")).unwrap();
        info.lines().filter(|l| l.starts_with("tfd:")).count()
    }

    /// Turns `calloop` until `done` holds (at most 5 s).
    fn turn_until(calloop: &mut calloop::EventLoop<'static, ()>, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < deadline, "calloop did not get there within 5 s");
            calloop.dispatch(Some(Duration::from_millis(10)), &mut ()).unwrap();
        }
    }

    #[test]
    fn our_descriptors_timers_and_posts_run_on_calloop_and_detaching_leaves_only_its_own_sources() {
        let mut calloop = calloop::EventLoop::<'static, ()>::try_new().unwrap();
        // calloop's own timer, every 5 ms, counting.
        let own_ticks = Rc::new(Cell::new(0));
        let ticks = own_ticks.clone();
        calloop
            .handle()
            .insert_source(Timer::from_duration(Duration::from_millis(5)), move |_, _, _| {
                ticks.set(ticks.get() + 1);
                TimeoutAction::ToDuration(Duration::from_millis(5))
            })
            .unwrap();
        #[cfg(target_os = "linux")]
        let before = watched_by(calloop.as_raw_fd());

        let (mut event_loop, link) = event_loop::<Recorder, ()>(&calloop.handle()).unwrap();
        let (ours, peer) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        event_loop.reactor().add(&ours, Token(7), Interest::READABLE).unwrap();
        event_loop.reactor().set_timeout(Duration::from_millis(20), Token(9));
        let handle = event_loop.handle();
        let attached = link.attach(event_loop, Recorder::default());
        #[cfg(target_os = "linux")]
        assert_eq!(watched_by(calloop.as_raw_fd()), before + 2, "our socket and our waker are on calloop");

        // A descriptor, our timer and a post from another thread each
        // reach the handler through calloop.
        std::io::Write::write_all(&mut &peer, b"x").unwrap();
        turn_until(&mut calloop, || attached.handler().io.contains(&Token(7)));
        turn_until(&mut calloop, || attached.handler().timers.contains(&Token(9)));
        std::thread::spawn(move || handle.post(|recorder: &mut Recorder, _| recorder.posted += 1).unwrap())
            .join()
            .unwrap();
        turn_until(&mut calloop, || attached.handler().posted == 1);

        let recorder = attached.detach();
        assert_eq!(recorder.io, [Token(7)], "one edge, one event");
        #[cfg(target_os = "linux")]
        assert_eq!(watched_by(calloop.as_raw_fd()), before, "calloop still watches a descriptor of ours");

        // calloop goes on with its own timer; our socket is no longer heard.
        std::io::Write::write_all(&mut &peer, b"y").unwrap();
        let ticks_at_detach = own_ticks.get();
        turn_until(&mut calloop, || own_ticks.get() >= ticks_at_detach + 3);
        drop(ours);
    }
}
