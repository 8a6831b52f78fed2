//! HTTP/1.1, server side (RFC 9110, RFC 9112), sans-IO.
//!
//! # Reading a request
//!
//! 1. [`HeadParser::parse`] the bytes read so far. `Ok(None)`: read more and
//!    call again with the grown buffer. `Ok(Some(head))`: a complete head of
//!    `head.len` bytes; everything the host needs (framing, keep-alive,
//!    `Expect`) is decided here. `Err(e)`: answer with
//!    [`HttpError::write_response`] and close.
//! 2. Drop `head.len` bytes (after copying out what the guest needs: the
//!    spans point into the buffer) and feed the rest to a [`BodyDecoder`]
//!    made from `head.body`, dropping the bytes it consumes, until
//!    [`BodyDecoder::is_done`]. What follows is the next pipelined request.
//!
//! # Writing a response
//!
//! [`write_head`], then the body: raw for [`Framing::Length`] and
//! [`Framing::UntilClose`]; for [`Framing::Chunked`] each piece as
//! [`chunk_header`] + data + [`CHUNK_END`], then [`LAST_CHUNK`].
//!
//! # What is checked and what is not
//!
//! - Request framing is strict on purpose: anything two implementations
//!   could read differently (both `Content-Length` and `Transfer-Encoding`,
//!   differing lengths, codings other than `chunked`, a bare LF in chunked
//!   framing) is refused, because such ambiguity is how requests get
//!   smuggled past a proxy in front of us.
//! - Not checked: the target's path syntax beyond its first byte, header
//!   semantics other than those listed on [`HeadParser::parse`], the status
//!   code passed to [`write_head`] (must be 100..=999), the `date` bytes.
//! - The head parser is not incremental: each call parses from the start of
//!   the buffer, so a head fed one byte per call costs O(len²); `max_head`
//!   bounds that.
//!
//! # Where things are
//!
//! - `head`: [`HeadParser`], the request head and its framing rules.
//! - `body`: [`BodyDecoder`], `Content-Length` and chunked bodies.
//! - `response`: [`write_head`], chunk framing, reason phrases, the checks
//!   on guest-supplied headers.
//! - `date`: [`http_date`], the `Date` field.

mod body;
mod date;
mod head;
mod response;

use std::ops::Range;

pub use body::BodyDecoder;
pub use date::http_date;
pub use head::{Head, HeadParser};
pub use response::{
    CHUNK_END, CONTINUE, Framing, LAST_CHUNK, check_header, chunk_header, reason_phrase, status_allows_body, write_head,
};

/// Byte positions in the buffer given to [`HeadParser::parse`].
pub type Span = Range<usize>;

/// Bounds on what one request may make the host hold or read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of a request head, leading empty lines and the final CRLFCRLF
    /// included. Also bounds the trailers and the chunk extensions of a body.
    pub max_head: usize,
    /// Header fields in a head. Values above [`HEADER_SLOTS`] act as
    /// [`HEADER_SLOTS`].
    pub max_headers: usize,
    /// Bytes of a decoded body.
    pub max_body: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_head: 16 * 1024, max_headers: 64, max_body: 1024 * 1024 }
    }
}

/// The most header fields a head can have, whatever [`Limits::max_headers`]
/// says: the parser's scratch space is an array of this size on the stack, so
/// parsing allocates nothing. 128 × 32 bytes = 4 KiB of stack.
pub const HEADER_SLOTS: usize = 128;

/// Why a request is refused: the status to answer (400, 408, 413, 431, 501,
/// 505) and why, for the host's log and the response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpError {
    pub status: u16,
    pub reason: &'static str,
}

impl HttpError {
    pub const fn new(status: u16, reason: &'static str) -> Self {
        HttpError { status, reason }
    }

    /// Appends the whole response for this error: status line, a
    /// `text/plain` body stating the reason with its `Content-Length`,
    /// `Connection: close` and the `Date` given. The body is written even if
    /// the request was `HEAD`: the head may not have been parsed, and the
    /// connection closes after it anyway.
    pub fn write_response(&self, out: &mut Vec<u8>, date: &[u8]) {
        let body_len = self.reason.len() + 1;
        let content_type = [("Content-Type", "text/plain; charset=utf-8")];
        write_head(out, self.status, content_type, Framing::Length(body_len as u64), true, date);
        out.extend_from_slice(self.reason.as_bytes());
        out.push(b'\n');
    }
}

const fn bad_request(reason: &'static str) -> HttpError {
    HttpError::new(400, reason)
}

/// How a request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `Content-Length`; `Length(0)` is no body.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// Control characters other than HTAB (RFC 9110 §5.5 keeps them out of
/// field values).
fn is_control(byte: u8) -> bool {
    (byte < 0x20 && byte != b'\t') || byte == 0x7f
}

/// `tchar` of RFC 9110 §5.6.2.
fn is_token(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

#[cfg(test)]
mod tests;
