//! The state machine without sockets or wasm: bytes in, steps out, output
//! read back from a [`Buffer`].

use std::time::{Duration, Instant};

use wasmloop_http::{h1, ws};

use super::*;
use crate::error::{CloseReason, ErrorCode};
use crate::output::Buffer;

/// The limits the tests run with (the host's defaults, spelled out: the
/// host's one set of defaults lives above this crate).
const LIMITS: HttpLimits = HttpLimits {
    max_head: 16 * 1024,
    max_headers: 64,
    max_body: 1 << 20,
    max_message: 1 << 20,
    header_timeout: Duration::from_secs(10),
    idle_timeout: Duration::from_secs(60),
};

/// A connection, its output, and what a server keeps for feeding it.
struct Peer {
    http: HttpConn,
    out: Buffer,
    limits: HttpLimits,
    parser: h1::HeadParser,
    now: Instant,
}

/// What one step gave, owned, so the test can go on feeding.
#[derive(Debug, PartialEq)]
enum Got {
    Wait,
    Drop,
    Request { used: usize, method: String, target: String, headers: Vec<(String, String)>, body: Vec<u8>, done: bool },
    Body { used: usize, request: Option<u64>, data: Vec<u8>, done: bool },
    Message { used: usize, websocket: u64, text: bool, payload: Vec<u8> },
    Consumed(usize),
    Ended(Option<u64>),
}

impl Peer {
    fn new(websocket: bool) -> Peer {
        let limits = LIMITS;
        let now = Instant::now();
        Peer {
            http: HttpConn::new(websocket, now, &limits),
            out: Buffer::default(),
            parser: h1::HeadParser::new(limits.h1()),
            limits,
            now,
        }
    }

    fn step(&mut self, bytes: &[u8]) -> Got {
        let mut bytes = bytes.to_vec();
        let (mut headers, mut message) = (Vec::new(), Vec::new());
        let mut env = Env {
            out: &self.out,
            limits: &self.limits,
            now: self.now,
            parser: &mut self.parser,
            headers: &mut headers,
            message: &mut message,
        };
        let got = match self.http.step(&mut bytes, &mut env) {
            Step::Wait => Got::Wait,
            Step::Drop => Got::Drop,
            Step::Request { used, head, body, body_done } => Got::Request {
                used,
                method: head.method.into(),
                target: head.target.into(),
                headers: Vec::new(),
                body: body.to_vec(),
                done: body_done,
            },
            Step::Body { used, request, data, done } => Got::Body { used, request, data: data.to_vec(), done },
            Step::Message { used, websocket, text } => Got::Message { used, websocket, text, payload: Vec::new() },
            Step::Consumed { used } => Got::Consumed(used),
            Step::Ended { ended } => Got::Ended(ended),
        };
        match got {
            Got::Request { used, method, target, body, done, .. } => {
                let headers = headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
                Got::Request { used, method, target, headers, body, done }
            }
            Got::Message { used, websocket, text, .. } => Got::Message { used, websocket, text, payload: message },
            other => other,
        }
    }

    fn settle(&self) -> Settle {
        self.http.settle(&self.out, &self.limits, self.now)
    }

    fn output(&self) -> String {
        String::from_utf8_lossy(&self.out.take()).into_owned()
    }
}

const GET: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";

#[test]
fn a_request_is_one_step_and_its_response_ends_it_on_a_kept_alive_connection() {
    let mut p = Peer::new(false);
    assert_eq!(p.http.phase(), Phase::ReadingHead);
    let Got::Request { used, method, target, headers, body, done } = p.step(GET) else { panic!() };
    assert_eq!((used, method.as_str(), target.as_str(), body.len(), done), (GET.len(), "GET", "/a", 0, true));
    assert_eq!(headers, vec![("Host".to_string(), "x".to_string())]);
    p.http.set_request(7);
    assert_eq!(p.http.phase(), Phase::AwaitingResponse);
    assert_eq!(p.http.deadline.get(), None, "no timeout while the guest answers");

    p.http.respond(200, [("content-type", "text/plain")].into_iter(), b"hi", &p.out, &mut Vec::new()).unwrap();
    let response = p.output();
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.ends_with("\r\n\r\nhi") && response.contains("Content-Length: 2"), "{response}");
    assert_eq!(p.http.phase(), Phase::Responded);

    assert_eq!(p.settle(), Settle::RequestEnded(7));
    assert_eq!(p.http.phase(), Phase::ReadingHead);
    assert!(p.out.resumed.get(), "the next request may be buffered: read on");
    assert_eq!(p.http.deadline.get(), Some(p.now + p.limits.idle_timeout));
    assert!(p.out.closing.borrow().is_none(), "keep-alive");
}

#[test]
fn a_pipelined_request_waits_until_the_response_before_it_is_done() {
    let mut p = Peer::new(false);
    let two = [GET, GET].concat();
    let Got::Request { used, .. } = p.step(&two) else { panic!() };
    assert_eq!(used, GET.len());
    p.http.set_request(1);
    assert_eq!(p.step(&two[used..]), Got::Wait, "one request at a time");
    p.http.respond(204, std::iter::empty(), b"", &p.out, &mut Vec::new()).unwrap();
    assert_eq!(p.settle(), Settle::RequestEnded(1));
    assert!(matches!(p.step(&two[used..]), Got::Request { .. }));
}

#[test]
fn a_chunked_body_arrives_in_steps_and_ends_the_body_timeout() {
    let mut p = Peer::new(false);
    let head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    let Got::Request { done: false, .. } = p.step(head) else { panic!() };
    p.http.set_request(3);
    assert_eq!(p.http.phase(), Phase::ReadingBody);
    assert_eq!(p.http.deadline.get(), Some(p.now + p.limits.header_timeout), "a body must keep coming");
    let body = b"5\r\nhello\r\n0\r\n\r\n";
    let (mut at, mut data, mut done) = (0, Vec::new(), false);
    while !done {
        let got = p.step(&body[at..]);
        let Got::Body { used, request: Some(3), data: part, done: end } = got else { panic!("{got:?}") };
        (at, done) = (at + used, end);
        data.extend(part);
    }
    assert_eq!((at, data.as_slice()), (body.len(), &b"hello"[..]));
    assert_eq!(p.http.phase(), Phase::AwaitingResponse);
    assert_eq!(p.http.deadline.get(), None);
}

#[test]
fn a_malformed_request_is_answered_400_and_the_connection_lingers() {
    let mut p = Peer::new(false);
    assert_eq!(p.step(b"GARBAGE\r\n\r\n"), Got::Ended(None));
    let response = p.output();
    assert!(response.starts_with("HTTP/1.1 400 "), "{response}");
    assert_eq!(p.http.phase(), Phase::Lingering);
    assert!(p.out.shut.get(), "FIN after the answer");
    assert_eq!(p.http.deadline.get(), Some(p.now + LINGER_READ));
    assert_eq!(p.step(GET), Got::Drop, "input is dropped while lingering");
    assert_eq!(p.http.timer_fired(&p.out, p.now + LINGER_READ), TimerOutcome::Close);
}

#[test]
fn a_head_that_trickles_in_is_answered_408_at_the_header_timeout() {
    let mut p = Peer::new(false);
    assert_eq!(p.step(b"GET / HT"), Got::Wait);
    let deadline = p.now + p.limits.header_timeout;
    assert_eq!(p.http.deadline.get(), Some(deadline));
    // Further bytes do not extend it.
    p.now += Duration::from_secs(1);
    assert_eq!(p.step(b"GET / HTTP/1.1\r\nHo"), Got::Wait);
    assert_eq!(p.http.deadline.get(), Some(deadline));
    assert_eq!(p.http.timer_fired(&p.out, deadline - Duration::from_millis(1)), TimerOutcome::Rearm(deadline));
    assert_eq!(p.http.timer_fired(&p.out, deadline), TimerOutcome::TimedOut { ended: None });
    assert!(p.output().starts_with("HTTP/1.1 408 "));
}

#[test]
fn an_idle_connection_closes_quietly_at_the_idle_timeout() {
    let p = Peer::new(false);
    assert_eq!(p.http.timer_fired(&p.out, p.now + p.limits.idle_timeout), TimerOutcome::Close);
    assert_eq!(p.output(), "");
}

#[test]
fn a_refused_guest_call_changes_nothing_and_host_output_is_not_bounded_by_the_guest_budget() {
    let mut p = Peer::new(false);
    let expect = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n";
    p.out.limit.set(Some(0));
    let Got::Request { done: false, .. } = p.step(expect) else { panic!() };
    assert_eq!(p.output(), "HTTP/1.1 100 Continue\r\n\r\n", "host output passes a full budget");
    p.http.set_request(1);
    let refused = p.http.respond(200, std::iter::empty(), b"body", &p.out, &mut Vec::new());
    assert_eq!(refused, Err(ErrorCode::LimitReached));
    assert_eq!(p.output(), "", "nothing written");
    assert_eq!(p.http.phase(), Phase::ReadingBody, "no state changed");
    p.out.limit.set(None);
    assert_eq!(p.http.respond(600, std::iter::empty(), b"", &p.out, &mut Vec::new()), Err(ErrorCode::InvalidArgument));
    assert_eq!(
        p.http.respond(200, [("bad header", "x")].into_iter(), b"", &p.out, &mut Vec::new()),
        Err(ErrorCode::InvalidArgument)
    );
    p.http.respond(200, std::iter::empty(), b"body", &p.out, &mut Vec::new()).unwrap();
    assert_eq!(p.http.respond(200, std::iter::empty(), b"", &p.out, &mut Vec::new()), Err(ErrorCode::Closed));
    // Answered before the body was read: the connection closes after it.
    assert!(p.output().contains("Connection: close"));
    assert_eq!(p.settle(), Settle::RequestEnded(1));
    assert_eq!(p.http.phase(), Phase::Lingering, "the unread body is drained, not reset");
}

#[test]
fn a_streamed_response_is_chunked_and_ends_with_the_last_chunk() {
    let mut p = Peer::new(false);
    let Got::Request { .. } = p.step(GET) else { panic!() };
    p.http.set_request(1);
    assert_eq!(p.http.respond_write(b"x", &p.out), Err(ErrorCode::Closed), "no head yet");
    p.http.respond_start(200, std::iter::empty(), &p.out, &mut Vec::new()).unwrap();
    assert_eq!(p.http.phase(), Phase::StreamingResponse);
    p.out.take();
    assert_eq!(p.http.respond_write(b"hello", &p.out), Ok(5));
    p.http.respond_finish(&p.out).unwrap();
    assert_eq!(p.output(), "5\r\nhello\r\n0\r\n\r\n");
}

/// A client frame: FIN, `opcode`, masked as RFC 6455 requires.
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [1, 2, 3, 4];
    let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

fn upgraded() -> Peer {
    let mut p = Peer::new(true);
    let upgrade = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let Got::Request { .. } = p.step(upgrade) else { panic!() };
    p.http.set_request(1);
    let ws = p.http.accept_websocket(None, &p.out, &mut Vec::new(), &p.limits, || 9).unwrap();
    assert_eq!(ws, 9);
    let response = p.output();
    assert!(response.starts_with("HTTP/1.1 101 "), "{response}");
    assert!(response.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{response}");
    assert_eq!(p.http.phase(), Phase::WebSocket);
    assert_eq!(p.settle(), Settle::Nothing);
    assert!(p.out.resumed.get(), "frames may follow the request");
    p
}

#[test]
fn a_websocket_gets_messages_answers_pings_and_echoes_the_close() {
    let mut p = upgraded();
    let text = frame(0x1, b"hi");
    assert_eq!(p.step(&text), Got::Message { used: text.len(), websocket: 9, text: true, payload: b"hi".to_vec() });
    let ping = frame(0x9, b"p");
    p.out.limit.set(Some(0));
    assert_eq!(p.step(&ping), Got::Consumed(ping.len()));
    assert_eq!(p.out.take(), vec![0x8A, 1, b'p'], "the pong passes a full budget");
    assert_eq!(p.http.send(ws::Opcode::Text, b"no room", &p.out), Err(ErrorCode::LimitReached));
    p.out.limit.set(None);
    p.http.send(ws::Opcode::Text, b"ok", &p.out).unwrap();
    assert_eq!(p.out.take(), vec![0x81, 2, b'o', b'k']);

    let close = frame(0x8, &[0x03, 0xE8]);
    assert_eq!(p.step(&close), Got::Ended(None));
    assert_eq!(p.out.take(), vec![0x88, 2, 0x03, 0xE8], "the close code is echoed");
    assert_eq!(*p.out.closing.borrow(), Some(CloseReason::PeerClosed));
    assert_eq!(p.http.send(ws::Opcode::Text, b"late", &p.out), Err(ErrorCode::Closed));
    assert_eq!(p.http.closed(), (None, Some((9, 1000, String::new()))));
    assert_eq!(p.http.phase(), Phase::Closed);
}

#[test]
fn an_unmasked_frame_fails_the_websocket_with_1002_and_lingers() {
    let mut p = upgraded();
    assert_eq!(p.step(&[0x81, 0x01, b'x']), Got::Ended(None));
    let out = p.out.take();
    assert_eq!(&out[..4], &[0x88, out[1], 0x03, 0xEA], "close 1002");
    assert_eq!(p.http.phase(), Phase::Lingering);
    assert_eq!(p.http.closed().1.map(|(h, code, _)| (h, code)), Some((9, 1002)));
}

#[test]
fn a_connection_gone_mid_request_reports_the_request_handle() {
    let mut p = Peer::new(false);
    let Got::Request { .. } = p.step(GET) else { panic!() };
    p.http.set_request(5);
    p.http.peer_eof(&p.out);
    assert_eq!(*p.out.closing.borrow(), Some(CloseReason::PeerClosed));
    assert_eq!(p.http.closed(), (Some(5), None));
}
