//! Responses: the head ([`write_head`]), chunk framing, reason phrases, and
//! the checks on headers a guest supplies.

use super::is_token;

/// The canonical reason phrase of `status` (RFC 9110 §15), "" for others:
/// the status line then ends in a space, which RFC 9112 §4 allows.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// False for 1xx, 204 and 304: RFC 9112 §6.3 says these never have a body,
/// whatever their headers say.
pub fn status_allows_body(status: u16) -> bool {
    !(100..200).contains(&status) && status != 204 && status != 304
}

/// Fields the host writes itself: a guest setting them could break the
/// framing of the connection or smuggle a second response.
const HOST_OWNED_HEADERS: [&str; 6] =
    ["content-length", "transfer-encoding", "connection", "upgrade", "date", "keep-alive"];

/// Checks a guest-supplied response header: the name is a token (RFC 9110
/// §5.1), the value has no CR, LF or NUL (so it cannot end the field), and
/// the name is not one the host owns (`Content-Length`, `Transfer-Encoding`,
/// `Connection`, `Upgrade`, `Date`, `Keep-Alive`, any case). Other control
/// characters and surrounding whitespace in the value are not refused.
pub fn check_header(name: &str, value: &str) -> Result<(), &'static str> {
    if name.is_empty() || !name.bytes().all(is_token) {
        return Err("header name is not a token");
    }
    if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return Err("header value contains CR, LF or NUL");
    }
    if HOST_OWNED_HEADERS.iter().any(|owned| name.eq_ignore_ascii_case(owned)) {
        return Err("header is set by the host");
    }
    Ok(())
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked,
    /// The body ends when the connection closes (HTTP/1.0 clients that
    /// cannot take chunked, or a stream of unknown length).
    UntilClose,
}

/// Appends a response head: `HTTP/1.1 {status} {reason}`, the given headers
/// (assumed [`check_header`]ed), `Date: {date}`, the framing header
/// (`Content-Length` or `Transfer-Encoding: chunked`; none for
/// `UntilClose`, nor for any framing when `!status_allows_body(status)`),
/// `Connection: close` if `close` (or if the body is `UntilClose`, which
/// only a close can end), and the blank line.
pub fn write_head<'h>(
    out: &mut Vec<u8>,
    status: u16,
    headers: impl IntoIterator<Item = (&'h str, &'h str)>,
    framing: Framing,
    close: bool,
    date: &[u8],
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Date: ");
    out.extend_from_slice(date);
    out.extend_from_slice(b"\r\n");
    let has_body = status_allows_body(status);
    match framing {
        Framing::Length(length) if has_body => {
            out.extend_from_slice(b"Content-Length: ");
            push_decimal(out, length);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked if has_body => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        _ => {}
    }
    if close || (has_body && framing == Framing::UntilClose) {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// Writes the line that starts a chunk of `len` bytes, `{len:x}\r\n`, into
/// `buf` and returns it. `len` 0 is the last chunk: prefer [`LAST_CHUNK`].
pub fn chunk_header(buf: &mut [u8; 18], len: usize) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut start = 16;
    let mut n = len;
    loop {
        start -= 1;
        buf[start] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    buf[16..].copy_from_slice(b"\r\n");
    &buf[start..]
}

/// Ends the data of each chunk.
pub const CHUNK_END: &[u8] = b"\r\n";
/// The last chunk, with no trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";
/// The interim response to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
