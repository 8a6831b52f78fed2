//! The loop on a foreign backend ([`LoopOps`]): what it asks of the backend
//! and when, checked with a backend that only records the calls.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::serial;
use wasmloop_reactor::foreign::{LoopOps, Waker};
use wasmloop_reactor::{Event, EventLoop, Expired, Handler, Interest, Reactor, Token};

#[derive(Debug, PartialEq)]
enum Call {
    Watch(RawFd, Token, Interest),
    Unwatch(RawFd),
    Arm(Option<Instant>),
    Detach,
}

struct Recording {
    calls: Rc<RefCell<Vec<Call>>>,
    wakes: Arc<AtomicUsize>,
}

impl LoopOps for Recording {
    fn watch(&mut self, fd: BorrowedFd<'_>, token: Token, interest: Interest) -> io::Result<()> {
        self.calls.borrow_mut().push(Call::Watch(fd.as_raw_fd(), token, interest));
        Ok(())
    }
    fn unwatch(&mut self, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.calls.borrow_mut().push(Call::Unwatch(fd.as_raw_fd()));
        Ok(())
    }
    fn arm_timer(&mut self, deadline: Option<Instant>) {
        self.calls.borrow_mut().push(Call::Arm(deadline));
    }
    fn waker(&mut self) -> io::Result<Waker> {
        let wakes = self.wakes.clone();
        Ok(Arc::new(move || {
            wakes.fetch_add(1, Ordering::SeqCst);
        }))
    }
    fn detach(&mut self) {
        self.calls.borrow_mut().push(Call::Detach);
    }
}

#[derive(Default)]
struct Recorder {
    io: Vec<Token>,
    fired: Vec<Token>,
    posted: usize,
    prepared: usize,
}

impl Handler for Recorder {
    fn io(&mut self, _: &mut Reactor, event: Event) {
        self.io.push(event.token);
    }
    fn timer(&mut self, _: &mut Reactor, timer: Expired) {
        self.fired.push(timer.token);
    }
    fn prepare(&mut self, _: &mut Reactor) {
        self.prepared += 1;
    }
}

fn foreign_loop() -> (EventLoop<Recorder>, Rc<RefCell<Vec<Call>>>, Arc<AtomicUsize>) {
    let calls = Rc::new(RefCell::new(Vec::new()));
    let wakes = Arc::new(AtomicUsize::new(0));
    let ops = Recording { calls: calls.clone(), wakes: wakes.clone() };
    (EventLoop::with_foreign(Box::new(ops)).unwrap(), calls, wakes)
}

#[test]
fn registration_goes_to_the_backend_and_the_one_timer_follows_the_earliest_deadline() {
    let _serial = serial();
    let (mut lp, calls, _) = foreign_loop();
    let mut rec = Recorder::default();
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    lp.reactor().add(&a, Token(1), Interest::READABLE).unwrap();
    lp.reactor().modify(&a, Token(1), Interest::BOTH).unwrap();
    lp.reactor().set_timeout(Duration::from_secs(60), Token(2));
    let early = lp.reactor().set_timeout(Duration::from_secs(30), Token(3));
    let fd = a.as_raw_fd();
    assert_eq!(
        *calls.borrow(),
        [Call::Watch(fd, Token(1), Interest::READABLE), Call::Watch(fd, Token(1), Interest::BOTH)]
    );

    // A turn with one event: the handler sees it, then the timer is armed
    // at the earliest deadline, after the prepare hook (the loop may sleep).
    calls.borrow_mut().clear();
    let event = Event { token: Token(1), readable: true, writable: false, closed: false };
    lp.dispatch(&mut rec, [event]);
    assert_eq!(rec.io, [Token(1)]);
    assert_eq!(rec.prepared, 1);
    let Some(Call::Arm(Some(first))) = calls.borrow_mut().pop() else { panic!("the timer was not armed") };

    // Cancelling the earliest timer moves the one foreign timer later.
    lp.reactor().cancel_timer(early);
    lp.dispatch(&mut rec, []);
    let Some(Call::Arm(Some(second))) = calls.borrow_mut().pop() else { panic!("the timer was not re-armed") };
    assert!(second >= first + Duration::from_secs(29), "armed at {second:?}, the earliest timer was cancelled");

    lp.reactor().delete(&a).unwrap();
    assert_eq!(calls.borrow_mut().pop(), Some(Call::Unwatch(fd)));
    drop(lp);
    assert_eq!(calls.borrow_mut().pop(), Some(Call::Detach), "dropping the loop detaches it");
}

#[test]
fn posts_from_another_thread_wake_the_foreign_loop_once_and_run_in_the_next_turn() {
    let _serial = serial();
    let (mut lp, calls, wakes) = foreign_loop();
    let mut rec = Recorder::default();
    let handle = lp.handle();
    std::thread::spawn(move || {
        for _ in 0..3 {
            handle
                .post(|rec: &mut Recorder, reactor| {
                    rec.posted += 1;
                    reactor.defer();
                })
                .unwrap();
        }
    })
    .join()
    .unwrap();
    assert_eq!(wakes.load(Ordering::SeqCst), 1, "wakes before the loop looked are coalesced");

    lp.dispatch(&mut rec, []);
    assert_eq!(rec.posted, 3);
    // Deferred work ran in that turn; nothing pending, no timers: disarmed.
    assert_eq!(calls.borrow_mut().pop(), Some(Call::Arm(None)));
}

/// Posts one more closure from inside a posted closure: work that is
/// still pending when the turn ends.
struct Reposter(wasmloop_reactor::LoopHandle<Reposter>, usize);

impl Handler for Reposter {
    fn io(&mut self, _: &mut Reactor, _: Event) {}
    fn timer(&mut self, _: &mut Reactor, _: Expired) {}
    fn prepare(&mut self, _: &mut Reactor) {
        self.1 += 1;
    }
}

#[test]
fn work_left_pending_by_a_turn_arms_the_timer_at_once_without_the_prepare_hook() {
    let _serial = serial();
    let calls = Rc::new(RefCell::new(Vec::new()));
    let ops = Recording { calls: calls.clone(), wakes: Arc::new(AtomicUsize::new(0)) };
    let mut lp = EventLoop::<Reposter>::with_foreign(Box::new(ops)).unwrap();
    let handle = lp.handle();
    let mut handler = Reposter(handle.clone(), 0);
    handle.post(|h: &mut Reposter, _| h.0.post(|_, _| {}).unwrap()).unwrap();
    let before = Instant::now();
    lp.dispatch(&mut handler, []);
    match calls.borrow_mut().pop() {
        Some(Call::Arm(Some(at))) => assert!(at >= before && at <= Instant::now(), "armed for later"),
        other => panic!("expected the timer armed at once, got {other:?}"),
    }
    assert_eq!(handler.1, 0, "no prepare hook when the loop must not sleep");
}

#[test]
fn run_once_is_refused_on_a_foreign_loop() {
    let _serial = serial();
    let (mut lp, _, _) = foreign_loop();
    let error = lp.run_once(&mut Recorder::default(), Some(Duration::ZERO)).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::Unsupported);
}
