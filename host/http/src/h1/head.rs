//! Request heads: [`HeadParser`] wraps `httparse` and adds the framing
//! rules it leaves out (`Content-Length` against `Transfer-Encoding`,
//! `Host`, keep-alive, `Expect`) and the limits.

use super::{BodyKind, HEADER_SLOTS, HttpError, Limits, Span, bad_request};

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
