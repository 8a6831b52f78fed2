//! The C example guest (`examples/c-echo`: clang 19, wasi-libc and
//! `wit-bindgen c` bindings wrapped by `wasmloop.h`, built by its
//! `build.sh`) on the real host. The host loading it proves the component
//! fits world `minimal`; the checks prove it behaves like the Rust echo
//! guest: messages of every shape come back byte for byte, 10 MiB survive
//! backpressure (short writes, paused reading), and 100 connections at once
//! each get their own bytes back, all without the host logging an error.

use std::time::Duration;

use crate::support::{Host, bounded, conformance, example_guest};

#[test]
fn c_echo_round_trips() {
    bounded(Duration::from_secs(600), || {
        let host = Host::command_for(example_guest("c-echo")).spawn();
        conformance::echo_round_trips(&host);
        host.assert_no_errors();
    });
}

#[test]
fn c_echo_ten_mib() {
    bounded(Duration::from_secs(600), || {
        let host = Host::command_for(example_guest("c-echo")).spawn();
        conformance::echo_ten_mib(&host);
        host.assert_no_errors();
    });
}

#[test]
fn c_echo_hundred_connections() {
    bounded(Duration::from_secs(600), || {
        let host = Host::command_for(example_guest("c-echo")).spawn();
        conformance::echo_hundred_connections(&host);
        host.assert_no_errors();
    });
}
