//! Native Rust handlers beside wasm guests, on one loop, in this process
//! (`wasmloop::embed::Host`): both answer over TCP, a native handler's
//! timers fire, its `Cx` refuses what a guest's imports refuse, and its
//! panic is a fault like a trap: its connections are reset, the wasm guest
//! keeps serving, and a fresh handler takes over after the backoff.

use std::cell::Cell;
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::support::{self, IO_TIMEOUT, LineReader, bounded, configure};
use wasmloop::config::{FaultPolicy, Policy, ReloadMode};
use wasmloop::embed::{Host, HostHandle};
use wasmloop::native::{self, CloseReason, Cx, ErrorCode, Handler};
use wasmloop::server::{GuestSpec, ListenerSpec, NativeSpec, Protocol, bind};

/// A line protocol: each line comes back upper-cased, except commands:
/// `timer` (answers `timer fired` 20 ms later), `generation` (which handler
/// from the factory this is), `refusals` (what `Cx` says to a forged handle
/// and a zero interval), `panic`.
struct Shout {
    generation: u32,
    lines: HashMap<u64, Vec<u8>>,
    /// Which connection each pending timer answers.
    timers: HashMap<u64, u64>,
}

impl Handler for Shout {
    fn on_accept(&mut self, _cx: &mut Cx<'_>, _listener: u64, conn: u64) {
        self.lines.insert(conn, Vec::new());
    }

    fn on_data(&mut self, cx: &mut Cx<'_>, conn: u64, data: &[u8]) {
        let buf = self.lines.entry(conn).or_default();
        buf.extend_from_slice(data);
        let Some(end) = buf.iter().rposition(|&b| b == b'\n') else { return };
        let complete: Vec<u8> = buf.drain(..=end).collect();
        for line in complete.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let answer = match line {
                b"timer" => {
                    let timer = cx.set_timeout(Duration::from_millis(20)).expect("a timer");
                    self.timers.insert(timer, conn);
                    continue;
                }
                b"generation" => format!("generation {}", self.generation).into_bytes(),
                b"refusals" => {
                    let forged = cx.write(conn ^ (1 << 40), b"x");
                    let zero = cx.set_interval(Duration::ZERO);
                    let cancelled = cx.cancel_timer(12345);
                    format!("{forged:?} {zero:?} {cancelled:?}").into_bytes()
                }
                b"panic" => panic!("asked to panic"),
                other => other.to_ascii_uppercase(),
            };
            send_line(cx, conn, &answer);
        }
    }

    fn on_timer(&mut self, cx: &mut Cx<'_>, timer: u64) {
        if let Some(conn) = self.timers.remove(&timer) {
            send_line(cx, conn, b"timer fired");
        }
    }

    fn on_close(&mut self, _cx: &mut Cx<'_>, conn: u64, _reason: &CloseReason) {
        self.lines.remove(&conn);
    }
}

/// Lines are short: all of one is taken, or the connection is gone.
fn send_line(cx: &mut Cx<'_>, conn: u64, line: &[u8]) {
    let mut bytes = line.to_vec();
    bytes.push(b'\n');
    if cx.write(conn, &bytes) != Ok(bytes.len()) {
        let _ = cx.abort(conn);
    }
}

/// A host on its own thread serving the echo guest and [`Shout`].
struct Running {
    wasm: SocketAddr,
    native: SocketAddr,
    handle: HostHandle,
    thread: JoinHandle<()>,
}

impl Running {
    fn start() -> Running {
        let echo = support::guest("echo");
        let (tx, rx) = mpsc::channel();
        // Stores are not `Send`: the host is made on the thread that runs it.
        let thread = thread::spawn(move || {
            let policy = Policy { on_fault: FaultPolicy::Restart, reload: ReloadMode::Drain };
            let mut host = Host::new().expect("a host");
            let module = host.load(&echo).expect("the echo guest loads");
            let wasm = bind("127.0.0.1:0".parse().unwrap()).expect("bind");
            let native = bind("127.0.0.1:0".parse().unwrap()).expect("bind");
            let addresses = (wasm.local_addr().unwrap(), native.local_addr().unwrap());
            host.add_guest(GuestSpec {
                name: "echo".into(),
                module,
                listeners: vec![ListenerSpec { socket: wasm, protocol: Protocol::Tcp }],
                config: String::new(),
                limits: Default::default(),
                grants: Default::default(),
                policy,
            })
            .expect("the echo guest starts");
            let made = Rc::new(Cell::new(0));
            host.add_native(NativeSpec {
                name: "shout".into(),
                listeners: vec![native],
                limits: Default::default(),
                policy,
                factory: native::factory(move || {
                    made.set(made.get() + 1);
                    Shout { generation: made.get(), lines: HashMap::new(), timers: HashMap::new() }
                }),
            })
            .expect("the native handler starts");
            tx.send((addresses, host.handle())).unwrap();
            host.run().expect("the loop runs until stopped");
        });
        let ((wasm, native), handle) = rx.recv().expect("the host thread failed to start the host");
        Running { wasm, native, handle, thread }
    }

    /// Stops the loop from this thread and waits for it.
    fn stop(self) {
        assert!(self.handle.stop(), "the loop is gone before it was stopped");
        self.thread.join().expect("the host thread panicked");
    }
}

fn connect(addr: SocketAddr) -> LineReader {
    let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    configure(&stream);
    LineReader::new(stream)
}

fn ask(conn: &mut LineReader, line: &str) -> String {
    conn.send(line);
    conn.line()
}

/// Waits (bounded) for the host to close `conn`: end-of-stream or a reset.
fn assert_closed(conn: &mut LineReader, what: &str) {
    let mut stream = conn.stream().try_clone().unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Ok(n) => panic!("{what}: expected a close, got {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(e) => panic!("{what}: expected a close, got {e}"),
    }
}

/// One line asked on a new connection; `None` if the host closes it first.
fn try_ask(addr: SocketAddr, line: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    configure(&stream);
    // Refused connections are closed at once: the write may fail.
    let _ = stream.write_all(format!("{line}\n").as_bytes());
    let mut answer = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("asking {addr} failed: {e}"),
        }
        if let Some(end) = answer.iter().position(|&b| b == b'\n') {
            return Some(String::from_utf8_lossy(&answer[..end]).into_owned());
        }
    }
}

#[test]
fn a_native_handler_and_a_wasm_guest_serve_side_by_side() {
    bounded(Duration::from_secs(300), || {
        let host = Running::start();
        let mut wasm = connect(host.wasm);
        let mut native = connect(host.native);
        for i in 0..20 {
            assert_eq!(ask(&mut wasm, &format!("hello {i}")), format!("hello {i}"));
            assert_eq!(ask(&mut native, &format!("hello {i}")), format!("HELLO {i}"));
        }
        // Input split anywhere still makes whole lines.
        native.stream().write_all(b"spl").unwrap();
        native.stream().write_all(b"it\n").unwrap();
        assert_eq!(native.line(), "SPLIT");
        host.stop();
    });
}

#[test]
fn a_native_handlers_timer_fires_after_its_delay() {
    bounded(Duration::from_secs(300), || {
        let host = Running::start();
        let mut native = connect(host.native);
        let asked = Instant::now();
        assert_eq!(ask(&mut native, "timer"), "timer fired");
        assert!(asked.elapsed() >= Duration::from_millis(20), "fired early, after {:?}", asked.elapsed());
        // Meanwhile and afterwards, the connection serves as before.
        assert_eq!(ask(&mut native, "after"), "AFTER");
        host.stop();
    });
}

#[test]
fn a_native_handlers_context_refuses_what_a_guests_imports_refuse() {
    bounded(Duration::from_secs(300), || {
        let host = Running::start();
        let mut native = connect(host.native);
        let expected = format!(
            "{:?} {:?} {:?}",
            Err::<usize, _>(ErrorCode::InvalidHandle),
            Err::<u64, _>(ErrorCode::InvalidArgument),
            Err::<(), _>(ErrorCode::InvalidHandle)
        );
        assert_eq!(ask(&mut native, "refusals"), expected);
        host.stop();
    });
}

#[test]
fn a_panicking_native_handler_is_contained_and_restarted() {
    bounded(Duration::from_secs(300), || {
        let host = Running::start();
        let mut wasm = connect(host.wasm);
        let mut bystander = connect(host.native);
        assert_eq!(ask(&mut bystander, "generation"), "generation 1");
        assert_eq!(ask(&mut wasm, "before"), "before");

        let mut culprit = connect(host.native);
        assert_eq!(ask(&mut culprit, "hi"), "HI");
        let panicked = Instant::now();
        culprit.send("panic");
        // The fault resets every connection of the handler...
        assert_closed(&mut culprit, "the connection that panicked");
        assert_closed(&mut bystander, "another connection of the handler");
        // ...and only its: the wasm guest is untouched.
        assert_eq!(ask(&mut wasm, "after"), "after");

        // A fresh handler from the factory takes over after the 100 ms
        // backoff; until then connections are accepted and closed.
        let deadline = Instant::now() + IO_TIMEOUT;
        let generation = loop {
            if let Some(line) = try_ask(host.native, "generation") {
                break line;
            }
            assert!(Instant::now() < deadline, "the native handler did not restart within {IO_TIMEOUT:?}");
            // Polling, not waiting for the backoff: it is the host's to keep.
            thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(generation, "generation 2");
        assert!(panicked.elapsed() >= Duration::from_millis(100), "restarted before the backoff");
        assert_eq!(ask(&mut wasm, "still"), "still");
        host.stop();
    });
}
