//! The echo guest on the real host: every byte a client sends comes back, in
//! order, whatever the size, the number of clients, or how the client
//! reads, half-closes or resets.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{self, Host, Writer, alone, assert_same_bytes, bounded, random_bytes, read_exactly};

const MIB: usize = 1 << 20;

#[test]
fn each_message_comes_back_byte_for_byte() {
    bounded(Duration::from_secs(90), || {
        let host = Host::start("echo");
        support::conformance::echo_round_trips(&host);
        host.assert_no_errors();
    });
}

#[test]
fn ten_mib_of_random_bytes_come_back_exactly_while_writing_and_reading_concurrently() {
    bounded(Duration::from_secs(120), || {
        let host = Host::start("echo");
        support::conformance::echo_ten_mib(&host);
        host.assert_no_errors();
    });
}

#[test]
fn a_thousand_connections_open_at_once_each_get_their_own_bytes_back() {
    const CONNECTIONS: usize = 1000;
    const WORKERS: usize = 8;
    const PER_WORKER: usize = CONNECTIONS / WORKERS;

    bounded(Duration::from_secs(180), || {
        support::raise_fd_limit(4 * CONNECTIONS as u64);
        let host = Host::start("echo");
        let addr = host.addr();
        let baseline_fds = host.fd_count();
        // Phases, separated by barriers (workers + this thread):
        // 1. every worker opens its connections;
        // 2. every connection sends its own message and reads it back;
        // 3. this thread checks the host holds all of them at once;
        // 4. only then does anyone close.
        let barrier = Arc::new(Barrier::new(WORKERS + 1));
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let barrier = barrier.clone();
                thread::spawn(move || -> Result<(), String> {
                    // Errors are carried to the end instead of panicking, so
                    // every worker still meets every barrier.
                    let opened: Result<Vec<TcpStream>, String> = (0..PER_WORKER)
                        .map(|i| {
                            let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(30))
                                .map_err(|e| format!("worker {w} connection {i}: connect: {e}"))?;
                            support::configure(&stream);
                            Ok(stream)
                        })
                        .collect();
                    barrier.wait();
                    let echoed = opened.and_then(|mut streams| {
                        let message = |i: usize| {
                            format!("connection {:04} of {CONNECTIONS} says hi\n", w * PER_WORKER + i).into_bytes()
                        };
                        for (i, s) in streams.iter_mut().enumerate() {
                            s.write_all(&message(i)).map_err(|e| format!("worker {w} connection {i}: write: {e}"))?;
                        }
                        for (i, s) in streams.iter_mut().enumerate() {
                            let want = message(i);
                            let mut got = vec![0; want.len()];
                            s.read_exact(&mut got).map_err(|e| format!("worker {w} connection {i}: read: {e}"))?;
                            if got != want {
                                return Err(format!(
                                    "connection {} got {:?}, expected {:?}",
                                    w * PER_WORKER + i,
                                    String::from_utf8_lossy(&got),
                                    String::from_utf8_lossy(&want)
                                ));
                            }
                        }
                        Ok(streams)
                    });
                    barrier.wait(); // all echoed (or failed)
                    barrier.wait(); // the host's descriptors were counted
                    echoed.map(drop)
                })
            })
            .collect();
        barrier.wait();
        barrier.wait();
        let fds_with_all_open = host.fd_count();
        barrier.wait();
        let errors: Vec<String> =
            workers.into_iter().filter_map(|w| w.join().expect("worker panicked").err()).collect();
        assert!(
            errors.is_empty(),
            "{} of {CONNECTIONS} connections failed, e.g.:\n{}",
            errors.len(),
            errors.join("\n")
        );
        assert!(
            fds_with_all_open >= baseline_fds + CONNECTIONS,
            "while all {CONNECTIONS} connections were open the host had {fds_with_all_open} \
             descriptors, {baseline_fds} before: not all were held at once"
        );
        host.assert_no_errors();
    });
}

#[test]
fn after_the_peer_half_closes_everything_comes_back_then_end_of_stream() {
    bounded(Duration::from_secs(120), || {
        // A small output buffer, so the echo is still holding bytes back
        // (reading paused) when the client's FIN arrives.
        let host = Host::command("echo").args(["--max-output", "65536"]).spawn();
        let mut client = host.connect();
        let data = Arc::new(random_bytes(4 * MIB, 0x5eed_0002));
        let writer = Writer::start(&client, data.clone(), true);
        // Do not read until the writer is done or stuck behind backpressure.
        writer.wait_until_stalled(Duration::from_millis(300), Duration::from_secs(60));
        let back = match support::read_to_eof(&mut client) {
            Ok(back) => back,
            Err((got, e)) => {
                let ours = client.local_addr().unwrap().port();
                let theirs = host.addr().port();
                panic!(
                    "no end-of-stream: {e} after {} of {} bytes back (a correct prefix: {}); \
                     the writer wrote {} bytes (finished: {}); client socket {:?}, host socket {:?}",
                    got.len(),
                    data.len(),
                    data.starts_with(&got),
                    writer.written(),
                    writer.is_finished(),
                    support::tcp_socket(ours, theirs),
                    support::tcp_socket(theirs, ours),
                );
            }
        };
        writer.join();
        assert_same_bytes(&back, &data, "bytes echoed before end-of-stream");
        host.assert_no_errors();
    });
}

/// A client socket whose receive buffer is tiny, set before connecting so
/// the advertised window stays small: what the echo sends backs up in the
/// host sooner.
fn connect_with_tiny_receive_buffer(host: &Host) -> TcpStream {
    use rustix::net::{AddressFamily, SocketType, sockopt};
    let fd = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    sockopt::set_socket_recv_buffer_size(&fd, 4096).unwrap();
    rustix::net::connect(&fd, &host.addr()).unwrap();
    let stream = TcpStream::from(fd);
    support::configure(&stream);
    stream
}

#[test]
fn a_half_close_that_arrives_while_the_echo_is_paused_still_ends_the_stream() {
    bounded(Duration::from_secs(90), || {
        let host = Host::command("echo").args(["--max-output", "65536"]).spawn();
        let mut client = connect_with_tiny_receive_buffer(&host);
        let ours = client.local_addr().unwrap().port();
        let theirs = host.addr().port();
        let host_socket = || support::tcp_socket(theirs, ours);

        // Write until the echo has paused reading: bytes sit unread in the
        // host's socket and stay there.
        let data = random_bytes(8 * MIB, 0x5eed_0005);
        let paused_after = |client: &mut TcpStream| {
            for (i, chunk) in data.chunks(16 * 1024).enumerate() {
                client.write_all(chunk).unwrap();
                // Unread bytes that stay put for 50 ms: the host stopped
                // reading.
                let mut unread = host_socket().map_or(0, |s| s.recv_queue);
                let mut steady = 0;
                while unread > 0 && steady < 5 {
                    thread::sleep(Duration::from_millis(10));
                    let now = host_socket().map_or(0, |s| s.recv_queue);
                    steady = if now == unread { steady + 1 } else { 0 };
                    unread = now;
                }
                if steady == 5 {
                    return Some((i + 1) * 16 * 1024);
                }
            }
            None
        };
        let written = paused_after(&mut client)
            .unwrap_or_else(|| panic!("the echo never paused reading while {} bytes went unread", data.len()));
        let data = &data[..written];
        client.shutdown(Shutdown::Write).unwrap();
        // The FIN reaches the host's socket behind the unread bytes.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let socket = host_socket();
            if socket.is_some_and(|s| s.state == "CLOSE_WAIT" && s.recv_queue > 0) {
                break;
            }
            assert!(Instant::now() < deadline, "the FIN did not arrive behind unread bytes: host socket {socket:?}");
            thread::sleep(Duration::from_millis(10));
        }
        // Now read: the echo drains, resumes, reads the rest, sees the EOF
        // and closes, promptly.
        client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let back = support::read_to_eof(&mut client).unwrap_or_else(|(got, e)| {
            panic!(
                "no end-of-stream: {e} after {} of {written} bytes back (a correct prefix: {}); \
                 host socket {:?}",
                got.len(),
                data.starts_with(&got),
                host_socket()
            )
        });
        assert_same_bytes(&back, data, "bytes echoed before end-of-stream");
        host.assert_no_errors();
    });
}

#[test]
fn a_peer_reset_with_data_in_flight_leaves_the_host_serving_and_quiet() {
    let _alone = alone();
    const RESETS: usize = 20;
    bounded(Duration::from_secs(120), || {
        let mut host = Host::start("echo");
        let baseline_fds = host.fd_count();
        let lines_before = host.log_lines().len();
        let data = random_bytes(256 * 1024, 0x5eed_0003);
        for _ in 0..RESETS {
            let mut client = host.connect();
            client.write_all(&data).unwrap();
            // The echo has started: bytes are flowing both ways.
            read_exactly(&mut client, 1024);
            // Linger 0: close sends RST and discards what is unread/unsent.
            rustix::net::sockopt::set_socket_linger(&client, Some(Duration::ZERO)).unwrap();
            drop(client);
        }
        host.assert_running();

        // A new connection is served.
        let mut client = host.connect();
        client.write_all(b"still there?").unwrap();
        assert_eq!(read_exactly(&mut client, 12), b"still there?");
        drop(client);

        // The reset connections are released (poll: the host learns of the
        // last close asynchronously).
        let deadline = Instant::now() + Duration::from_secs(10);
        while host.fd_count() != baseline_fds && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(host.fd_count(), baseline_fds, "descriptors after {RESETS} reset connections");

        // No storm: at most a line or two per reset, and no busy loop.
        let new_lines = host.log_lines().len() - lines_before;
        assert!(new_lines <= 2 * RESETS, "{new_lines} log lines for {RESETS} resets; log:\n{}", host.logs());
        let delta = host.activity_over(Duration::from_millis(500));
        assert!(
            delta.run_ns < 50_000_000,
            "host used {:.1} ms of CPU in 500 ms after the resets:\n{}",
            delta.run_ns as f64 / 1e6,
            delta.detail
        );
        host.assert_no_errors();
    });
}

#[test]
fn a_slow_consumer_gets_every_byte_once_it_reads() {
    bounded(Duration::from_secs(120), || {
        let host = Host::start("echo");
        let mut client = host.connect();
        let data = Arc::new(random_bytes(8 * MIB, 0x5eed_0004));
        let writer = Writer::start(&client, data.clone(), false);
        // Not reading: the host's buffer fills, the echo pauses reading and
        // TCP flow control stops the writer.
        let written = writer.wait_until_stalled(Duration::from_millis(300), Duration::from_secs(60));
        eprintln!("the writer stopped after {written} of {} bytes without a reader", data.len());
        let back = read_exactly(&mut client, data.len());
        writer.join();
        assert_same_bytes(&back, &data, "8 MiB echoed to a slow consumer");
        client.shutdown(Shutdown::Both).ok();
        host.assert_no_errors();
    });
}
