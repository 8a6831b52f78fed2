//! HTTP/1.1 in the host (`--listen-http`) with real clients: curl for
//! keep-alive, chunked upload, `Expect: 100-continue` and HEAD against the
//! `http-static-kv` guest, and raw sockets for pipelining and every kind of
//! malformed input, each with the exact status and the connection closed.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{self, Host, IO_TIMEOUT, alone, bounded, run_bounded};

fn kv() -> Host {
    Host::command("http_static_kv").listen_flag("--listen-http").spawn()
}

/// One response as read off the wire.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A client connection with a read buffer, for raw HTTP.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        Client { stream, buf: Vec::new() }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Reads more into the buffer; false at end of stream.
    fn fill(&mut self) -> bool {
        let mut chunk = [0; 64 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => false,
            Err(e) => panic!("reading a response: {e}"),
        }
    }

    fn line(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8(self.buf[..end].to_vec()).expect("UTF-8 line");
                self.buf.drain(..end + 2);
                return line;
            }
            assert!(self.fill(), "connection closed in the middle of a line: {:?}", String::from_utf8_lossy(&self.buf));
        }
    }

    fn exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill(), "connection closed with {} of {n} body bytes", self.buf.len());
        }
        self.buf.drain(..n).collect()
    }

    /// One response; `head` for a response to HEAD (no body follows).
    fn response(&mut self, head: bool) -> Response {
        let status_line = self.line();
        let mut parts = status_line.splitn(3, ' ');
        assert_eq!(parts.next(), Some("HTTP/1.1"), "status line {status_line:?}");
        let status = parts.next().and_then(|s| s.parse().ok()).expect("status code");
        let mut headers = Vec::new();
        loop {
            let line = self.line();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("header line");
            headers.push((name.to_string(), value.trim().to_string()));
        }
        let mut response = Response { status, headers, body: Vec::new() };
        if head || status == 100 || status == 204 || status == 304 {
            return response;
        }
        if let Some(len) = response.header("content-length") {
            response.body = self.exact(len.parse().expect("content-length"));
        } else if response.header("transfer-encoding") == Some("chunked") {
            loop {
                let size = usize::from_str_radix(&self.line(), 16).expect("chunk size");
                let data = self.exact(size);
                assert_eq!(self.line(), "", "CRLF after a chunk");
                if size == 0 {
                    break;
                }
                response.body.extend_from_slice(&data);
            }
        } else {
            while self.fill() {}
            response.body = std::mem::take(&mut self.buf);
        }
        response
    }

    /// Asserts the server closes the connection (after anything buffered).
    fn assert_closed(&mut self) {
        let deadline = Instant::now() + IO_TIMEOUT;
        while self.fill() {
            assert!(Instant::now() < deadline, "the server did not close the connection");
        }
    }
}

/// A refused request: the exact status, `Connection: close`, then EOF.
fn assert_refused(addr: SocketAddr, request: &[u8], status: u16) {
    let mut client = Client::connect(addr);
    client.send(request);
    let response = client.response(false);
    assert_eq!(response.status, status, "for {:?}", String::from_utf8_lossy(&request[..request.len().min(80)]));
    assert_eq!(response.header("connection"), Some("close"));
    client.assert_closed();
}

fn curl(args: &[&str]) -> support::Output {
    let mut cmd = Command::new("curl");
    cmd.args(["--silent", "--show-error", "--max-time", "30"]).args(args);
    let out = run_bounded(cmd, Duration::from_secs(60)).expect("curl runs (is it installed?)");
    assert!(out.status.success(), "curl {args:?} failed: {}", out.stderr);
    out
}

#[test]
fn curl_keeps_the_connection_alive_across_requests() {
    bounded(Duration::from_secs(120), || {
        let host = kv();
        let base = format!("http://{}", host.addr());
        curl(&["-X", "PUT", "--data-binary", "one", &format!("{base}/kv/a")]);
        let out = curl(&["--verbose", &format!("{base}/kv/a"), &format!("{base}/kv/a"), &format!("{base}/kv/missing")]);
        assert!(out.stdout.starts_with("oneone"), "bodies of two GETs, then the 404's: {:?}", out.stdout);
        assert!(
            out.stderr.contains("Re-using existing connection"),
            "curl did not reuse the connection:\n{}",
            out.stderr
        );
        assert!(out.stderr.contains("< HTTP/1.1 404"), "{}", out.stderr);
        host.assert_no_errors();
    });
}

#[test]
fn curl_chunked_upload_and_a_streamed_download_round_trip() {
    bounded(Duration::from_secs(120), || {
        let host = kv();
        let url = format!("http://{}/kv/big", host.addr());
        // 700 KiB: streamed up in chunks, and down in a streamed response.
        let value: Vec<u8> = (0..700 * 1024).map(|i| (i * 7 % 251) as u8).collect();
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &value).unwrap();
        let path = file.path().to_str().unwrap();
        let out = curl(&[
            "--verbose",
            "-X",
            "PUT",
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &format!("@{path}"),
            "-w",
            "%{http_code}",
            &url,
        ]);
        assert_eq!(out.stdout, "201", "{}", out.stderr);
        assert!(out.stderr.contains("Transfer-Encoding: chunked"), "{}", out.stderr);

        let mut client = Client::connect(host.addr());
        client.send(b"GET /kv/big HTTP/1.1\r\nHost: x\r\n\r\n");
        let response = client.response(false);
        assert_eq!(response.status, 200);
        assert_eq!(response.header("transfer-encoding"), Some("chunked"), "a large value is streamed");
        assert!(response.body == value, "downloaded {} bytes, not the {} uploaded", response.body.len(), value.len());
        host.assert_no_errors();
    });
}

#[test]
fn expect_100_continue_gets_continue_then_the_answer() {
    bounded(Duration::from_secs(120), || {
        let host = kv();
        let url = format!("http://{}/kv/c", host.addr());
        let out = curl(&[
            "--verbose",
            "-X",
            "PUT",
            "-H",
            "Expect: 100-continue",
            "--data-binary",
            "continued",
            "-w",
            "%{http_code}",
            &url,
        ]);
        assert!(out.stderr.contains("HTTP/1.1 100 Continue"), "no 100 Continue:\n{}", out.stderr);
        assert_eq!(out.stdout, "201");
        assert_eq!(curl(&[&url]).stdout, "continued");

        // Too large for the body limit: refused before the body is sent.
        let mut client = Client::connect(host.addr());
        client.send(b"PUT /kv/d HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\nExpect: 100-continue\r\n\r\n");
        let response = client.response(false);
        assert_eq!(response.status, 413);
        client.assert_closed();
    });
}

#[test]
fn head_answers_with_the_length_and_no_body() {
    bounded(Duration::from_secs(120), || {
        let host = kv();
        let url = format!("http://{}/kv/h", host.addr());
        curl(&["-X", "PUT", "--data-binary", "twelve bytes", &url]);
        let out = curl(&["--head", &url]);
        assert!(out.stdout.starts_with("HTTP/1.1 200"), "{}", out.stdout);
        assert!(out.stdout.to_ascii_lowercase().contains("content-length: 12\r\n"), "{}", out.stdout);

        // On the wire: no body after the head, and the connection stays
        // usable for the next request.
        let mut client = Client::connect(host.addr());
        client.send(b"HEAD /kv/h HTTP/1.1\r\nHost: x\r\n\r\nGET /kv/h HTTP/1.1\r\nHost: x\r\n\r\n");
        let head = client.response(true);
        assert_eq!((head.status, head.header("content-length")), (200, Some("12")));
        let get = client.response(false);
        assert_eq!(get.body, b"twelve bytes");
    });
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    bounded(Duration::from_secs(120), || {
        let host = kv();
        let mut client = Client::connect(host.addr());
        // Six requests in one write, bodies included.
        let mut batch = Vec::new();
        for i in 0..3 {
            let value = format!("value-{i}");
            batch.extend_from_slice(
                format!("PUT /kv/p{i} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{value}", value.len())
                    .as_bytes(),
            );
        }
        for i in 0..3 {
            batch.extend_from_slice(format!("GET /kv/p{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        }
        client.send(&batch);
        for _ in 0..3 {
            assert_eq!(client.response(false).status, 201);
        }
        for i in 0..3 {
            let r = client.response(false);
            assert_eq!((r.status, r.body), (200, format!("value-{i}").into_bytes()));
        }
        // And the connection is still open for more.
        client.send(b"GET /kv/p0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let last = client.response(false);
        assert_eq!((last.status, last.header("connection")), (200, Some("close")));
        client.assert_closed();
        host.assert_no_errors();
    });
}

#[test]
fn malformed_requests_get_the_exact_status_and_a_close() {
    bounded(Duration::from_secs(120), || {
        let host =
            Host::command("http_static_kv").listen_flag("--listen-http").args(["--http-max-body", "1000"]).spawn();
        let addr = host.addr();
        assert_refused(addr, b"GARBAGE\r\n\r\n", 400);
        assert_refused(addr, b"GET / HTTP/1.1\r\n\r\n", 400); // no Host
        assert_refused(addr, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400);
        assert_refused(addr, b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n", 400);
        let big = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000));
        assert_refused(addr, big.as_bytes(), 431);
        let many: String = (0..100).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_refused(addr, format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(), 431);
        assert_refused(
            addr,
            b"PUT /kv/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
            400,
        );
        assert_refused(addr, b"PUT /kv/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501);
        assert_refused(addr, b"PUT /kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400);
        assert_refused(addr, b"PUT /kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n", 413);
        // A chunked body that grows past the limit.
        let chunks = "100\r\n".to_string() + &"x".repeat(256) + "\r\n";
        let body = chunks.repeat(5);
        assert_refused(
            addr,
            format!("PUT /kv/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{body}").as_bytes(),
            413,
        );
        // Nothing broke: a good request still works.
        let mut client = Client::connect(addr);
        client.send(b"GET /kv/a HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(client.response(false).status, 404);
        host.assert_no_errors();
    });
}

#[test]
fn a_slowloris_client_gets_408_and_is_closed_while_others_are_served() {
    let _alone = alone();
    bounded(Duration::from_secs(120), || {
        let host = Host::command("http_static_kv")
            .listen_flag("--listen-http")
            .args(["--http-header-timeout-ms", "700"])
            .spawn();
        let addr = host.addr();
        // Drip a head a byte at a time for twice the timeout: the timeout
        // counts from the first byte, so trickling does not extend it.
        let mut slow = Client::connect(addr);
        let started = Instant::now();
        for &byte in b"GET /kv/a HTTP/1.1\r\nHost: x\r\nX-Slow: ".iter().cycle() {
            if started.elapsed() > Duration::from_millis(1400) || slow.stream.write_all(&[byte]).is_err() {
                break;
            }
            // A normal client is served meanwhile.
            let mut other = Client::connect(addr);
            other.send(b"GET /kv/a HTTP/1.1\r\nHost: x\r\n\r\n");
            assert_eq!(other.response(false).status, 404);
            std::thread::sleep(Duration::from_millis(50));
        }
        // The 408 is already there: it came at the timeout, not later.
        let read_at = Instant::now();
        let response = slow.response(false);
        assert_eq!(response.status, 408);
        assert!(
            read_at.elapsed() < Duration::from_millis(300),
            "the 408 came {:?} after dripping stopped",
            read_at.elapsed()
        );
        slow.assert_closed();
    });
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    bounded(Duration::from_secs(60), || {
        let host = Host::command("http_static_kv")
            .listen_flag("--listen-http")
            .args(["--http-idle-timeout-ms", "300"])
            .spawn();
        let mut client = Client::connect(host.addr());
        client.send(b"GET /kv/a HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(client.response(false).status, 404);
        let idle = Instant::now();
        client.assert_closed();
        let took = idle.elapsed();
        assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(5), "closed after {took:?}");
    });
}

#[test]
fn http_hello_answers_and_a_guest_without_request_handling_answers_501() {
    bounded(Duration::from_secs(120), || {
        let host = Host::command("http_hello").listen_flag("--listen-http").spawn();
        let mut client = Client::connect(host.addr());
        for _ in 0..3 {
            client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            let r = client.response(false);
            assert_eq!((r.status, r.body.as_slice()), (200, &b"Hello, world!"[..]));
            assert!(r.header("date").is_some_and(|d| d.ends_with(" GMT")), "{r:?}");
        }
        drop(host);

        // A guest that does not handle requests (echo: the SDK's default)
        // answers 501 rather than leaving the client hanging.
        let host = Host::command("echo").listen_flag("--listen-http").spawn();
        let mut client = Client::connect(host.addr());
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(client.response(false).status, 501);
    });
}

#[test]
fn a_guest_may_answer_later_from_a_timer_while_others_are_served() {
    let _alone = alone();
    bounded(Duration::from_secs(120), || {
        let host = kv();
        let addr = host.addr();
        let mut other = Client::connect(addr);
        other.send(b"PUT /kv/later HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nlater");
        assert_eq!(other.response(false).status, 201);

        let mut waiting = Client::connect(addr);
        let asked = Instant::now();
        waiting.send(b"GET /kv/later?after=400 HTTP/1.1\r\nHost: x\r\n\r\n");
        // Meanwhile the loop serves others at once.
        for _ in 0..20 {
            other.send(b"GET /kv/later HTTP/1.1\r\nHost: x\r\n\r\n");
            assert_eq!(other.response(false).body, b"later");
        }
        assert!(asked.elapsed() < Duration::from_millis(400), "the other client was held up");
        let r = waiting.response(false);
        assert_eq!((r.status, r.body.as_slice()), (200, &b"later"[..]));
        assert!(asked.elapsed() >= Duration::from_millis(400), "answered after {:?}", asked.elapsed());
        // The connection goes on with the next request.
        waiting.send(b"GET /kv/later HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(waiting.response(false).status, 200);

        // A client that leaves before its answer: the guest's later answer
        // finds a dead handle (the guest logs it), and nothing else happens.
        let mut gone = Client::connect(addr);
        gone.send(b"GET /kv/later?after=200 HTTP/1.1\r\nHost: x\r\n\r\n");
        drop(gone);
        let line = host.wait_for_log("cannot answer 200", Duration::from_secs(10));
        assert!(line.contains("invalid handle"), "{line}");
        other.send(b"GET /kv/later HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(other.response(false).status, 200);
        host.assert_no_errors();
    });
}
