//! The reactor's contract, exercised through a real loop on real sockets.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Mutex, PoisonError, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use wasmloop_reactor::{Event, EventLoop, Expired, Handler, Interest, LoopHandle, Reactor, Token};

/// Runs `f` on its own thread and fails the test if it takes longer than
/// `limit` (a hung loop must fail, not block the suite). Tests run one at a
/// time: the descriptor-leak test counts the whole process's descriptors.
fn bounded<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    static SERIAL: Mutex<()> = Mutex::new(());
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .expect("test exceeded its time bound")
}

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
            lp.reactor()
                .set_timeout(Duration::from_millis(ms), Token(i as u64));
            expected.push((Token(i as u64), set_at + Duration::from_millis(ms)));
        }
        let cancelled = lp
            .reactor()
            .set_timeout(Duration::from_millis(5), Token(99));
        assert!(lp.reactor().cancel_timer(cancelled));
        while rec.fired.len() < expected.len() {
            lp.run_once(&mut rec, None).unwrap();
        }
        let order: Vec<u64> = rec.fired.iter().map(|(t, _)| t.0).collect();
        assert_eq!(
            order,
            vec![1, 3, 4, 0, 5, 2],
            "deadline order, FIFO for the two 3 ms timers"
        );
        for (token, at) in &rec.fired {
            let (_, earliest) = expected.iter().find(|(t, _)| t == token).unwrap();
            assert!(
                at >= earliest,
                "timer {token:?} fired {:?} early",
                *earliest - *at
            );
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
        thread::spawn(move || (0..100_000).for_each(|_| handle.wake()))
            .join()
            .unwrap();
        let mut rec = Recorder::default();
        lp.run_once(&mut rec, Some(Duration::ZERO)).unwrap();
        // The storm was absorbed: the next wait sleeps its full timeout.
        let start = Instant::now();
        lp.run_once(&mut rec, Some(Duration::from_millis(100)))
            .unwrap();
        assert!(
            start.elapsed() >= Duration::from_millis(90),
            "woke after {:?}",
            start.elapsed()
        );
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

/// The loop thread's on-CPU time in nanoseconds (Linux scheduler stats).
#[cfg(target_os = "linux")]
fn thread_cpu_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    stat.split_whitespace().next().unwrap().parse().unwrap()
}

#[cfg(target_os = "linux")]
#[test]
fn an_idle_loop_sleeps() {
    bounded(Duration::from_secs(20), || {
        let mut lp = EventLoop::<Recorder>::new().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        lp.reactor()
            .add(&listener, Token(1), Interest::READABLE)
            .unwrap();
        let handle = lp.handle();
        thread::spawn(move || {
            thread::sleep(Duration::from_secs(2));
            handle.post(|_, reactor| reactor.stop()).unwrap();
        });
        let before = thread_cpu_ns();
        let mut turns = 0;
        let mut rec = Recorder::default();
        while !lp.reactor().is_stopping() {
            lp.run_once(&mut rec, None).unwrap();
            turns += 1;
        }
        let cpu = Duration::from_nanos(thread_cpu_ns() - before);
        assert_eq!(turns, 1, "the loop woke without a reason");
        assert!(
            cpu < Duration::from_millis(10),
            "idle loop used {cpu:?} of CPU in 2 s"
        );
    });
}

/// A native echo handler on the reactor alone: the baseline the wasm host is
/// measured against, and a check that sockets are not leaked.
struct NativeEcho {
    listener: TcpListener,
    conns: HashMap<u64, TcpStream>,
    next: u64,
    buf: Vec<u8>,
}

impl Handler for NativeEcho {
    fn io(&mut self, reactor: &mut Reactor, event: Event) {
        if event.token == Token(0) {
            loop {
                match self.listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(true).unwrap();
                        self.next += 1;
                        reactor
                            .add(&stream, Token(self.next), Interest::READABLE)
                            .unwrap();
                        self.conns.insert(self.next, stream);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) => panic!("accept: {e}"),
                }
            }
        }
        let Some(stream) = self.conns.get_mut(&event.token.0) else {
            return;
        };
        loop {
            match stream.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => stream.write_all(&self.buf[..n]).unwrap(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => break,
            }
        }
        let stream = self.conns.remove(&event.token.0).unwrap();
        reactor.delete(&stream).unwrap();
    }

    fn timer(&mut self, _: &mut Reactor, _: Expired) {}
}

#[cfg(target_os = "linux")]
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[cfg(target_os = "linux")]
#[test]
fn no_descriptor_leaks_after_10_000_connect_close_cycles() {
    bounded(Duration::from_secs(120), || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let mut lp = EventLoop::<NativeEcho>::new().unwrap();
        lp.reactor()
            .add(&listener, Token(0), Interest::READABLE)
            .unwrap();
        let baseline = open_fds();
        let client = thread::spawn(move || {
            for i in 0..10_000u32 {
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(&i.to_le_bytes()).unwrap();
                let mut back = [0u8; 4];
                s.read_exact(&mut back).unwrap();
                assert_eq!(back, i.to_le_bytes());
            }
        });
        let mut echo = NativeEcho {
            listener,
            conns: HashMap::new(),
            next: 0,
            buf: vec![0; 4096],
        };
        let deadline = Instant::now() + Duration::from_secs(100);
        // The last peer's close may still be in flight when the client
        // finishes: run until every connection is gone.
        while !(client.is_finished() && echo.conns.is_empty()) {
            lp.run_once(&mut echo, Some(Duration::from_millis(100)))
                .unwrap();
            assert!(Instant::now() < deadline, "connections never closed");
        }
        client.join().unwrap();
        assert_eq!(open_fds(), baseline, "descriptors leaked");
    });
}
