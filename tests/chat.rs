//! The chat guest on the real host: each line a client sends reaches every
//! other client, in order; a slow reader neither stalls the others nor loses
//! lines while its backlog fits the host's buffer, and one that falls further
//! behind is disconnected.

use std::io::{ErrorKind, Read};
use std::time::{Duration, Instant};

use crate::support::{self, Host, bounded};

use crate::support::conformance::chat_join as join;

#[test]
fn each_line_reaches_every_other_client_but_not_its_sender() {
    bounded(Duration::from_secs(90), || {
        let host = Host::start("chat");
        support::conformance::chat_broadcast(&host);
        host.assert_no_errors();
    });
}

#[test]
fn a_slow_reader_does_not_stall_the_others_and_later_gets_every_line_in_order() {
    const EXCHANGES: usize = 2000;
    bounded(Duration::from_secs(120), || {
        let host = Host::command("chat").args(["--max-output", &(4 << 20).to_string()]).spawn();
        let mut clients = join(&host, 3);
        let mut slow = clients.remove(0);
        let (mut a, mut b) = (clients.remove(0), clients.remove(0));

        // A and B talk (ping-pong, so the order everyone sees is fixed)
        // while S reads nothing. What S is owed, ~1 MiB, stays well below
        // the 4 MiB buffer limit.
        let pad = "x".repeat(230);
        let line = |who: &str, i: usize| format!("{who} {i:05} {pad}");
        let start = Instant::now();
        let mut slowest = Duration::ZERO;
        for i in 0..EXCHANGES {
            let sent = Instant::now();
            a.send(&line("a", i));
            assert_eq!(b.line(), line("a", i), "what B received");
            b.send(&line("b", i));
            assert_eq!(a.line(), line("b", i), "what A received");
            slowest = slowest.max(sent.elapsed());
        }
        let took = start.elapsed();
        assert!(slowest < Duration::from_secs(2), "an A-B round trip took {slowest:?} while S was not reading");
        assert!(took < Duration::from_secs(60), "{EXCHANGES} A-B round trips took {took:?} while S was not reading");
        eprintln!("{EXCHANGES} round trips in {took:?}, slowest {slowest:?}");

        // Now S reads: everything, in order, nothing missing.
        for i in 0..EXCHANGES {
            assert_eq!(slow.line(), line("a", i), "line {} for S", 2 * i);
            assert_eq!(slow.line(), line("b", i), "line {} for S", 2 * i + 1);
        }
        assert!(!host.logs().contains("cannot keep up"), "a client was dropped; log:\n{}", host.logs());
        host.assert_no_errors();
    });
}

#[test]
fn a_reader_that_falls_behind_by_more_than_the_buffer_is_disconnected_and_the_rest_go_on() {
    bounded(Duration::from_secs(120), || {
        let mut host = Host::command("chat").args(["--max-output", "65536"]).spawn();
        let mut clients = join(&host, 3);
        let slow = clients.remove(0);
        let (mut a, mut b) = (clients.remove(0), clients.remove(0));

        // A sends big lines until the host gives up on S (whose kernel
        // buffers fill first, then the 64 KiB in the host). B reads each line
        // before A sends the next, so B itself never falls behind.
        let line = |i: usize| format!("{i:06} {}", "y".repeat(32 * 1024));
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut sent = 0;
        while !host.logs().contains("cannot keep up") {
            assert!(
                Instant::now() < deadline && sent < 4096,
                "the host still had not dropped the non-reading client after {sent} lines of 32 KiB"
            );
            a.send(&line(sent));
            // The others are unaffected: B gets every line, in order.
            assert_eq!(b.line(), line(sent), "what B received");
            sent += 1;
        }
        // And they go on talking after the drop.
        b.send("still here");
        assert_eq!(a.line(), "still here", "what A received");

        // S can read what reached its socket before the host dropped it: a
        // prefix of the lines, in order, without a gap (the host discards the
        // rest instead). Then the connection ends.
        let mut stream = slow.stream().try_clone().unwrap();
        let mut received = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        let ended = loop {
            match stream.read(&mut buf) {
                Ok(0) => break "end-of-stream",
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break "reset",
                Err(e) => panic!("S's connection neither ended nor was reset: {e}"),
            }
        };
        let expected: Vec<u8> = (0..sent).flat_map(|i| (line(i) + "\n").into_bytes()).collect();
        assert!(received.len() < expected.len(), "S received all {} bytes, yet was dropped", received.len());
        support::assert_same_bytes(&received, &expected[..received.len()], "what S received before it was dropped");
        eprintln!("S's connection ended ({ended}) after {} of {} bytes", received.len(), expected.len());
        drop(slow);
        host.assert_running();
        host.assert_no_errors();
    });
}
