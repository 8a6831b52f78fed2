//! Raw HTTP hello: answers every HTTP/1.1 request with `Hello, world!`,
//! speaking HTTP itself on a plain TCP listener (`host run ... --listen`).
//! One of the guests of the suite's HTTP benchmark
//! (`bench/suite/src/http.rs`), next to `guests/http-hello`, which answers
//! the same on the host's HTTP interface (`--listen-http`): the pair
//! measures what the host's HTTP layer costs against a guest that parses
//! requests itself.
//!
//! Just enough HTTP/1.1 for a fair keep-alive benchmark and no misbehaviour
//! on other input:
//!
//! - a request ends at its header's `\r\n\r\n`; requests may arrive split
//!   across reads or pipelined several in one read, and are answered in
//!   order;
//! - a `Content-Length` body is skipped (also across reads), whatever the
//!   method; `Transfer-Encoding` is not supported (501, then close);
//! - `Connection: close` (and HTTP/1.0 in general) closes the connection
//!   after its answer; bytes after that request are ignored;
//! - a request head longer than [`MAX_HEAD`] gets a 431 and the connection
//!   is closed, so a peer cannot make us buffer without bound.
//!
//! The hot path (whole requests per read, the host taking every byte)
//! allocates nothing: requests are parsed in the host's buffer, answers are
//! written from one pre-built run of responses. Only a request split across
//! reads is copied into its connection's buffer, which keeps its capacity.
//! Output the host does not take (a full output buffer) waits in the
//! connection's `out` with reading paused, like the `echo` guest.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use wasmloop_sdk::{CloseReason, Connection, EofAction, Handler, Listener, export, warn};

/// The answer to every request.
const HELLO: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nHello, world!";

/// How many answers one `write` may carry (pipelined requests).
const RUN: usize = 32;

/// The longest request head (request line and headers) we buffer.
const MAX_HEAD: usize = 8 * 1024;

const TOO_LARGE: &[u8] =
    b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
const NOT_IMPLEMENTED: &[u8] = b"HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

struct HttpHello {
    conns: HashMap<Connection, Conn, BuildHasherDefault<HandleHasher>>,
    /// [`HELLO`] [`RUN`] times, back to back.
    hellos: Vec<u8>,
}

#[derive(Default)]
struct Conn {
    /// The start of a request whose head has not fully arrived.
    partial: Vec<u8>,
    /// Body bytes still to skip before the next request starts.
    skip: u64,
    /// Output the host did not take yet; reading is paused meanwhile.
    out: Vec<u8>,
    /// No more requests: close once `out` is written.
    closing: bool,
}

impl Handler for HttpHello {
    fn init(_config: &str, _listeners: &[Listener]) -> Result<Self, String> {
        Ok(HttpHello { conns: HashMap::default(), hellos: HELLO.repeat(RUN) })
    }

    fn on_accept(&mut self, _listener: Listener, conn: Connection) {
        self.conns.insert(conn, Conn::default());
    }

    fn on_data(&mut self, conn: Connection, data: &[u8]) {
        let Some(state) = self.conns.get_mut(&conn) else {
            return;
        };
        if state.closing {
            return;
        }
        let parsed = if state.partial.is_empty() {
            let parsed = parse(data, &mut state.skip);
            if parsed.end.is_none() {
                state.partial.extend_from_slice(&data[parsed.consumed..]);
            }
            parsed
        } else {
            state.partial.extend_from_slice(data);
            let parsed = parse(&state.partial, &mut state.skip);
            if parsed.end.is_none() {
                state.partial.drain(..parsed.consumed);
            }
            parsed
        };
        if parsed.end.is_some() {
            state.partial.clear();
            state.closing = true;
        }

        let mut answers = parsed.answers;
        while answers > 0 {
            let n = answers.min(RUN);
            send(conn, state, &self.hellos[..n * HELLO.len()]);
            answers -= n;
        }
        if let Some(End::Error(response)) = parsed.end {
            send(conn, state, response);
        }
        settle(conn, state);
    }

    fn on_writable(&mut self, conn: Connection) {
        let Some(state) = self.conns.get_mut(&conn) else {
            return;
        };
        match conn.write(&state.out) {
            Ok(taken) => {
                state.out.drain(..taken);
            }
            Err(e) => {
                warn!("{conn:?}: write failed ({e}); aborting");
                let _ = conn.abort();
                return;
            }
        }
        if !state.out.is_empty() {
            let _ = conn.notify_writable();
            return;
        }
        if !state.closing {
            let _ = conn.resume_reading();
        }
        settle(conn, state);
    }

    fn on_eof(&mut self, conn: Connection) -> EofAction {
        match self.conns.get_mut(&conn) {
            Some(state) if !state.out.is_empty() => {
                // Answers still wait here: close once they are written.
                state.closing = true;
                EofAction::KeepOpen
            }
            _ => EofAction::Close,
        }
    }

    fn on_close(&mut self, conn: Connection, _reason: CloseReason) {
        self.conns.remove(&conn);
    }
}

/// Hands `bytes` to the host, after what already waits; keeps what it does
/// not take.
fn send(conn: Connection, state: &mut Conn, bytes: &[u8]) {
    if !state.out.is_empty() {
        state.out.extend_from_slice(bytes);
        return;
    }
    match conn.write(bytes) {
        Ok(taken) if taken == bytes.len() => {}
        Ok(taken) => {
            state.out.extend_from_slice(&bytes[taken..]);
            // These fail only for a connection that is closing anyway.
            let _ = conn.pause_reading();
            let _ = conn.notify_writable();
        }
        Err(e) => {
            // Answers can no longer be complete: reset rather than leave a gap.
            warn!("{conn:?}: write failed ({e}); aborting");
            let _ = conn.abort();
            state.closing = true;
        }
    }
}

/// Closes a connection that is done once everything was handed over.
fn settle(conn: Connection, state: &mut Conn) {
    if state.closing && state.out.is_empty() {
        // Graceful: the host still sends what it buffered.
        let _ = conn.close();
    }
}

/// What one pass over received bytes found.
struct Parsed {
    /// Complete requests to answer with [`HELLO`], in order.
    answers: usize,
    /// Bytes of complete requests (heads and skipped bodies).
    consumed: usize,
    /// The connection ends after the answers: nothing after is parsed.
    end: Option<End>,
}

enum End {
    /// The last request asked to close (or was HTTP/1.0).
    Close,
    /// A request we cannot serve: this answer, then close.
    Error(&'static [u8]),
}

/// Counts the complete requests in `buf`, skipping bodies (`skip` carries a
/// body's rest from one read to the next).
fn parse(buf: &[u8], skip: &mut u64) -> Parsed {
    let mut parsed = Parsed { answers: 0, consumed: 0, end: None };
    let mut at = 0;
    loop {
        if *skip > 0 {
            let n = (*skip).min((buf.len() - at) as u64);
            *skip -= n;
            at += n as usize;
            parsed.consumed = at;
            if *skip > 0 {
                return parsed;
            }
        }
        let rest = &buf[at..];
        let window = &rest[..rest.len().min(MAX_HEAD)];
        let Some(head_len) = find_head_end(window) else {
            if rest.len() >= MAX_HEAD {
                parsed.end = Some(End::Error(TOO_LARGE));
            }
            return parsed;
        };
        let head = match Head::parse(&rest[..head_len]) {
            Ok(head) => head,
            Err(response) => {
                parsed.end = Some(End::Error(response));
                return parsed;
            }
        };
        parsed.answers += 1;
        at += head_len + 4;
        parsed.consumed = at;
        if head.close {
            parsed.end = Some(End::Close);
            return parsed;
        }
        *skip = head.content_length;
        if at == buf.len() && *skip == 0 {
            return parsed;
        }
    }
}

/// Where `\r\n\r\n` starts in `bytes`.
fn find_head_end(bytes: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = bytes[from..].iter().position(|&b| b == b'\r') {
        let i = from + i;
        if bytes.get(i..i + 4)? == b"\r\n\r\n" {
            return Some(i);
        }
        from = i + 1;
    }
    None
}

/// What a request head says about framing.
struct Head {
    content_length: u64,
    close: bool,
}

impl Head {
    /// Parses the request line and headers (without the final blank line).
    fn parse(head: &[u8]) -> Result<Head, &'static [u8]> {
        let mut lines = head.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let request_line = lines.next().unwrap_or_default();
        let version = request_line.rsplit(|&b| b == b' ').next().unwrap_or_default();
        let mut close = match version {
            b"HTTP/1.1" => false,
            // HTTP/1.0 closes unless asked otherwise; we simply close.
            b"HTTP/1.0" => true,
            _ => return Err(BAD_REQUEST),
        };
        let mut content_length = None;
        for line in lines {
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                return Err(BAD_REQUEST);
            };
            let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
            if name.eq_ignore_ascii_case(b"content-length") {
                let n = parse_length(value).ok_or(BAD_REQUEST)?;
                if content_length.is_some_and(|m| m != n) {
                    return Err(BAD_REQUEST);
                }
                content_length = Some(n);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                return Err(NOT_IMPLEMENTED);
            } else if name.eq_ignore_ascii_case(b"connection")
                && value.split(|&b| b == b',').any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"))
            {
                close = true;
            }
        }
        Ok(Head { content_length: content_length.unwrap_or(0), close })
    }
}

fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

/// Connection handles are small integers from the host: no need for
/// SipHash's flood resistance, a multiply spreads them well enough.
#[derive(Default)]
struct HandleHasher(u64);

impl Hasher for HandleHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

export!(HttpHello);
