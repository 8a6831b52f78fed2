//! The host's data path allocates nothing per event in steady state: after a
//! warm-up, echoing thousands more messages through the echo guest adds no
//! heap allocations in the host process (the guest's own allocations live in
//! its linear memory, not on our heap).
//!
//! This test embeds the server in the test process (same code as `host run`)
//! so an instrumented global allocator (stats_alloc) sees every allocation
//! the loop makes. That allocator is the whole test binary's (it costs an
//! atomic add per allocation elsewhere), and it counts every thread's
//! allocations: so the test runs in a process of its own
//! ([`alone_in_process`]), where no other test allocates beside it.

use std::alloc::System;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use crate::support::{self, alone_in_process};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use wasmloop::config::{FaultPolicy, Policy, ReloadMode};
use wasmloop::limits::Limits;
use wasmloop::runtime::Runtime;
use wasmloop::server::{GuestSpec, ListenerSpec, Protocol, Server, ServerConfig, bind};
use wasmloop_reactor::EventLoop;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn round_trips(stream: &mut TcpStream, n: usize) {
    let message = [7u8; 64];
    let mut back = [0u8; 64];
    for _ in 0..n {
        stream.write_all(&message).unwrap();
        stream.read_exact(&mut back).unwrap();
        assert_eq!(back, message);
    }
}

#[test]
fn echoing_allocates_nothing_per_message_in_steady_state() {
    // Built in this process, where the other tests share the build; the
    // child's `cargo build` then finds nothing to do.
    let echo = support::guest("echo");
    if !alone_in_process("allocations::echoing_allocates_nothing_per_message_in_steady_state", Duration::from_secs(300))
    {
        return;
    }
    let (addr_tx, addr_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let server_thread = thread::spawn(move || {
        let runtime = Runtime::new().unwrap();
        let module = runtime.load(&echo).unwrap();
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        addr_tx.send(listener.local_addr().unwrap()).unwrap();
        let mut event_loop = EventLoop::new().unwrap();
        let mut server = Server::new(runtime, ServerConfig::default());
        let spec = GuestSpec {
            name: "echo".into(),
            module,
            listeners: vec![ListenerSpec { socket: listener, protocol: Protocol::Tcp }],
            config: String::new(),
            limits: Limits::DEFAULT,
            grants: Default::default(),
            policy: Policy { on_fault: FaultPolicy::Stop, reload: ReloadMode::Drain },
        };
        server.add_guest(event_loop.reactor(), spec).unwrap();
        wasmloop::runtime::on_loop_thread(|| {
            while done_rx.try_recv().is_err() {
                event_loop.run_once(&mut server, Some(Duration::from_millis(50))).unwrap();
            }
        })
        .unwrap();
    });
    let addr = addr_rx.recv_timeout(Duration::from_secs(60)).expect("server did not start");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.set_nodelay(true).unwrap();

    round_trips(&mut stream, 2_000);
    let region = Region::new(GLOBAL);
    round_trips(&mut stream, 10_000);
    let change = region.change();
    let during = change.allocations + change.reallocations;

    done_tx.send(()).unwrap();
    drop(stream);
    server_thread.join().unwrap();
    // A handful may come from the loop's own bookkeeping growing once; one
    // per message would be 10,000.
    assert!(during < 10, "{during} heap allocations for 10,000 echoed messages");
}
