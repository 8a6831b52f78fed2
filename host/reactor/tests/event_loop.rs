//! The reactor's contract, exercised through a real loop.

use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::bounded;
use wasmloop_reactor::{Event, EventLoop, Expired, Handler, LoopHandle, Reactor, Token};

/// Records what the loop delivered.
#[derive(Default)]
struct Recorder {
    fired: Vec<(Token, Instant)>,
    posted: Vec<(usize, usize)>,
}

impl Handler for Recorder {
    fn io(&mut self, _: &mut Reactor, _: Event) {}
    fn timer(&mut self, _: &mut Reactor, t: Expired) {
        self.fired.push((t.token, Instant::now()));
    }
}

#[test]
fn timers_fire_in_deadline_order_never_early_through_the_loop() {
    bounded(Duration::from_secs(10), || {
        let mut lp = EventLoop::<Recorder>::new().unwrap();
        let mut rec = Recorder::default();
        let mut expected = Vec::new();
        for (i, ms) in [7u64, 1, 15, 3, 3, 11].into_iter().enumerate() {
            let set_at = Instant::now();
            lp.reactor().set_timeout(Duration::from_millis(ms), Token(i as u64));
            expected.push((Token(i as u64), set_at + Duration::from_millis(ms)));
        }
        let cancelled = lp.reactor().set_timeout(Duration::from_millis(5), Token(99));
        assert!(lp.reactor().cancel_timer(cancelled));
        while rec.fired.len() < expected.len() {
            lp.run_once(&mut rec, None).unwrap();
        }
        let order: Vec<u64> = rec.fired.iter().map(|(t, _)| t.0).collect();
        assert_eq!(order, vec![1, 3, 4, 0, 5, 2], "deadline order, FIFO for the two 3 ms timers");
        for (token, at) in &rec.fired {
            let (_, earliest) = expected.iter().find(|(t, _)| t == token).unwrap();
            assert!(at >= earliest, "timer {token:?} fired {:?} early", *earliest - *at);
        }
        assert_eq!(lp.reactor().timer_count(), 0, "cancelled timer is gone");
    });
}

#[test]
fn wake_from_another_thread_ends_a_blocked_wait() {
    bounded(Duration::from_secs(10), || {
        let mut lp = EventLoop::<Recorder>::new().unwrap();
        let handle = lp.handle();
        let waker = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            handle.wake();
        });
        let start = Instant::now();
        // No sources, no timers: without the wake this would block forever.
        lp.run_once(&mut Recorder::default(), None).unwrap();
        assert!(start.elapsed() >= Duration::from_millis(40));
        waker.join().unwrap();
    });
}

#[test]
fn posted_closures_run_on_the_loop_thread_in_order_per_sender() {
    bounded(Duration::from_secs(20), || {
        let mut lp = EventLoop::<Recorder>::new().unwrap();
        let loop_thread = thread::current().id();
        let senders: Vec<_> = (0..4)
            .map(|sender| {
                let handle: LoopHandle<Recorder> = lp.handle();
                thread::spawn(move || {
                    for i in 0..1_000 {
                        handle
                            .post(move |rec: &mut Recorder, _: &mut Reactor| {
                                assert_eq!(thread::current().id(), loop_thread);
                                rec.posted.push((sender, i));
                            })
                            .unwrap();
                    }
                })
            })
            .collect();
        let mut rec = Recorder::default();
        while rec.posted.len() < 4_000 {
            lp.run_once(&mut rec, None).unwrap();
        }
        for s in senders {
            s.join().unwrap();
        }
        let mut next = HashMap::new();
        for (sender, i) in rec.posted {
            let expected = next.entry(sender).or_insert(0);
            assert_eq!(i, *expected, "sender {sender} out of order");
            *expected += 1;
        }
    });
}

#[test]
fn a_storm_of_wakes_leaves_one_pending_wakeup() {
    bounded(Duration::from_secs(10), || {
        let mut lp = EventLoop::<Recorder>::new().unwrap();
        let handle = lp.handle();
        thread::spawn(move || (0..100_000).for_each(|_| handle.wake())).join().unwrap();
        let mut rec = Recorder::default();
        lp.run_once(&mut rec, Some(Duration::ZERO)).unwrap();
        // The storm was absorbed: the next wait sleeps its full timeout.
        let start = Instant::now();
        lp.run_once(&mut rec, Some(Duration::from_millis(100))).unwrap();
        assert!(start.elapsed() >= Duration::from_millis(90), "woke after {:?}", start.elapsed());
    });
}

#[test]
fn post_after_the_loop_is_dropped_fails() {
    bounded(Duration::from_secs(10), || {
        let lp = EventLoop::<Recorder>::new().unwrap();
        let handle = lp.handle();
        drop(lp);
        assert!(handle.post(|_, _| {}).is_err());
    });
}

#[test]
fn a_timer_set_at_the_end_of_a_long_turn_is_not_late_by_that_turn() {
    bounded(Duration::from_secs(10), || {
        const TURN: Duration = Duration::from_millis(200);
        const DELAY: Duration = Duration::from_millis(5);
        let mut lp = EventLoop::<Recorder>::new().unwrap();
        let mut rec = Recorder::default();
        let handle = lp.handle();
        // A posted job stands in for a slow callback: it works for TURN,
        // then sets a short timer before the turn ends.
        handle
            .post(|_: &mut Recorder, reactor: &mut Reactor| {
                thread::sleep(TURN);
                reactor.set_timeout(DELAY, Token(1));
            })
            .unwrap();
        let mut set_at = None;
        while rec.fired.is_empty() {
            lp.run_once(&mut rec, None).unwrap();
            set_at.get_or_insert_with(Instant::now);
        }
        // The wait counts from when it starts, not from the start of the
        // turn that set the timer (which would make it TURN late).
        let late = rec.fired[0].1.saturating_duration_since(set_at.unwrap() + DELAY);
        assert!(late < TURN / 2, "the timer fired {late:?} late after a {TURN:?} turn");
    });
}

/// Counts what `turned` reports.
#[derive(Default)]
struct Turns {
    turns: Vec<wasmloop_reactor::Turn>,
}

impl Handler for Turns {
    fn io(&mut self, _: &mut Reactor, _: Event) {}
    fn timer(&mut self, _: &mut Reactor, _: Expired) {}
    fn turned(&mut self, _: &mut Reactor, turn: wasmloop_reactor::Turn) {
        self.turns.push(turn);
    }
}

#[test]
fn a_measured_loop_reports_each_turn_its_events_and_the_time_it_waited() {
    bounded(Duration::from_secs(10), || {
        let mut lp = EventLoop::<Turns>::new().unwrap();
        let mut turns = Turns::default();
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        lp.reactor().add(&a, Token(1), wasmloop_reactor::Interest::READABLE).unwrap();
        // Not measuring: no reports.
        lp.reactor().set_timeout(Duration::ZERO, Token(2));
        lp.run_once(&mut turns, None).unwrap();
        assert!(turns.turns.is_empty());

        lp.measure(true);
        lp.reactor().set_timeout(Duration::from_millis(30), Token(2));
        let start = Instant::now();
        lp.run_once(&mut turns, None).unwrap();
        let waited = start.elapsed();
        assert_eq!(turns.turns.len(), 1);
        let turn = turns.turns[0];
        assert_eq!(turn.events, 0, "a timer turn has no IO events");
        assert!(turn.waited >= Duration::from_millis(25) && turn.waited <= waited, "{turn:?} of {waited:?}");

        std::io::Write::write_all(&mut b, b"x").unwrap();
        lp.run_once(&mut turns, None).unwrap();
        assert_eq!(turns.turns[1].events, 1, "{:?}", turns.turns[1]);
    });
}
