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

use std::ops::Range;
use std::time::{SystemTime, UNIX_EPOCH};

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

/// A parsed request head. Spans point into the buffer passed to
/// [`HeadParser::parse`] and are valid UTF-8 there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub method: Span,
    pub target: Span,
    /// HTTP/1.0 → 0, HTTP/1.1 → 1.
    pub minor_version: u8,
    /// Name and value of each field, in order; values without surrounding
    /// whitespace. The Vec's capacity is reused between requests.
    pub headers: Vec<(Span, Span)>,
    pub body: BodyKind,
    /// HTTP/1.1: unless `Connection: close`. HTTP/1.0: only with
    /// `Connection: keep-alive` (and no `close`).
    pub keep_alive: bool,
    /// `Expect: 100-continue` on HTTP/1.1 (RFC 9110 §10.1.1 says to ignore it
    /// on 1.0). Other expectations are ignored, not answered with 417.
    pub expect_continue: bool,
    /// The method is `HEAD`: the response must have no body.
    pub is_head: bool,
    /// Bytes of the head, leading empty lines and the final CRLFCRLF included.
    pub len: usize,
}

impl Head {
    fn empty() -> Self {
        Head {
            method: 0..0,
            target: 0..0,
            minor_version: 1,
            headers: Vec::new(),
            body: BodyKind::Length(0),
            keep_alive: false,
            expect_continue: false,
            is_head: false,
            len: 0,
        }
    }

    /// The text at `span` in `buf`, which must be the buffer that was parsed;
    /// "" if it is not (out of bounds or not UTF-8), never a panic.
    pub fn str<'b>(&self, buf: &'b [u8], span: &Span) -> &'b str {
        buf.get(span.clone()).and_then(|bytes| std::str::from_utf8(bytes).ok()).unwrap_or("")
    }

    /// Name and value of each header field, in order.
    pub fn headers<'b>(&'b self, buf: &'b [u8]) -> impl Iterator<Item = (&'b str, &'b str)> {
        self.headers.iter().map(move |(name, value)| (self.str(buf, name), self.str(buf, value)))
    }

    /// The value of the first field called `name`, compared case-insensitively.
    pub fn header<'b>(&self, buf: &'b [u8], name: &str) -> Option<&'b str> {
        let (_, value) = self.headers.iter().find(|(n, _)| self.str(buf, n).eq_ignore_ascii_case(name))?;
        Some(self.str(buf, value))
    }
}

/// Parses request heads, reusing one [`Head`] so steady state allocates nothing.
#[derive(Debug)]
pub struct HeadParser {
    limits: Limits,
    head: Head,
}

impl HeadParser {
    pub fn new(limits: Limits) -> Self {
        HeadParser { limits, head: Head::empty() }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Parses a request head at the start of `buf`.
    ///
    /// `Ok(None)`: incomplete, read more; but once `buf.len() >= max_head`
    /// that is `Err` 431 instead, so the caller never buffers more than
    /// `max_head` plus one read. `Ok(Some(head))`: a complete, valid head.
    /// Leading empty lines before the request line are skipped (RFC 9112
    /// §2.2) and counted in `head.len`.
    ///
    /// Refused, with the status:
    /// - 400: request line or header syntax (including obs-fold and space
    ///   before the colon), a target that is not origin-form, absolute-form
    ///   (`http://`, `https://`) or `*` for OPTIONS; a value that is not
    ///   UTF-8; HTTP/1.1 without exactly one `Host`, or several `Host`s;
    ///   both `Content-Length` and `Transfer-Encoding`; a `Content-Length`
    ///   that is not digits, or several differing ones; `Transfer-Encoding`
    ///   on HTTP/1.0, empty, or with `chunked` twice.
    /// - 431: head longer than `max_head`, more than `max_headers` fields.
    /// - 413: `Content-Length` over `max_body`.
    /// - 501: a transfer coding other than `chunked`.
    /// - 505: a well-formed version other than 1.0 and 1.1.
    pub fn parse(&mut self, buf: &[u8]) -> Result<Option<&Head>, HttpError> {
        let max_head = self.limits.max_head;
        // Parsing only the first max_head bytes makes "too long" one check,
        // whether the head is complete past the limit or still incomplete.
        let window = &buf[..buf.len().min(max_head)];
        let mut slots = [httparse::EMPTY_HEADER; HEADER_SLOTS];
        let mut request = httparse::Request::new(&mut slots[..self.limits.max_headers.min(HEADER_SLOTS)]);
        let len = match request.parse(window) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() >= max_head => {
                return Err(HttpError::new(431, "request head too large"));
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(HttpError::new(431, "too many header fields")),
            Err(httparse::Error::Version) => return Err(version_error(window)),
            Err(_) => return Err(bad_request("malformed request head")),
        };
        let (Some(method), Some(target), Some(minor_version)) = (request.method, request.path, request.version) else {
            return Err(bad_request("malformed request line"));
        };
        if !is_valid_target(method, target) {
            return Err(bad_request("request target is not origin-form, absolute-form or OPTIONS *"));
        }

        let head = &mut self.head;
        head.method = span_of(buf, method.as_bytes());
        head.target = span_of(buf, target.as_bytes());
        head.minor_version = minor_version;
        head.is_head = method == "HEAD";
        head.len = len;
        head.headers.clear();

        let mut hosts = 0;
        let mut content_length = None;
        let mut codings = Codings::default();
        let (mut close, mut keep_alive, mut expect_continue) = (false, false, false);
        for field in request.headers.iter() {
            let value = std::str::from_utf8(field.value).map_err(|_| bad_request("header value is not UTF-8"))?;
            let value = value.trim_matches([' ', '\t']);
            head.headers.push((span_of(buf, field.name.as_bytes()), span_of(buf, value.as_bytes())));
            let name = field.name;
            if name.eq_ignore_ascii_case("host") {
                hosts += 1;
            } else if name.eq_ignore_ascii_case("content-length") {
                content_length = Some(merge_content_length(content_length, value)?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                codings.add(value);
            } else if name.eq_ignore_ascii_case("connection") {
                for option in list_elements(value) {
                    close |= option.eq_ignore_ascii_case("close");
                    keep_alive |= option.eq_ignore_ascii_case("keep-alive");
                }
            } else if name.eq_ignore_ascii_case("expect") {
                expect_continue |= value.eq_ignore_ascii_case("100-continue");
            }
        }

        // RFC 9112 §3.2: 400 for a missing Host on 1.1 and for several on any version.
        if hosts > 1 || (minor_version == 1 && hosts == 0) {
            return Err(bad_request("missing or repeated Host"));
        }
        head.body = match (content_length, codings.present) {
            (Some(_), true) => return Err(bad_request("both Content-Length and Transfer-Encoding")),
            (None, true) if minor_version == 0 => return Err(bad_request("Transfer-Encoding on HTTP/1.0")),
            (None, true) => codings.body_kind()?,
            (Some(length), false) if length > self.limits.max_body => {
                return Err(HttpError::new(413, "Content-Length over the body limit"));
            }
            (Some(length), false) => BodyKind::Length(length),
            (None, false) => BodyKind::Length(0),
        };
        head.keep_alive = !close && (minor_version == 1 || keep_alive);
        head.expect_continue = expect_continue && minor_version == 1;
        Ok(Some(&self.head))
    }
}

/// Position of `part` in `buf`; `part` must be a sub-slice of `buf`, as every
/// slice httparse hands back is.
fn span_of(buf: &[u8], part: &[u8]) -> Span {
    let start = (part.as_ptr() as usize).saturating_sub(buf.as_ptr() as usize);
    start..start + part.len()
}

/// httparse knows only 1.0 and 1.1 and calls anything else a version error;
/// RFC 9110 §15.6.6 wants 505 for a well-formed version we do not support,
/// and garbage is still 400.
fn version_error(window: &[u8]) -> HttpError {
    let start = window.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(window.len());
    let line = &window[start..];
    let line = &line[..line.iter().position(|&b| b == b'\r' || b == b'\n').unwrap_or(line.len())];
    let version = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
    // `HTTP/` DIGIT "." DIGIT, or a prefix of it when the line is cut short.
    let well_formed = match version {
        [b'H', b'T', b'T', b'P', b'/', major, rest @ ..] if major.is_ascii_digit() => match rest {
            [] | [b'.'] => true,
            [b'.', minor] => minor.is_ascii_digit(),
            _ => false,
        },
        _ => false,
    };
    if well_formed { HttpError::new(505, "HTTP version not supported") } else { bad_request("malformed HTTP version") }
}

/// RFC 9112 §3.2: origin-form, absolute-form, or asterisk-form for OPTIONS.
/// Authority-form is only for CONNECT, which we do not serve.
fn is_valid_target(method: &str, target: &str) -> bool {
    let has_prefix = |prefix: &str| target.get(..prefix.len()).is_some_and(|p| p.eq_ignore_ascii_case(prefix));
    target.starts_with('/') || (target == "*" && method == "OPTIONS") || has_prefix("http://") || has_prefix("https://")
}

/// Elements of a comma-separated list (RFC 9110 §5.6.1), trimmed, empty ones
/// skipped as the RFC allows.
fn list_elements(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(|element| element.trim_matches([' ', '\t'])).filter(|element| !element.is_empty())
}

/// RFC 9110 §8.6: digits only; a list of identical values (or repeated
/// identical fields) is the same length, anything else is refused. A number
/// too large for u64 saturates, so it is refused as over `max_body` (413).
fn merge_content_length(previous: Option<u64>, value: &str) -> Result<u64, HttpError> {
    let mut merged = previous;
    // split() yields at least one element, so `merged` ends up Some.
    for element in value.split(',') {
        let element = element.trim_matches([' ', '\t']);
        if element.is_empty() || !element.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad_request("Content-Length is not a decimal number"));
        }
        let length =
            element.bytes().fold(0u64, |n, digit| n.saturating_mul(10).saturating_add(u64::from(digit - b'0')));
        if merged.is_some_and(|m| m != length) {
            return Err(bad_request("differing Content-Length values"));
        }
        merged = Some(length);
    }
    merged.ok_or(bad_request("Content-Length is not a decimal number"))
}

/// The transfer codings named by all `Transfer-Encoding` fields, in order.
#[derive(Default)]
struct Codings {
    present: bool,
    chunked: u32,
    other: bool,
    last_is_chunked: bool,
}

impl Codings {
    fn add(&mut self, value: &str) {
        self.present = true;
        for coding in list_elements(value) {
            self.last_is_chunked = coding.eq_ignore_ascii_case("chunked");
            if self.last_is_chunked {
                self.chunked += 1;
            } else {
                self.other = true;
            }
        }
    }

    /// We decode `chunked` and nothing else (RFC 9112 §6.1 allows 501 for
    /// codings we do not understand); chunked twice is malformed.
    fn body_kind(&self) -> Result<BodyKind, HttpError> {
        if self.other || (self.chunked > 0 && !self.last_is_chunked) {
            return Err(HttpError::new(501, "transfer coding other than chunked"));
        }
        match self.chunked {
            1 => Ok(BodyKind::Chunked),
            0 => Err(bad_request("empty Transfer-Encoding")),
            _ => Err(bad_request("chunked applied more than once")),
        }
    }
}

/// Hex digits (leading zeros included) allowed in a chunk size; 16 suffice
/// for any u64, the rest is slack for senders that pad.
const MAX_CHUNK_SIZE_DIGITS: u32 = 64;

/// Decodes a request body delimited by `Content-Length` or `chunked`.
///
/// Chunk extensions are checked (no control characters, no bare CR or LF)
/// and dropped; their total over the body is bounded by `max_head`.
/// Trailer fields are checked the same way (`name: value` with a token
/// name, no obs-fold) and dropped, also bounded by `max_head`. Line ends
/// must be CRLF: a bare LF is refused, not tolerated.
#[derive(Debug, Clone)]
pub struct BodyDecoder {
    state: DecodeState,
    received: u64,
    max_body: u64,
    /// Chunk extension and trailer bytes still allowed.
    metadata_budget: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DecodeState {
    /// `Content-Length` body: data bytes left.
    Length {
        remaining: u64,
    },
    /// Hex digits of a chunk size, accumulated so far.
    ChunkSize {
        size: u64,
        digits: u32,
    },
    /// After the size: whitespace, then `;` starts an extension.
    ChunkExtension {
        size: u64,
        started: bool,
    },
    /// Saw the CR ending the chunk-size line.
    ChunkSizeLf {
        size: u64,
    },
    ChunkData {
        remaining: u64,
    },
    /// CRLF after chunk data.
    ChunkDataCr,
    ChunkDataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    TrailerName,
    TrailerValue,
    /// Saw a CR; `empty` if it ended the empty line that ends the body.
    TrailerLf {
        empty: bool,
    },
    Done,
    /// Errors are sticky: every later call returns the same one.
    Failed(HttpError),
}

impl BodyDecoder {
    pub fn new(kind: BodyKind, limits: &Limits) -> Self {
        let state = match kind {
            BodyKind::Length(0) => DecodeState::Done,
            BodyKind::Length(length) if length > limits.max_body => {
                DecodeState::Failed(HttpError::new(413, "Content-Length over the body limit"))
            }
            BodyKind::Length(length) => DecodeState::Length { remaining: length },
            BodyKind::Chunked => DecodeState::ChunkSize { size: 0, digits: 0 },
        };
        BodyDecoder { state, received: 0, max_body: limits.max_body, metadata_budget: limits.max_head }
    }

    /// Decodes from the start of `input`: returns (bytes consumed, body data
    /// found). The data is a sub-slice of `input`: at most one contiguous
    /// run per call, so call again with what follows the consumed bytes.
    /// Framing bytes are consumed as far as they go, so `(0, empty)` means
    /// more input is needed, or [`is_done`](Self::is_done): the bytes after
    /// the body are never consumed.
    ///
    /// Errors (and every call after one): 400 for a bad chunk-size line,
    /// extension, trailer or missing CRLF; 413 for a body over `max_body`;
    /// 431 for extensions or trailers over `max_head`.
    pub fn decode<'a>(&mut self, input: &'a [u8]) -> Result<(usize, &'a [u8]), HttpError> {
        let mut pos = 0;
        loop {
            match self.state {
                DecodeState::Failed(error) => return Err(error),
                DecodeState::Done => return Ok((pos, &[])),
                DecodeState::Length { remaining } | DecodeState::ChunkData { remaining } => {
                    let available = input.len() - pos;
                    let take = usize::try_from(remaining).map_or(available, |r| r.min(available));
                    if take == 0 {
                        return Ok((pos, &[]));
                    }
                    let left = remaining - take as u64;
                    self.state = match self.state {
                        DecodeState::Length { .. } if left == 0 => DecodeState::Done,
                        DecodeState::Length { .. } => DecodeState::Length { remaining: left },
                        _ if left == 0 => DecodeState::ChunkDataCr,
                        _ => DecodeState::ChunkData { remaining: left },
                    };
                    self.received += take as u64;
                    return Ok((pos + take, &input[pos..pos + take]));
                }
                _ => {
                    let Some(&byte) = input.get(pos) else { return Ok((pos, &[])) };
                    pos += 1;
                    if let Err(error) = self.framing_byte(byte) {
                        self.state = DecodeState::Failed(error);
                        return Err(error);
                    }
                }
            }
        }
    }

    /// The whole body, and for chunked the last chunk and the trailers, has
    /// been consumed.
    pub fn is_done(&self) -> bool {
        self.state == DecodeState::Done
    }

    /// Body data bytes returned so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Advances the chunked framing by one byte (any state but data).
    fn framing_byte(&mut self, byte: u8) -> Result<(), HttpError> {
        use DecodeState::*;
        const BAD_SIZE: HttpError = bad_request("malformed chunk-size line");
        let was_metadata =
            matches!(self.state, ChunkExtension { .. } | TrailerStart | TrailerName | TrailerValue | TrailerLf { .. });
        let next = match self.state {
            ChunkSize { size, digits } => match byte {
                _ if byte.is_ascii_hexdigit() => {
                    if digits >= MAX_CHUNK_SIZE_DIGITS {
                        return Err(bad_request("chunk size too long"));
                    }
                    let digit = u64::from((byte as char).to_digit(16).unwrap_or(0));
                    let budget = self.max_body - self.received;
                    match size.checked_mul(16).and_then(|s| s.checked_add(digit)) {
                        Some(size) if size <= budget => ChunkSize { size, digits: digits + 1 },
                        _ => return Err(HttpError::new(413, "chunked body over the body limit")),
                    }
                }
                _ if digits == 0 => return Err(BAD_SIZE),
                b'\r' => ChunkSizeLf { size },
                b';' => ChunkExtension { size, started: true },
                b' ' | b'\t' => ChunkExtension { size, started: false },
                _ => return Err(BAD_SIZE),
            },
            ChunkExtension { size, started } => match byte {
                b'\r' => ChunkSizeLf { size },
                b' ' | b'\t' if !started => ChunkExtension { size, started },
                b';' if !started => ChunkExtension { size, started: true },
                _ if !started || is_control(byte) => return Err(bad_request("malformed chunk extension")),
                _ => ChunkExtension { size, started },
            },
            ChunkSizeLf { size } => match byte {
                b'\n' if size == 0 => TrailerStart,
                b'\n' => ChunkData { remaining: size },
                _ => return Err(BAD_SIZE),
            },
            ChunkDataCr if byte == b'\r' => ChunkDataLf,
            ChunkDataLf if byte == b'\n' => ChunkSize { size: 0, digits: 0 },
            ChunkDataCr | ChunkDataLf => return Err(bad_request("chunk data not followed by CRLF")),
            TrailerStart => match byte {
                b'\r' => TrailerLf { empty: true },
                _ if is_token(byte) => TrailerName,
                _ => return Err(bad_request("malformed trailer field")),
            },
            TrailerName => match byte {
                b':' => TrailerValue,
                _ if is_token(byte) => TrailerName,
                _ => return Err(bad_request("malformed trailer field")),
            },
            TrailerValue => match byte {
                b'\r' => TrailerLf { empty: false },
                _ if is_control(byte) => return Err(bad_request("malformed trailer field")),
                _ => TrailerValue,
            },
            TrailerLf { empty } => match byte {
                b'\n' if empty => Done,
                b'\n' => TrailerStart,
                _ => return Err(bad_request("bare CR in trailer section")),
            },
            // decode() handles these without calling here.
            Length { .. } | ChunkData { .. } | Done | Failed(_) => self.state,
        };
        // Extensions and trailers are dropped, so only a budget stops a
        // sender from making us read them forever. Counted: an extension
        // from the `;` or whitespace after the size through the CR, and the
        // trailer section through its final CRLF.
        if was_metadata || matches!(next, ChunkExtension { .. }) {
            self.metadata_budget = self
                .metadata_budget
                .checked_sub(1)
                .ok_or(HttpError::new(431, "chunk extensions or trailers too large"))?;
        }
        self.state = next;
        Ok(())
    }
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

/// `now` as an IMF-fixdate (RFC 9110 §5.6.7), e.g.
/// `Sun, 06 Nov 1994 08:49:37 GMT`. Times before 1970 give the epoch and
/// times after 9999 give the last second of 9999: the format has no room
/// for more, and a clock that far off is wrong anyway.
pub fn http_date(now: SystemTime) -> [u8; 29] {
    const LAST_SECOND_OF_9999: u64 = 253_402_300_799;
    const WEEKDAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] =
        [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];

    let seconds = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()).min(LAST_SECOND_OF_9999);
    let days = seconds / 86_400;
    let second_of_day = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);

    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[..3].copy_from_slice(WEEKDAYS[(days % 7) as usize]);
    put_two_digits(&mut out[5..7], day);
    out[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    put_two_digits(&mut out[12..14], year / 100);
    put_two_digits(&mut out[14..16], year % 100);
    put_two_digits(&mut out[17..19], second_of_day / 3600);
    put_two_digits(&mut out[20..22], second_of_day / 60 % 60);
    put_two_digits(&mut out[23..25], second_of_day % 60);
    out
}

fn put_two_digits(out: &mut [u8], n: u64) {
    out[0] = b'0' + (n / 10 % 10) as u8;
    out[1] = b'0' + (n % 10) as u8;
}

/// (year, month 1..=12, day 1..=31) of a day count since 1970-01-01, by
/// Howard Hinnant's `civil_from_days`: the year is counted from March so the
/// leap day falls last, in eras of 400 years.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let shifted = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn parse(buf: &[u8]) -> Result<Option<Head>, HttpError> {
        HeadParser::new(Limits::default()).parse(buf).map(|head| head.cloned())
    }

    fn parse_ok(buf: &[u8]) -> Head {
        match parse(buf) {
            Ok(Some(head)) => head,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    fn status_of(buf: &[u8]) -> u16 {
        match parse(buf) {
            Err(error) => error.status,
            other => panic!("{:?} was not refused: {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    /// A 1.1 request with a Host and the given extra header lines.
    fn request_with(extra: &str) -> Vec<u8> {
        format!("POST /upload HTTP/1.1\r\nHost: example.com\r\n{extra}\r\n").into_bytes()
    }

    const GET: &[u8] = b"GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\nAccept:  text/html \r\nX-Empty:\r\n\r\n";

    #[test]
    fn parses_a_get_head_with_spans_into_the_buffer() {
        let head = parse_ok(GET);
        assert_eq!(head.str(GET, &head.method), "GET");
        assert_eq!(head.str(GET, &head.target), "/index.html?q=1");
        assert_eq!(head.minor_version, 1);
        assert_eq!(head.len, GET.len());
        assert_eq!(head.body, BodyKind::Length(0));
        assert!(head.keep_alive && !head.expect_continue && !head.is_head);
        let fields: Vec<_> = head.headers(GET).collect();
        assert_eq!(fields, [("Host", "example.com"), ("Accept", "text/html"), ("X-Empty", "")]);
    }

    #[test]
    fn header_lookup_is_case_insensitive_and_returns_the_first() {
        let buf = request_with("x-tag: one\r\nX-TAG: two\r\n");
        let head = parse_ok(&buf);
        assert_eq!(head.header(&buf, "X-Tag"), Some("one"));
        assert_eq!(head.header(&buf, "HOST"), Some("example.com"));
        assert_eq!(head.header(&buf, "missing"), None);
    }

    #[test]
    fn str_of_a_foreign_buffer_is_empty_not_a_panic() {
        let head = parse_ok(GET);
        assert_eq!(head.str(b"GE", &head.target), "");
        assert_eq!(head.str(b"\xff\xff\xff", &head.method), "");
    }

    #[test]
    fn every_proper_prefix_is_incomplete() {
        for end in 0..GET.len() {
            assert_eq!(parse(&GET[..end]), Ok(None), "prefix of {end} bytes");
        }
    }

    #[test]
    fn leading_empty_lines_are_skipped_and_counted() {
        let buf = [b"\r\n\r\n".as_slice(), GET].concat();
        let head = parse_ok(&buf);
        assert_eq!(head.len, buf.len());
        assert_eq!(head.str(&buf, &head.method), "GET");
        assert_eq!(head.method, 4..7);
    }

    #[test]
    fn pipelined_heads_parse_one_after_another() {
        let second = b"HEAD /b HTTP/1.1\r\nHost: h\r\n\r\n";
        let buf = [GET, second.as_slice(), b"GET /c"].concat();
        let mut parser = HeadParser::new(Limits::default());
        let first_len = parser.parse(&buf).unwrap().unwrap().len;
        assert_eq!(first_len, GET.len());
        let rest = &buf[first_len..];
        let head = parser.parse(rest).unwrap().unwrap();
        assert_eq!((head.str(rest, &head.target), head.len, head.is_head), ("/b", second.len(), true));
        assert_eq!(parser.parse(&rest[second.len()..]), Ok(None));
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_options() {
        let keep_alive = |buf: &[u8]| parse_ok(buf).keep_alive;
        assert!(keep_alive(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
        assert!(!keep_alive(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"));
        assert!(!keep_alive(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Keep-Alive, CLOSE\r\n\r\n"));
        assert!(keep_alive(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\n\r\n"));
        assert!(!keep_alive(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(keep_alive(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
        assert!(keep_alive(b"GET / HTTP/1.0\r\nConnection: te, keep-alive\r\n\r\n"));
        assert!(!keep_alive(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n"));
    }

    #[test]
    fn http_1_0_needs_no_host() {
        let head = parse_ok(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(head.minor_version, 0);
    }

    #[test]
    fn expect_100_continue_is_seen_on_1_1_only() {
        assert!(parse_ok(&request_with("Expect: 100-Continue\r\nContent-Length: 5\r\n")).expect_continue);
        assert!(!parse_ok(&request_with("Expect: something-else\r\n")).expect_continue);
        assert!(!parse_ok(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").expect_continue);
    }

    #[test]
    fn head_method_is_flagged() {
        assert!(parse_ok(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n").is_head);
        assert!(!parse_ok(b"head / HTTP/1.1\r\nHost: h\r\n\r\n").is_head, "methods are case-sensitive");
    }

    #[test]
    fn body_framing_comes_from_content_length_or_chunked() {
        assert_eq!(parse_ok(&request_with("Content-Length: 42\r\n")).body, BodyKind::Length(42));
        assert_eq!(parse_ok(&request_with("Content-Length: 007\r\n")).body, BodyKind::Length(7));
        assert_eq!(parse_ok(&request_with("Content-Length: 5, 5\r\n")).body, BodyKind::Length(5));
        assert_eq!(parse_ok(&request_with("Content-Length: 5\r\ncontent-length: 5\r\n")).body, BodyKind::Length(5));
        assert_eq!(parse_ok(&request_with("Transfer-Encoding: Chunked\r\n")).body, BodyKind::Chunked);
        assert_eq!(parse_ok(&request_with("Transfer-Encoding: ,chunked,\r\n")).body, BodyKind::Chunked);
    }

    #[test]
    fn target_forms() {
        assert_eq!(parse_ok(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n").target, 8..9);
        parse_ok(b"GET http://example.com/a HTTP/1.1\r\nHost: example.com\r\n\r\n");
        parse_ok(b"GET HTTPS://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n");
        assert_eq!(status_of(b"GET * HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
        assert_eq!(status_of(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n"), 400);
        assert_eq!(status_of(b"GET index.html HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
        assert_eq!(status_of(b"GET ftp://example.com/ HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    }

    #[test]
    fn malformed_syntax_is_400() {
        for buf in [
            b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n".as_slice(),
            b"GET /\r\nHost: h\r\n\r\n",
            b" / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : h\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nX-Folded: a\r\n b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nNo-Colon\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\x01\r\n\r\n",
            b"GET / HTTP/1.1\rHost: h\r\n\r\n",
            b"GET / FOO/1.1\r\nHost: h\r\n\r\n",
            b"GET / HTTP/1.1x\r\nHost: h\r\n\r\n",
            b"GET / HTTP/10.0\r\nHost: h\r\n\r\n",
        ] {
            assert_eq!(status_of(buf), 400, "{:?}", String::from_utf8_lossy(buf));
        }
    }

    #[test]
    fn header_value_not_utf8_is_400() {
        assert_eq!(status_of(b"GET / HTTP/1.1\r\nHost: h\r\nX-Name: caf\xe9\r\n\r\n"), 400);
        assert_eq!(parse_ok("GET / HTTP/1.1\r\nHost: h\r\nX-Name: café\r\n\r\n".as_bytes()).headers.len(), 2);
    }

    #[test]
    fn unsupported_version_is_505() {
        assert_eq!(status_of(b"GET / HTTP/2.0\r\nHost: h\r\n\r\n"), 505);
        assert_eq!(status_of(b"GET / HTTP/1.2\r\nHost: h\r\n\r\n"), 505);
        assert_eq!(status_of(b"GET / HTTP/0.9\r\n\r\n"), 505);
        // Detected before the line is complete.
        assert_eq!(status_of(b"GET / HTTP/3"), 505);
    }

    #[test]
    fn http_1_1_needs_exactly_one_host() {
        assert_eq!(status_of(b"GET / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status_of(b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"), 400);
        assert_eq!(status_of(b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n"), 400);
    }

    #[test]
    fn ambiguous_content_length_is_400() {
        for extra in [
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
            "Content-Length: 12a\r\n",
            "Content-Length: +5\r\n",
            "Content-Length: -1\r\n",
            "Content-Length: 0x10\r\n",
            "Content-Length: 1 2\r\n",
            "Content-Length:\r\n",
            "Content-Length: 5,\r\n",
            "Content-Length: 5, 6\r\n",
            "Content-Length: 5\r\nContent-Length: 6\r\n",
        ] {
            assert_eq!(status_of(&request_with(extra)), 400, "{extra:?}");
        }
    }

    #[test]
    fn transfer_codings_other_than_chunked_are_501() {
        for extra in [
            "Transfer-Encoding: gzip, chunked\r\n",
            "Transfer-Encoding: chunked, gzip\r\n",
            "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: identity\r\n",
            "Transfer-Encoding: chunked;q=1\r\n",
        ] {
            assert_eq!(status_of(&request_with(extra)), 501, "{extra:?}");
        }
    }

    #[test]
    fn malformed_transfer_encoding_is_400() {
        assert_eq!(status_of(&request_with("Transfer-Encoding: chunked, chunked\r\n")), 400);
        assert_eq!(status_of(&request_with("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n")), 400);
        assert_eq!(status_of(&request_with("Transfer-Encoding:\r\n")), 400);
        assert_eq!(status_of(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
    }

    #[test]
    fn content_length_is_413_one_over_the_limit() {
        let limits = Limits { max_body: 100, ..Limits::default() };
        let mut parser = HeadParser::new(limits);
        let at = request_with("Content-Length: 100\r\n");
        assert_eq!(parser.parse(&at).unwrap().unwrap().body, BodyKind::Length(100));
        assert_eq!(parser.parse(&request_with("Content-Length: 101\r\n")).unwrap_err().status, 413);
        let huge = request_with("Content-Length: 99999999999999999999999999\r\n");
        assert_eq!(parser.parse(&huge).unwrap_err().status, 413);
    }

    #[test]
    fn head_is_431_one_byte_over_max_head() {
        let max_head = GET.len();
        let mut parser = HeadParser::new(Limits { max_head, ..Limits::default() });
        assert_eq!(parser.parse(GET).unwrap().unwrap().len, max_head);
        // Whatever follows a head that fits does not count.
        assert!(parser.parse(&[GET, b"GET / HTTP/1.1\r\n"].concat()).unwrap().is_some());
        let longer = [b"\r\n", GET].concat();
        assert_eq!(parser.parse(&longer).unwrap_err().status, 431);
        // Incomplete: read more while under the limit, refuse at it.
        assert_eq!(parser.parse(&GET[..max_head - 1]), Ok(None));
        let cut = [&GET[..GET.len() - 2], b"X-"].concat();
        assert_eq!(parser.parse(&cut).unwrap_err().status, 431);
    }

    #[test]
    fn endless_empty_lines_hit_the_head_limit() {
        let mut parser = HeadParser::new(Limits { max_head: 64, ..Limits::default() });
        assert_eq!(parser.parse(&b"\r\n".repeat(31)), Ok(None));
        assert_eq!(parser.parse(&b"\r\n".repeat(32)).unwrap_err().status, 431);
    }

    #[test]
    fn header_count_is_431_one_over_max_headers() {
        let mut parser = HeadParser::new(Limits { max_headers: 3, ..Limits::default() });
        let three = request_with("A: 1\r\nB: 2\r\n");
        assert_eq!(parser.parse(&three).unwrap().unwrap().headers.len(), 3);
        assert_eq!(parser.parse(&request_with("A: 1\r\nB: 2\r\nC: 3\r\n")).unwrap_err().status, 431);
    }

    #[test]
    fn max_headers_above_the_slots_acts_as_the_slots() {
        let mut parser = HeadParser::new(Limits { max_headers: 10_000, ..Limits::default() });
        let fields = |n: usize| (1..n).map(|i| format!("X-{i}: v\r\n")).collect::<String>();
        assert!(parser.parse(&request_with(&fields(HEADER_SLOTS))).unwrap().is_some());
        assert_eq!(parser.parse(&request_with(&fields(HEADER_SLOTS + 1))).unwrap_err().status, 431);
    }

    #[test]
    fn parser_reuses_its_header_vec() {
        let mut parser = HeadParser::new(Limits::default());
        let capacity = parser.parse(&request_with("A: 1\r\nB: 2\r\n")).unwrap().unwrap().headers.capacity();
        let head = parser.parse(GET).unwrap().unwrap();
        assert_eq!((head.headers.len(), head.headers.capacity()), (3, capacity));
    }

    #[test]
    fn error_response_bytes() {
        let mut out = Vec::new();
        HttpError::new(431, "too many header fields").write_response(&mut out, b"Sun, 06 Nov 1994 08:49:37 GMT");
        let expected = "HTTP/1.1 431 Request Header Fields Too Large\r\n\
            Content-Type: text/plain; charset=utf-8\r\n\
            Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
            Content-Length: 23\r\n\
            Connection: close\r\n\
            \r\n\
            too many header fields\n";
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    // ---- body decoding ----

    fn limits(max_body: u64, max_head: usize) -> Limits {
        Limits { max_head, max_headers: 64, max_body }
    }

    /// Feeds `pieces` as a server would: the buffer grows by one piece,
    /// consumed bytes are removed. Returns the body and the bytes left over.
    fn decode_pieces(kind: BodyKind, limits: &Limits, pieces: &[&[u8]]) -> Result<(Vec<u8>, Vec<u8>), HttpError> {
        let mut decoder = BodyDecoder::new(kind, limits);
        let (mut buffer, mut body) = (Vec::new(), Vec::new());
        for piece in pieces {
            buffer.extend_from_slice(piece);
            loop {
                let (consumed, data) = decoder.decode(&buffer)?;
                assert!(consumed <= buffer.len() && data.len() <= consumed);
                body.extend_from_slice(data);
                buffer.drain(..consumed);
                if consumed == 0 {
                    break;
                }
            }
            assert!(decoder.is_done() || buffer.is_empty(), "framing bytes left unconsumed");
        }
        assert_eq!(decoder.received(), body.len() as u64);
        if !decoder.is_done() {
            return Err(HttpError::new(0, "incomplete"));
        }
        Ok((body, buffer))
    }

    /// The same input split at every position, at every pair of positions,
    /// and byte by byte, must decode the same.
    fn decode_every_split(kind: BodyKind, limits: &Limits, input: &[u8]) -> Result<(Vec<u8>, Vec<u8>), HttpError> {
        let whole = decode_pieces(kind, limits, &[input]);
        for i in 0..=input.len() {
            assert_eq!(decode_pieces(kind, limits, &[&input[..i], &input[i..]]), whole, "split at {i}");
            for j in i..=input.len() {
                let pieces = [&input[..i], &input[i..j], &input[j..]];
                assert_eq!(decode_pieces(kind, limits, &pieces), whole, "split at {i} and {j}");
            }
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(decode_pieces(kind, limits, &bytes), whole, "byte by byte");
        whole
    }

    fn ok(body: &[u8], rest: &[u8]) -> Result<(Vec<u8>, Vec<u8>), HttpError> {
        Ok((body.to_vec(), rest.to_vec()))
    }

    #[test]
    fn content_length_body_stops_at_its_length() {
        let limits = Limits::default();
        let decoded = decode_every_split(BodyKind::Length(11), &limits, b"hello worldGET / HTTP/1.1\r\n");
        assert_eq!(decoded, ok(b"hello world", b"GET / HTTP/1.1\r\n"));
    }

    #[test]
    fn zero_length_body_is_done_at_once() {
        let mut decoder = BodyDecoder::new(BodyKind::Length(0), &Limits::default());
        assert!(decoder.is_done());
        assert_eq!(decoder.decode(b"GET"), Ok((0, b"".as_slice())));
    }

    #[test]
    fn decode_returns_one_run_that_is_a_sub_slice_of_the_input() {
        let input = b"4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n";
        let mut decoder = BodyDecoder::new(BodyKind::Chunked, &Limits::default());
        let (consumed, data) = decoder.decode(input).unwrap();
        assert_eq!((consumed, data), (7, b"Wiki".as_slice()));
        assert!(std::ptr::eq(data, &input[3..7]));
        assert_eq!(decoder.decode(&input[7..]).unwrap(), (10, b"pedia".as_slice()));
        assert_eq!(decoder.decode(&input[17..]).unwrap(), (7, b"".as_slice()));
        assert!(decoder.is_done());
        assert_eq!(decoder.received(), 9);
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers() {
        let input = b"4;name=value\r\nWiki\r\n5 ; a ; b=\"x;y\"\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n\
            000\r\nExpires: never\r\nX-Trailer:\r\n\r\nNEXT";
        let decoded = decode_every_split(BodyKind::Chunked, &Limits::default(), input);
        assert_eq!(decoded, ok(b"Wikipedia in\r\n\r\nchunks.", b"NEXT"));
    }

    #[test]
    fn empty_chunked_body() {
        assert_eq!(decode_every_split(BodyKind::Chunked, &Limits::default(), b"0\r\n\r\n"), ok(b"", b""));
    }

    #[test]
    fn chunked_body_exactly_at_max_body_and_one_over() {
        let input = b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(decode_every_split(BodyKind::Chunked, &limits(5, 1024), input), ok(b"abcde", b""));
        let over = decode_every_split(BodyKind::Chunked, &limits(4, 1024), input);
        assert_eq!(over.unwrap_err().status, 413);
    }

    #[test]
    fn chunk_size_overflow_is_413() {
        let input = b"10000000000000000\r\n";
        assert_eq!(decode_pieces(BodyKind::Chunked, &limits(u64::MAX, 1024), &[input]).unwrap_err().status, 413);
    }

    #[test]
    fn chunk_size_digits_are_bounded() {
        let at = format!("{}1\r\nx\r\n0\r\n\r\n", "0".repeat(63));
        assert_eq!(decode_pieces(BodyKind::Chunked, &Limits::default(), &[at.as_bytes()]), ok(b"x", b""));
        let over = format!("{}1\r\nx\r\n0\r\n\r\n", "0".repeat(64));
        assert_eq!(decode_pieces(BodyKind::Chunked, &Limits::default(), &[over.as_bytes()]).unwrap_err().status, 400);
    }

    #[test]
    fn malformed_chunked_framing_is_400() {
        for input in [
            b"\r\n".as_slice(),
            b"x\r\n",
            b";ext\r\n",
            b" 4\r\nWiki\r\n0\r\n\r\n",
            b"4\nWiki\r\n0\r\n\r\n",
            b"4\r\nWikiX\r\n0\r\n\r\n",
            b"4\r\nWiki\n0\r\n\r\n",
            b"4\r\nWiki\r\n0\n\r\n",
            b"4\r\nWiki\r\n0\r\n\n",
            b"4 x\r\nWiki\r\n0\r\n\r\n",
            b"4;a\x01\r\nWiki\r\n0\r\n\r\n",
            b"4;a\nWiki\r\n0\r\n\r\n",
            b"4\r\r\nWiki\r\n0\r\n\r\n",
            b"-4\r\nWiki\r\n0\r\n\r\n",
            b"0\r\nNo-Colon\r\n\r\n",
            b"0\r\n Folded: x\r\n\r\n",
            b"0\r\nBad Name: x\r\n\r\n",
            b"0\r\nX: a\x00b\r\n\r\n",
            b"0\r\nX: a\rb\r\n\r\n",
        ] {
            let result = decode_pieces(BodyKind::Chunked, &Limits::default(), &[input]);
            assert_eq!(result.map_err(|e| e.status), Err(400), "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn errors_are_sticky() {
        let mut decoder = BodyDecoder::new(BodyKind::Chunked, &Limits::default());
        let error = decoder.decode(b"zz").unwrap_err();
        assert_eq!(decoder.decode(b"4\r\nWiki\r\n"), Err(error));
        assert!(!decoder.is_done());
    }

    #[test]
    fn content_length_over_max_body_fails_in_the_decoder_too() {
        let mut decoder = BodyDecoder::new(BodyKind::Length(6), &limits(5, 1024));
        assert_eq!(decoder.decode(b"abcdef").unwrap_err().status, 413);
    }

    #[test]
    fn trailers_are_bounded_by_max_head() {
        // Budget counts every trailer byte, the final CRLF included.
        let input = b"0\r\nA: 1\r\n\r\n";
        let trailer_bytes = input.len() - 3;
        assert_eq!(decode_pieces(BodyKind::Chunked, &limits(10, trailer_bytes), &[input]), ok(b"", b""));
        let over = decode_pieces(BodyKind::Chunked, &limits(10, trailer_bytes - 1), &[input]);
        assert_eq!(over.unwrap_err().status, 431);
    }

    #[test]
    fn chunk_extensions_are_bounded_by_max_head_over_the_whole_body() {
        // Each ";e\r" after the size counts 3 bytes: 2 chunks x 3 = 6.
        let input = b"1;e\r\na\r\n1;e\r\nb\r\n0\r\n\r\n";
        assert_eq!(decode_pieces(BodyKind::Chunked, &limits(10, 6 + 2), &[input]), ok(b"ab", b""));
        let over = decode_pieces(BodyKind::Chunked, &limits(10, 6 + 1), &[input]);
        assert_eq!(over.unwrap_err().status, 431);
    }

    // ---- responses ----

    const DATE: &[u8] = b"Sun, 06 Nov 1994 08:49:37 GMT";

    fn head_bytes(status: u16, headers: &[(&str, &str)], framing: Framing, close: bool) -> String {
        let mut out = b"leading ".to_vec();
        write_head(&mut out, status, headers.iter().copied(), framing, close, DATE);
        let text = String::from_utf8(out).unwrap();
        text.strip_prefix("leading ").expect("write_head appends").to_string()
    }

    #[test]
    fn response_head_with_content_length() {
        let text = head_bytes(200, &[("Content-Type", "text/plain"), ("X-A", "b")], Framing::Length(12), false);
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-A: b\r\n\
             Date: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 12\r\n\r\n"
        );
    }

    #[test]
    fn response_head_chunked_and_closing() {
        let text = head_bytes(404, &[], Framing::Chunked, true);
        assert_eq!(
            text,
            "HTTP/1.1 404 Not Found\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn response_head_until_close_says_close() {
        let text = head_bytes(200, &[], Framing::UntilClose, false);
        assert_eq!(text, "HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nConnection: close\r\n\r\n");
    }

    #[test]
    fn response_head_without_body_has_no_framing() {
        for status in [101, 204, 304] {
            let text = head_bytes(status, &[], Framing::Length(5), false);
            let expected = format!(
                "HTTP/1.1 {status} {}\r\nDate: {}\r\n\r\n",
                reason_phrase(status),
                "Sun, 06 Nov 1994 08:49:37 GMT"
            );
            assert_eq!(text, expected);
            assert!(!head_bytes(status, &[], Framing::Chunked, false).contains("Transfer-Encoding"));
            assert!(!head_bytes(status, &[], Framing::UntilClose, false).contains("Connection"));
        }
        assert_eq!(head_bytes(299, &[], Framing::Length(0), false).lines().next(), Some("HTTP/1.1 299 "));
        assert!(
            head_bytes(200, &[], Framing::Length(u64::MAX), false).contains("Content-Length: 18446744073709551615\r\n")
        );
    }

    #[test]
    fn reason_phrases_and_bodies() {
        assert_eq!(reason_phrase(200), "OK");
        assert_eq!(reason_phrase(413), "Content Too Large");
        assert_eq!(reason_phrase(505), "HTTP Version Not Supported");
        assert_eq!(reason_phrase(299), "");
        assert!(status_allows_body(200) && status_allows_body(404) && status_allows_body(205));
        assert!(!status_allows_body(100) && !status_allows_body(199) && !status_allows_body(204));
        assert!(!status_allows_body(304));
    }

    #[test]
    fn check_header_refuses_bad_names_values_and_host_owned_fields() {
        assert_eq!(check_header("Content-Type", "text/html; charset=utf-8"), Ok(()));
        assert_eq!(check_header("x-weird!#$%&'*+-.^_`|~", "\tany\u{7f} text é"), Ok(()));
        for name in ["", "Bad Name", "Bad:Name", "Bad\rName", "Naïve", "(x)"] {
            assert_eq!(check_header(name, "v"), Err("header name is not a token"), "{name:?}");
        }
        for value in ["a\r\nSet-Cookie: x", "a\nb", "a\rb", "a\0b"] {
            assert_eq!(check_header("X", value), Err("header value contains CR, LF or NUL"), "{value:?}");
        }
        for name in ["Content-Length", "transfer-encoding", "CONNECTION", "Upgrade", "date", "Keep-Alive"] {
            assert_eq!(check_header(name, "x"), Err("header is set by the host"), "{name:?}");
        }
    }

    #[test]
    fn chunk_headers() {
        let mut buf = [0; 18];
        assert_eq!(chunk_header(&mut buf, 0), b"0\r\n");
        assert_eq!(chunk_header(&mut buf, 1), b"1\r\n");
        assert_eq!(chunk_header(&mut buf, 0xfff), b"fff\r\n");
        assert_eq!(chunk_header(&mut buf, 0x1000), b"1000\r\n");
        assert_eq!(chunk_header(&mut buf, usize::MAX), b"ffffffffffffffff\r\n");
    }

    #[test]
    fn constants() {
        assert_eq!(LAST_CHUNK, b"0\r\n\r\n");
        assert_eq!(CHUNK_END, b"\r\n");
        assert_eq!(CONTINUE, b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn a_chunked_response_decodes_back() {
        let mut body = Vec::new();
        let mut buf = [0; 18];
        for piece in [b"Wiki".as_slice(), b"pedia in chunks"] {
            body.extend_from_slice(chunk_header(&mut buf, piece.len()));
            body.extend_from_slice(piece);
            body.extend_from_slice(CHUNK_END);
        }
        body.extend_from_slice(LAST_CHUNK);
        let decoded = decode_pieces(BodyKind::Chunked, &Limits::default(), &[&body]);
        assert_eq!(decoded, ok(b"Wikipedia in chunks", b""));
    }

    fn date_at(seconds: u64) -> String {
        String::from_utf8(http_date(UNIX_EPOCH + Duration::from_secs(seconds)).to_vec()).unwrap()
    }

    #[test]
    fn http_dates() {
        assert_eq!(date_at(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(date_at(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(date_at(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(date_at(951_868_799), "Tue, 29 Feb 2000 23:59:59 GMT");
        assert_eq!(date_at(1_709_251_199), "Thu, 29 Feb 2024 23:59:59 GMT");
        assert_eq!(date_at(4_107_542_400), "Mon, 01 Mar 2100 00:00:00 GMT");
        assert_eq!(date_at(253_402_300_799), "Fri, 31 Dec 9999 23:59:59 GMT");
        assert_eq!(date_at(u64::MAX / 2), "Fri, 31 Dec 9999 23:59:59 GMT");
        assert_eq!(http_date(UNIX_EPOCH - Duration::from_secs(1)), *b"Thu, 01 Jan 1970 00:00:00 GMT");
    }

    #[test]
    fn http_date_agrees_with_day_by_day_counting() {
        // Every day from 1970 to 2100 against a plain calendar walk.
        let (mut year, mut month, mut day) = (1970u64, 1u64, 1u64);
        for days in 0..47_482u64 {
            assert_eq!(civil_from_days(days), (year, month, day), "day {days}");
            let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
            let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
            day += 1;
            if day > month_days[(month - 1) as usize] {
                (day, month) = (1, month + 1);
                if month > 12 {
                    (month, year) = (1, year + 1);
                }
            }
        }
    }
}
