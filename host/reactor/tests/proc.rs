//! Linux-only checks that read the kernel's view of the process (/proc):
//! the idle loop's CPU time and the process's open descriptors.
#![cfg(target_os = "linux")]

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::bounded;
use wasmloop_reactor::{Event, EventLoop, Expired, Handler, Interest, Reactor, Token};

/// Handles nothing; the idle test only needs a loop with a source.
struct Idle;

impl Handler for Idle {
    fn io(&mut self, _: &mut Reactor, _: Event) {}
    fn timer(&mut self, _: &mut Reactor, _: Expired) {}
}

/// The loop thread's on-CPU time in nanoseconds (Linux scheduler stats).
fn thread_cpu_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    stat.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn an_idle_loop_sleeps() {
    bounded(Duration::from_secs(20), || {
        let mut lp = EventLoop::<Idle>::new().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        lp.reactor().add(&listener, Token(1), Interest::READABLE).unwrap();
        let handle = lp.handle();
        thread::spawn(move || {
            thread::sleep(Duration::from_secs(2));
            handle.post(|_, reactor| reactor.stop()).unwrap();
        });
        let before = thread_cpu_ns();
        let mut turns = 0;
        let mut rec = Idle;
        while !lp.reactor().is_stopping() {
            lp.run_once(&mut rec, None).unwrap();
            turns += 1;
        }
        let cpu = Duration::from_nanos(thread_cpu_ns() - before);
        assert_eq!(turns, 1, "the loop woke without a reason");
        assert!(cpu < Duration::from_millis(10), "idle loop used {cpu:?} of CPU in 2 s");
    });
}

/// A native echo handler on the reactor alone, to check that sockets are not
/// leaked (counted through /proc, hence Linux only).
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
                        reactor.add(&stream, Token(self.next), Interest::READABLE).unwrap();
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

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn no_descriptor_leaks_after_10_000_connect_close_cycles() {
    bounded(Duration::from_secs(120), || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let mut lp = EventLoop::<NativeEcho>::new().unwrap();
        lp.reactor().add(&listener, Token(0), Interest::READABLE).unwrap();
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
        let mut echo = NativeEcho { listener, conns: HashMap::new(), next: 0, buf: vec![0; 4096] };
        let deadline = Instant::now() + Duration::from_secs(100);
        // The last peer's close may still be in flight when the client
        // finishes: run until every connection is gone.
        while !(client.is_finished() && echo.conns.is_empty()) {
            lp.run_once(&mut echo, Some(Duration::from_millis(100))).unwrap();
            assert!(Instant::now() < deadline, "connections never closed");
        }
        client.join().unwrap();
        assert_eq!(open_fds(), baseline, "descriptors leaked");
    });
}
