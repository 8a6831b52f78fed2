//! The host on a foreign loop (`--event-loop calloop`: our reactor runs on
//! a calloop loop through its `LoopOps` backend) passes the same echo, chat
//! and ticker checks as on the native reactor, and shuts down the same way;
//! `examples/calloop-host` serves a guest on its own calloop loop, detaches
//! it and goes on alone.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{
    self, Host, HostCommand, IO_TIMEOUT, Signal, alone, bounded, conformance, describe, run_bounded, workspace_root,
};

const ON_CALLOOP: [&str; 2] = ["--event-loop", "calloop"];

fn on_calloop(command: HostCommand) -> Host {
    command.args(ON_CALLOOP).spawn()
}

#[test]
fn echo_each_message_comes_back_byte_for_byte() {
    bounded(Duration::from_secs(90), || {
        let host = on_calloop(Host::command("echo"));
        conformance::echo_round_trips(&host);
        host.assert_no_errors();
    });
}

#[test]
fn echo_ten_mib_come_back_exactly_while_writing_and_reading_concurrently() {
    bounded(Duration::from_secs(120), || {
        let host = on_calloop(Host::command("echo"));
        conformance::echo_ten_mib(&host);
        host.assert_no_errors();
    });
}

#[test]
fn echo_a_hundred_connections_each_get_their_own_bytes_back() {
    bounded(Duration::from_secs(120), || {
        let host = on_calloop(Host::command("echo"));
        conformance::echo_hundred_connections(&host);
        host.assert_no_errors();
    });
}

#[test]
fn chat_each_line_reaches_every_other_client_but_not_its_sender() {
    bounded(Duration::from_secs(90), || {
        let host = on_calloop(Host::command("chat"));
        conformance::chat_broadcast(&host);
        host.assert_no_errors();
    });
}

#[test]
fn ticker_ticks_are_never_early_and_at_most_20_ms_late() {
    let _alone = alone();
    bounded(Duration::from_secs(90), || {
        let host = on_calloop(conformance::ticker_command());
        conformance::ticks_on_schedule(&host);
        host.assert_no_errors();
    });
}

#[test]
fn sigterm_with_no_connections_exits_0_promptly() {
    bounded(Duration::from_secs(60), || {
        let mut host = on_calloop(Host::command("echo"));
        let sent = Instant::now();
        host.signal(Signal::TERM);
        let status = host.wait_exit(Duration::from_secs(10));
        assert!(status.success(), "host ended with {}", describe(status));
        assert!(sent.elapsed() < Duration::from_secs(3), "exit took {:?}", sent.elapsed());
    });
}

#[test]
fn two_workers_on_calloop_both_serve() {
    bounded(Duration::from_secs(90), || {
        let host = on_calloop(Host::command("echo").args(["--workers", "2"]));
        conformance::echo_round_trips(&host);
        conformance::echo_hundred_connections(&host);
        host.assert_no_errors();
    });
}

#[test]
fn the_calloop_example_serves_a_guest_then_detaches_it_and_its_own_timer_goes_on() {
    bounded(Duration::from_secs(600), || {
        let guest = support::guest("echo");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(&cargo);
        build.current_dir(workspace_root()).args(["build", "-p", "calloop-host"]);
        let out = run_bounded(build, Duration::from_secs(500)).expect("cargo runs");
        assert!(out.status.success(), "building calloop-host failed:\n{}", out.stderr);
        let target =
            std::env::var_os("CARGO_TARGET_DIR").map_or(workspace_root().join("target"), |d| workspace_root().join(d));

        let mut app = Command::new(target.join("debug/calloop-host"))
            .arg(&guest)
            .args(["--serve-ms", "2000", "--tick-ms", "100", "--ticks-after", "3"])
            .env("XDG_CACHE_HOME", support::shared_cache_home())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start calloop-host");
        let mut lines = BufReader::new(app.stderr.take().unwrap()).lines().map(|l| l.expect("stderr"));
        let first = lines.next().expect("a line");
        let guest_addr: SocketAddr = first
            .strip_prefix("guest listening on ")
            .unwrap_or_else(|| panic!("expected `guest listening on ...`, got {first:?}"))
            .parse()
            .expect("an address");

        // The guest echoes while attached.
        let mut echo = TcpStream::connect(guest_addr).unwrap();
        echo.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        for i in 0..20 {
            let message = format!("message {i}\n");
            echo.write_all(message.as_bytes()).unwrap();
            let mut back = vec![0; message.len()];
            echo.read_exact(&mut back).unwrap();
            assert_eq!(back, message.as_bytes());
        }

        // The app's own ticks go on after the detach, then it ends cleanly.
        let rest: Vec<String> = lines.collect();
        let detached = rest.iter().position(|l| l == "wasmloop detached").expect("a `wasmloop detached` line");
        let ticks_after = rest[detached..].iter().filter(|l| l.starts_with("app tick ")).count();
        assert_eq!(ticks_after, 3, "ticks after the detach: {rest:?}");
        assert_eq!(rest.last().map(String::as_str), Some("app done"), "{rest:?}");
        let status = app.wait().unwrap();
        assert!(status.success(), "calloop-host ended with {}", describe(status));
    });
}
