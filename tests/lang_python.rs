//! The Python echo guest (`examples/python-echo`, built by its `build.sh` with
//! componentize-py from PyPI) on the real host: a component that carries a
//! whole CPython interpreter fits the `wasmloop:handler` world, is accepted
//! by the host, and passes the same echo conformance checks as the Rust echo
//! guest — messages of many shapes round-trip byte for byte, 10 MiB come back
//! exactly under backpressure (short writes, paused reading, `on-writable`),
//! and 100 concurrent connections each get their own bytes back.
//!
//! The generous watchdog covers the debug host compiling the ~18 MB
//! component the first time (later hosts load it from the compiled cache).

use std::time::Duration;

use crate::support::{Host, bounded, conformance, example_guest};

const LIMIT: Duration = Duration::from_secs(900);

#[test]
fn python_echo_round_trips() {
    bounded(LIMIT, || {
        let host = Host::command_for(example_guest("python-echo")).spawn();
        conformance::echo_round_trips(&host);
        host.assert_no_errors();
    });
}

#[test]
fn python_echo_ten_mib() {
    bounded(LIMIT, || {
        let host = Host::command_for(example_guest("python-echo")).spawn();
        conformance::echo_ten_mib(&host);
        host.assert_no_errors();
    });
}

#[test]
fn python_echo_hundred_connections() {
    bounded(LIMIT, || {
        let host = Host::command_for(example_guest("python-echo")).spawn();
        conformance::echo_hundred_connections(&host);
        host.assert_no_errors();
    });
}
