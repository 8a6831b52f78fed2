//! WebSocket (RFC 6455), server side, sans-IO: the opening handshake, a frame
//! decoder for client frames and an encoder for server frame headers.
//!
//! Hand-written rather than tungstenite: tungstenite owns a `Read + Write`
//! stream and buffers and copies on its own, while our loop reads into one
//! shared buffer and writes payloads straight from guest memory. So the
//! decoder unmasks in place in the caller's buffer and the encoder only
//! produces frame headers.
//!
//! The server's side of a connection, in order:
//! 1. [`check_upgrade`] on the parsed request head; on `Ok(Some(upgrade))`,
//!    [`write_accept`] (with a protocol from [`Upgrade::offers`], if any);
//!    on `Err`, answer with the error's status.
//! 2. For every read, append to the connection's buffer and call
//!    [`Decoder::decode`] until it consumes nothing; drop consumed bytes.
//!    A [`CloseError`] means: send a close frame with its code, then close.
//! 3. To send, write [`frame_header`] then the payload (unmasked: RFC 6455
//!    §5.1 forbids masking server frames).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::{Digest as _, Sha1};

/// The GUID the server appends to the client's key (RFC 6455 §1.3).
pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// How many `Sec-WebSocket-Protocol` header lines a request may carry. Each
/// line is a comma list, so this bounds lines, not protocols; real clients
/// send one line.
const MAX_PROTOCOL_HEADERS: usize = 8;

/// A valid opening handshake request (RFC 6455 §4.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upgrade<'a> {
    /// `Sec-WebSocket-Key`, whitespace trimmed: base64 of 16 bytes.
    pub key: &'a str,
    /// The raw `Sec-WebSocket-Protocol` values, one per header line; only the
    /// first `protocol_header_count` are set.
    protocol_headers: [&'a str; MAX_PROTOCOL_HEADERS],
    protocol_header_count: usize,
}

impl<'a> Upgrade<'a> {
    /// Every protocol the client offers, in order, across all
    /// `Sec-WebSocket-Protocol` header lines.
    pub fn protocols(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.protocol_headers[..self.protocol_header_count]
            .iter()
            .flat_map(|value| value.split(','))
            .map(trim_whitespace)
            .filter(|protocol| !protocol.is_empty())
    }

    /// Whether the client offers `protocol` (exact, case-sensitive match, as
    /// RFC 6455 §4.1 makes subprotocol names).
    pub fn offers(&self, protocol: &str) -> bool {
        self.protocols().any(|offered| offered == protocol)
    }
}

/// Why an upgrade attempt is refused: the HTTP status to answer (400, or 426
/// for an unsupported `Sec-WebSocket-Version`, whose response must then
/// carry `Sec-WebSocket-Version: 13`) and a reason for the body or the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpgradeError {
    pub status: u16,
    pub reason: &'static str,
}

const fn bad_request(reason: &'static str) -> UpgradeError {
    UpgradeError { status: 400, reason }
}

/// Checks a request head for a WebSocket upgrade (RFC 6455 §4.2.1).
///
/// `Ok(None)`: not an upgrade attempt (no `Upgrade` header naming
/// `websocket`); serve it as plain HTTP. `Err`: an attempt that is invalid:
/// 400 for a method other than GET, HTTP/1.0 (`minor_version` 0), a
/// `Connection` header without the `upgrade` token, a missing, repeated or
/// malformed `Sec-WebSocket-Key`, or more than 8 `Sec-WebSocket-Protocol`
/// lines; 426 for a `Sec-WebSocket-Version` that is missing or not 13.
pub fn check_upgrade<'a>(
    method: &str,
    minor_version: u8,
    headers: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<Option<Upgrade<'a>>, UpgradeError> {
    let mut wants_websocket = false;
    let mut connection_upgrade = false;
    let mut key = None;
    let mut key_repeated = false;
    let mut version_seen = false;
    let mut version_13 = true;
    let mut protocol_headers = [""; MAX_PROTOCOL_HEADERS];
    let mut protocol_header_count = 0;
    let mut too_many_protocol_headers = false;

    for (name, value) in headers {
        if name.eq_ignore_ascii_case("upgrade") {
            wants_websocket |= has_token(value, "websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            connection_upgrade |= has_token(value, "upgrade");
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            key_repeated |= key.is_some();
            key = Some(trim_whitespace(value));
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            version_seen = true;
            version_13 &= trim_whitespace(value) == "13";
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            match protocol_headers.get_mut(protocol_header_count) {
                Some(slot) => {
                    *slot = value;
                    protocol_header_count += 1;
                }
                None => too_many_protocol_headers = true,
            }
        }
    }

    if !wants_websocket {
        return Ok(None);
    }
    if method != "GET" {
        return Err(bad_request("a WebSocket upgrade must be a GET request"));
    }
    if minor_version == 0 {
        return Err(bad_request("a WebSocket upgrade needs HTTP/1.1"));
    }
    if !connection_upgrade {
        return Err(bad_request("a WebSocket upgrade needs `Connection: Upgrade`"));
    }
    if !(version_seen && version_13) {
        return Err(UpgradeError { status: 426, reason: "only Sec-WebSocket-Version 13 is supported" });
    }
    if key_repeated {
        return Err(bad_request("Sec-WebSocket-Key is repeated"));
    }
    let Some(key) = key else {
        return Err(bad_request("Sec-WebSocket-Key is missing"));
    };
    if !is_valid_key(key) {
        return Err(bad_request("Sec-WebSocket-Key is not base64 of 16 bytes"));
    }
    if too_many_protocol_headers {
        return Err(bad_request("too many Sec-WebSocket-Protocol headers"));
    }
    Ok(Some(Upgrade { key, protocol_headers, protocol_header_count }))
}

/// RFC 6455 §4.1: the key is a randomly selected 16-byte value, base64-encoded.
fn is_valid_key(key: &str) -> bool {
    // 16 bytes encode to 24 characters; base64's decode_slice wants room for
    // its estimate (18 bytes for 24 characters) before it starts.
    let mut decoded = [0u8; 18];
    key.len() == 24 && BASE64.decode_slice(key, &mut decoded) == Ok(16)
}

/// Whether a comma-separated header value holds `token` (ASCII case-insensitive).
fn has_token(value: &str, token: &str) -> bool {
    value.split(',').any(|item| trim_whitespace(item).eq_ignore_ascii_case(token))
}

/// Trims HTTP's optional whitespace (spaces and tabs, RFC 9110 §5.6.3).
fn trim_whitespace(value: &str) -> &str {
    value.trim_matches([' ', '\t'])
}

/// `Sec-WebSocket-Accept` for a key: base64(SHA-1(key + GUID)).
pub fn accept_key(key: &str) -> [u8; 28] {
    let mut hasher = Sha1::new();
    hasher.update(key.as_bytes());
    hasher.update(GUID.as_bytes());
    let digest = hasher.finalize();
    let mut accept = [0u8; 28];
    // 20 bytes always encode to exactly 28 characters, so this cannot fail.
    let written = BASE64.encode_slice(digest, &mut accept);
    debug_assert_eq!(written, Ok(28));
    accept
}

/// Appends the `101 Switching Protocols` response: `Upgrade: websocket`,
/// `Connection: Upgrade`, `Sec-WebSocket-Accept` and, if given,
/// `Sec-WebSocket-Protocol`.
///
/// `protocol` should be one the client offers ([`Upgrade::offers`]). One that
/// is not an HTTP token (RFC 9110 §5.6.2) is left out rather than written,
/// so a protocol name from an untrusted guest cannot inject header lines.
pub fn write_accept(out: &mut Vec<u8>, key: &str, protocol: Option<&str>) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.extend_from_slice(&accept_key(key));
    out.extend_from_slice(b"\r\n");
    if let Some(protocol) = protocol.filter(|protocol| is_token(protocol)) {
        out.extend_from_slice(b"Sec-WebSocket-Protocol: ");
        out.extend_from_slice(protocol.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// RFC 9110 §5.6.2: token = 1*tchar.
fn is_token(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte))
}

/// A frame's opcode (RFC 6455 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    fn from_bits(bits: u8) -> Option<Opcode> {
        Some(match bits {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// What a peer may make the decoder hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message, single frame or reassembled from fragments, in
    /// payload bytes. Anything larger fails with close code 1009.
    pub max_message: usize,
}

impl Default for Limits {
    /// 1 MiB messages.
    fn default() -> Self {
        Limits { max_message: 1 << 20 }
    }
}

/// What a frame or a reassembled message means.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete text message, checked to be UTF-8.
    Text(&'a str),
    /// A complete binary message.
    Binary(&'a [u8]),
    Ping(&'a [u8]),
    Pong(&'a [u8]),
    /// `code` is `None` for an empty close payload (RFC 6455 §7.1.5: the
    /// status is then "1005, no status received", which must not be sent).
    Close {
        code: Option<u16>,
        reason: &'a str,
    },
}

/// A protocol violation: the close code to send (1002 protocol error, 1007
/// invalid UTF-8, 1009 too big) and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseError {
    pub code: u16,
    pub reason: &'static str,
}

const fn protocol_error(reason: &'static str) -> CloseError {
    CloseError { code: 1002, reason }
}

const INVALID_UTF8: CloseError = CloseError { code: 1007, reason: "text message is not valid UTF-8" };
const INVALID_CLOSE_REASON: CloseError = CloseError { code: 1007, reason: "close reason is not valid UTF-8" };
const MESSAGE_TOO_BIG: CloseError = CloseError { code: 1009, reason: "message is over the size limit" };

/// The largest control frame payload (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// The longest client frame header: 2 bytes, an 8-byte length, a 4-byte mask.
const MAX_HEADER: usize = 14;

/// A data message being reassembled from fragments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MessageKind {
    Text,
    Binary,
}

/// A client frame's header, once all of it has arrived.
struct FrameHeader {
    fin: bool,
    opcode: Opcode,
    mask: [u8; 4],
    header_len: usize,
    payload_len: usize,
}

/// Reassembly buffer capacity a decoder keeps between messages.
pub const KEEP: usize = 4 * 1024;

/// Decodes client frames, one at a time, from the caller's buffer.
///
/// After an error the connection must be failed (RFC 6455 §7.1.7): the
/// decoder's state is then unspecified, though calling it again is harmless.
#[derive(Debug)]
pub struct Decoder {
    limits: Limits,
    /// The fragmented message in progress, if any.
    in_progress: Option<MessageKind>,
    /// Its payload so far, or the last reassembled message until the next call.
    /// Cleared between messages; freed then if it grew past [`KEEP`], so a
    /// connection does not hold its largest message's worth for good.
    message: Vec<u8>,
    /// For a text message in progress: how much of `message` is known to be
    /// valid UTF-8, so each fragment is checked once, not the whole prefix again.
    utf8_checked: usize,
}

impl Decoder {
    pub fn new(limits: Limits) -> Self {
        Decoder { limits, in_progress: None, message: Vec::new(), utf8_checked: 0 }
    }

    /// Decodes at most one frame from the start of `input`, unmasking its
    /// payload in place (hence `&mut`).
    ///
    /// - `Ok((0, None))`: the frame is incomplete; keep the bytes, unchanged,
    ///   and call again with more appended. A header that announces a payload
    ///   over the limit is an error as soon as its length field is complete,
    ///   so the caller never holds more than [`Decoder::max_frame`] bytes.
    /// - `Ok((n, None))`: consumed a non-final data fragment (its payload was
    ///   copied into the decoder's message buffer).
    /// - `Ok((n, Some(event)))`: a complete message or a control frame. An
    ///   unfragmented data frame's event borrows from `input` (no copy); a
    ///   reassembled message borrows from the decoder's buffer, which is
    ///   cleared (capacity kept) on the next call.
    pub fn decode<'a>(&'a mut self, input: &'a mut [u8]) -> Result<(usize, Option<Event<'a>>), CloseError> {
        if self.in_progress.is_none() {
            self.release();
        }
        let Some(header) = self.parse_header(input)? else {
            return Ok((0, None));
        };
        let frame_len = header.header_len + header.payload_len;
        let Some(frame) = input.get_mut(..frame_len) else {
            return Ok((0, None));
        };
        let payload = &mut frame[header.header_len..];
        unmask(payload, header.mask);
        let payload: &'a [u8] = payload;

        let event = match header.opcode {
            Opcode::Ping => Event::Ping(payload),
            Opcode::Pong => Event::Pong(payload),
            Opcode::Close => parse_close(payload)?,
            Opcode::Text if header.fin => Event::Text(std::str::from_utf8(payload).map_err(|_| INVALID_UTF8)?),
            Opcode::Binary if header.fin => Event::Binary(payload),
            Opcode::Text | Opcode::Binary | Opcode::Continuation => {
                if header.opcode == Opcode::Text {
                    self.in_progress = Some(MessageKind::Text);
                } else if header.opcode == Opcode::Binary {
                    self.in_progress = Some(MessageKind::Binary);
                }
                self.message.extend_from_slice(payload);
                let kind = self.in_progress;
                if kind == Some(MessageKind::Text) {
                    self.check_utf8_so_far()?;
                }
                if !header.fin {
                    return Ok((frame_len, None));
                }
                self.in_progress = None;
                match kind {
                    Some(MessageKind::Text) => {
                        Event::Text(std::str::from_utf8(&self.message).map_err(|_| INVALID_UTF8)?)
                    }
                    _ => Event::Binary(&self.message),
                }
            }
        };
        Ok((frame_len, Some(event)))
    }

    /// Bytes of a fragmented message held for reassembly.
    pub fn buffered(&self) -> usize {
        if self.in_progress.is_some() { self.message.len() } else { 0 }
    }

    /// Forgets the last reassembled message, freeing its buffer if it is
    /// larger than [`KEEP`]. Harmless while a message is in progress.
    pub fn release(&mut self) {
        if self.in_progress.is_some() {
            return;
        }
        self.message.clear();
        if self.message.capacity() > KEEP {
            self.message = Vec::new();
        }
        self.utf8_checked = 0;
    }

    /// Drops a message in progress (the connection is being failed).
    pub fn abandon(&mut self) {
        self.in_progress = None;
        self.release();
    }

    /// Bytes the caller may have to hold for one frame: the largest payload
    /// (a message, or 125 for a control frame) plus the 14-byte header.
    pub fn max_frame(&self) -> usize {
        self.limits.max_message.max(MAX_CONTROL_PAYLOAD).saturating_add(MAX_HEADER)
    }

    /// Reads and checks a frame header. `Ok(None)`: not all of it is there.
    /// Each check runs as soon as the bytes it needs have arrived.
    fn parse_header(&self, input: &[u8]) -> Result<Option<FrameHeader>, CloseError> {
        let [first, second, ..] = *input else {
            return Ok(None);
        };
        if first & 0x70 != 0 {
            return Err(protocol_error("reserved bits set, but no extension was negotiated"));
        }
        let fin = first & 0x80 != 0;
        let opcode = Opcode::from_bits(first & 0x0F).ok_or(protocol_error("unknown opcode"))?;
        if second & 0x80 == 0 {
            return Err(protocol_error("client frame is not masked"));
        }
        let short_len = second & 0x7F;
        if opcode.is_control() {
            if !fin {
                return Err(protocol_error("control frame is fragmented"));
            }
            if usize::from(short_len) > MAX_CONTROL_PAYLOAD {
                return Err(protocol_error("control frame payload is over 125 bytes"));
            }
        } else {
            match (opcode, self.in_progress) {
                (Opcode::Continuation, None) => {
                    return Err(protocol_error("continuation frame without a message in progress"));
                }
                (Opcode::Text | Opcode::Binary, Some(_)) => {
                    return Err(protocol_error("new data message before the fragmented one finished"));
                }
                _ => {}
            }
        }

        let (payload_len, length_bytes) = match short_len {
            126 => {
                let Some(&[high, low]) = input.get(2..4) else {
                    return Ok(None);
                };
                (u64::from(u16::from_be_bytes([high, low])), 2)
            }
            127 => {
                let Some(bytes) = input.get(2..10) else {
                    return Ok(None);
                };
                let mut length = [0u8; 8];
                length.copy_from_slice(bytes);
                let length = u64::from_be_bytes(length);
                if length >> 63 != 0 {
                    return Err(protocol_error("64-bit payload length has its most significant bit set"));
                }
                (length, 8)
            }
            short => (u64::from(short), 0),
        };

        // Control frames were bounded above; a data frame's payload counts
        // towards its message, which must fit max_message.
        if !opcode.is_control() {
            let so_far = if opcode == Opcode::Continuation { self.message.len() } else { 0 };
            let room = self.limits.max_message.saturating_sub(so_far);
            if payload_len > u64::try_from(room).unwrap_or(u64::MAX) {
                return Err(MESSAGE_TOO_BIG);
            }
        }
        // Fits: it is at most max_message or 125.
        let payload_len = usize::try_from(payload_len).map_err(|_| MESSAGE_TOO_BIG)?;
        let mask_at = 2 + length_bytes;
        let Some(&[a, b, c, d]) = input.get(mask_at..mask_at + 4) else {
            return Ok(None);
        };
        let header_len = mask_at + 4;
        if payload_len > usize::MAX - header_len {
            return Err(MESSAGE_TOO_BIG);
        }
        Ok(Some(FrameHeader { fin, opcode, mask: [a, b, c, d], header_len, payload_len }))
    }

    /// Checks the text message in progress as far as it goes: a character
    /// split across fragments may be incomplete at the end, but a byte
    /// sequence that no continuation can make valid fails now (RFC 6455
    /// §8.1 lets us fail early; Autobahn 6.4 tests that we do).
    fn check_utf8_so_far(&mut self) -> Result<(), CloseError> {
        let unchecked = &self.message[self.utf8_checked..];
        match std::str::from_utf8(unchecked) {
            Ok(_) => self.utf8_checked = self.message.len(),
            Err(error) if error.error_len().is_none() => self.utf8_checked += error.valid_up_to(),
            Err(_) => return Err(INVALID_UTF8),
        }
        Ok(())
    }
}

/// XORs the payload with the masking key (RFC 6455 §5.3), eight bytes at a time.
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let [a, b, c, d] = mask;
    let wide = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let (words, tail) = payload.as_chunks_mut::<8>();
    for word in words {
        *word = (u64::from_ne_bytes(*word) ^ wide).to_ne_bytes();
    }
    // The tail starts at a multiple of 8, so the mask starts over at byte 0.
    for (byte, key) in tail.iter_mut().zip(mask.iter().cycle()) {
        *byte ^= key;
    }
}

/// A close frame's payload (RFC 6455 §5.5.1): empty, or a code and a UTF-8 reason.
fn parse_close(payload: &[u8]) -> Result<Event<'_>, CloseError> {
    match *payload {
        [] => Ok(Event::Close { code: None, reason: "" }),
        [_] => Err(protocol_error("close payload of 1 byte: a code needs 2")),
        [high, low, ref reason @ ..] => {
            let code = u16::from_be_bytes([high, low]);
            if !valid_close_code(code) {
                return Err(protocol_error("close code is not one a peer may send"));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| INVALID_CLOSE_REASON)?;
            Ok(Event::Close { code: Some(code), reason })
        }
    }
}

/// Writes a server frame header: FIN set, the opcode, no mask, the payload
/// length in its shortest form. Returns the 2, 4 or 10 header bytes.
pub fn frame_header(buf: &mut [u8; 10], opcode: Opcode, len: usize) -> &[u8] {
    buf[0] = 0x80 | opcode.bits();
    // usize is at most 64 bits on every target Rust supports.
    let len = len as u64;
    if len < 126 {
        buf[1] = len as u8;
        &buf[..2]
    } else if let Ok(len) = u16::try_from(len) {
        buf[1] = 126;
        buf[2..4].copy_from_slice(&len.to_be_bytes());
        &buf[..4]
    } else {
        buf[1] = 127;
        buf[2..10].copy_from_slice(&len.to_be_bytes());
        &buf[..10]
    }
}

/// A close frame's payload: the code, big-endian, then `reason` cut to the
/// 123 bytes that fit a control frame, at a char boundary so it stays UTF-8.
pub fn close_payload<'buf>(buf: &'buf mut [u8; 125], code: u16, reason: &str) -> &'buf [u8] {
    let reason = &reason[..reason.floor_char_boundary(MAX_CONTROL_PAYLOAD - 2)];
    buf[..2].copy_from_slice(&code.to_be_bytes());
    let end = 2 + reason.len();
    buf[2..end].copy_from_slice(reason.as_bytes());
    &buf[..end]
}

/// Whether a peer may send this close code (RFC 6455 §7.4 and the IANA
/// registry): 1000–1003, 1007–1014 and the 3000–4999 range for libraries and
/// applications. 1004 is reserved; 1005, 1006 and 1015 only stand in for a
/// missing status locally and must never be on the wire.
pub fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- Opening handshake ----

    /// The request from RFC 6455 §1.2, as the HTTP parser would hand it over.
    const RFC_HEADERS: &[(&str, &str)] = &[
        ("Host", "server.example.com"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Origin", "http://example.com"),
        ("Sec-WebSocket-Protocol", "chat, superchat"),
        ("Sec-WebSocket-Version", "13"),
    ];

    fn check(headers: &[(&'static str, &'static str)]) -> Result<Option<Upgrade<'static>>, UpgradeError> {
        check_upgrade("GET", 1, headers.iter().copied())
    }

    /// RFC_HEADERS with `name` replaced by `value`, or removed for `None`.
    fn with_header(name: &str, value: Option<&'static str>) -> Vec<(&'static str, &'static str)> {
        let mut headers: Vec<_> = RFC_HEADERS.iter().copied().filter(|(n, _)| !n.eq_ignore_ascii_case(name)).collect();
        if let Some(value) = value {
            let name = RFC_HEADERS.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map_or("X-Unknown", |(n, _)| n);
            headers.push((name, value));
        }
        headers
    }

    fn status_of(result: Result<Option<Upgrade<'_>>, UpgradeError>) -> u16 {
        match result {
            Err(error) => error.status,
            Ok(upgrade) => panic!("expected a refusal, got {upgrade:?}"),
        }
    }

    #[test]
    fn accept_key_matches_the_rfc_6455_example() {
        assert_eq!(&accept_key("dGhlIHNhbXBsZSBub25jZQ=="), b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn the_rfc_request_is_an_upgrade_offering_its_protocols() {
        let upgrade = check(RFC_HEADERS).unwrap().unwrap();
        assert_eq!(upgrade.key, "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(upgrade.protocols().collect::<Vec<_>>(), ["chat", "superchat"]);
        assert!(upgrade.offers("chat"));
        assert!(upgrade.offers("superchat"));
    }

    #[test]
    fn offers_is_an_exact_token_match() {
        let upgrade = check(RFC_HEADERS).unwrap().unwrap();
        assert!(!upgrade.offers("Chat"));
        assert!(!upgrade.offers("cha"));
        assert!(!upgrade.offers("chat, superchat"));
        assert!(!upgrade.offers(""));
    }

    #[test]
    fn protocols_are_gathered_from_every_protocol_header() {
        let mut headers = with_header("Sec-WebSocket-Protocol", Some("a,b"));
        headers.push(("sec-websocket-protocol", " c ,\t, d"));
        let upgrade = check(&headers).unwrap().unwrap();
        assert_eq!(upgrade.protocols().collect::<Vec<_>>(), ["a", "b", "c", "d"]);
        assert!(upgrade.offers("d"));
    }

    #[test]
    fn no_protocol_header_offers_nothing() {
        let upgrade = check(&with_header("Sec-WebSocket-Protocol", None)).unwrap().unwrap();
        assert_eq!(upgrade.protocols().count(), 0);
        assert!(!upgrade.offers("chat"));
    }

    #[test]
    fn too_many_protocol_header_lines_are_refused() {
        let mut headers = RFC_HEADERS.to_vec();
        headers.extend(std::iter::repeat_n(("Sec-WebSocket-Protocol", "x"), MAX_PROTOCOL_HEADERS));
        assert_eq!(status_of(check(&headers)), 400);
    }

    #[test]
    fn header_names_and_tokens_are_case_insensitive_and_lists_are_searched() {
        let headers = [
            ("UPGRADE", "h2c, WebSocket"),
            ("connection", "keep-alive, UPGRADE"),
            ("sec-websocket-key", " dGhlIHNhbXBsZSBub25jZQ== "),
            ("SEC-WEBSOCKET-VERSION", "13"),
        ];
        let upgrade = check(&headers).unwrap().unwrap();
        assert_eq!(upgrade.key, "dGhlIHNhbXBsZSBub25jZQ==");
    }

    #[test]
    fn a_request_without_upgrade_websocket_is_not_an_attempt() {
        assert_eq!(check(&with_header("Upgrade", None)), Ok(None));
        assert_eq!(check(&with_header("Upgrade", Some("h2c"))), Ok(None));
        assert_eq!(check(&with_header("Upgrade", Some("websocketx"))), Ok(None));
        // Not an attempt, so not refused for being a POST either.
        assert_eq!(check_upgrade("POST", 1, [("Content-Length", "0")].into_iter()), Ok(None));
    }

    #[test]
    fn an_upgrade_must_be_a_get() {
        assert_eq!(status_of(check_upgrade("POST", 1, RFC_HEADERS.iter().copied())), 400);
        assert_eq!(status_of(check_upgrade("get", 1, RFC_HEADERS.iter().copied())), 400);
    }

    #[test]
    fn an_upgrade_needs_http_1_1() {
        assert_eq!(status_of(check_upgrade("GET", 0, RFC_HEADERS.iter().copied())), 400);
    }

    #[test]
    fn an_upgrade_needs_the_connection_upgrade_token() {
        assert_eq!(status_of(check(&with_header("Connection", None))), 400);
        assert_eq!(status_of(check(&with_header("Connection", Some("keep-alive")))), 400);
        assert_eq!(status_of(check(&with_header("Connection", Some("upgraded")))), 400);
    }

    #[test]
    fn an_upgrade_needs_a_key_of_16_base64_bytes() {
        assert_eq!(status_of(check(&with_header("Sec-WebSocket-Key", None))), 400);
        assert_eq!(status_of(check(&with_header("Sec-WebSocket-Key", Some("")))), 400);
        // Not base64.
        assert_eq!(status_of(check(&with_header("Sec-WebSocket-Key", Some("dGhlIHNhbXBsZSBub25jZQ*=")))), 400);
        // 15 and 17 bytes.
        assert_eq!(status_of(check(&with_header("Sec-WebSocket-Key", Some("AAAAAAAAAAAAAAAAAAAA")))), 400);
        assert_eq!(status_of(check(&with_header("Sec-WebSocket-Key", Some("AAAAAAAAAAAAAAAAAAAAAAA=")))), 400);
        // 16 bytes but missing padding.
        assert_eq!(status_of(check(&with_header("Sec-WebSocket-Key", Some("dGhlIHNhbXBsZSBub25jZQ")))), 400);
    }

    #[test]
    fn a_repeated_key_is_refused() {
        let mut headers = RFC_HEADERS.to_vec();
        headers.push(("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAA=="));
        assert_eq!(status_of(check(&headers)), 400);
    }

    #[test]
    fn a_missing_or_other_version_gets_426() {
        assert_eq!(check(&with_header("Sec-WebSocket-Version", None)).unwrap_err().status, 426);
        assert_eq!(check(&with_header("Sec-WebSocket-Version", Some("8"))).unwrap_err().status, 426);
        assert_eq!(check(&with_header("Sec-WebSocket-Version", Some("13, 8"))).unwrap_err().status, 426);
        let mut headers = RFC_HEADERS.to_vec();
        headers.push(("Sec-WebSocket-Version", "14"));
        assert_eq!(check(&headers).unwrap_err().status, 426);
    }

    #[test]
    fn write_accept_builds_the_rfc_response() {
        let mut out = b"kept".to_vec();
        write_accept(&mut out, "dGhlIHNhbXBsZSBub25jZQ==", Some("chat"));
        assert_eq!(
            out,
            b"keptHTTP/1.1 101 Switching Protocols\r\n\
              Upgrade: websocket\r\n\
              Connection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
              Sec-WebSocket-Protocol: chat\r\n\r\n"
        );
    }

    #[test]
    fn write_accept_without_a_protocol_leaves_the_header_out() {
        let mut out = Vec::new();
        write_accept(&mut out, "dGhlIHNhbXBsZSBub25jZQ==", None);
        assert_eq!(
            out,
            b"HTTP/1.1 101 Switching Protocols\r\n\
              Upgrade: websocket\r\n\
              Connection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
    }

    #[test]
    fn write_accept_never_writes_a_protocol_that_is_not_a_token() {
        for bad in ["", "chat\r\nSet-Cookie: x=1", "two words", "a,b"] {
            let mut with_bad = Vec::new();
            write_accept(&mut with_bad, "dGhlIHNhbXBsZSBub25jZQ==", Some(bad));
            let mut without = Vec::new();
            write_accept(&mut without, "dGhlIHNhbXBsZSBub25jZQ==", None);
            assert_eq!(with_bad, without, "{bad:?}");
        }
    }

    // ---- Decoding client frames ----

    const MASK: [u8; 4] = [0x37, 0xFA, 0x21, 0x3D];
    const FIN: u8 = 0x80;
    const TEXT: u8 = 0x1;
    const BINARY: u8 = 0x2;
    const CONTINUATION: u8 = 0x0;
    const CLOSE: u8 = 0x8;
    const PING: u8 = 0x9;
    const PONG: u8 = 0xA;

    /// A client frame: `first` is the first header byte (FIN, RSV, opcode),
    /// the length in its shortest form, masked with MASK.
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        match payload.len() {
            len @ 0..126 => out.push(0x80 | len as u8),
            len @ 126..=0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&MASK);
        out.extend(payload.iter().zip(MASK.iter().cycle()).map(|(byte, key)| byte ^ key));
        out
    }

    /// A frame whose header announces `len` bytes: only the header, as it
    /// looks before the payload has arrived.
    fn header_only(first: u8, len: u64) -> Vec<u8> {
        let mut out = vec![first, 0x80 | 127];
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&MASK);
        out
    }

    fn close_frame(code: u16, reason: &[u8]) -> Vec<u8> {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason);
        frame(FIN | CLOSE, &payload)
    }

    /// An event that outlives the decoder call, to compare in tests.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Owned {
        Text(String),
        Binary(Vec<u8>),
        Ping(Vec<u8>),
        Pong(Vec<u8>),
        Close(Option<u16>, String),
    }

    impl From<Event<'_>> for Owned {
        fn from(event: Event<'_>) -> Self {
            match event {
                Event::Text(text) => Owned::Text(text.to_owned()),
                Event::Binary(bytes) => Owned::Binary(bytes.to_vec()),
                Event::Ping(bytes) => Owned::Ping(bytes.to_vec()),
                Event::Pong(bytes) => Owned::Pong(bytes.to_vec()),
                Event::Close { code, reason } => Owned::Close(code, reason.to_owned()),
            }
        }
    }

    fn decoder() -> Decoder {
        Decoder::new(Limits::default())
    }

    /// Decodes every frame in `bytes`, all present at once. Trailing bytes
    /// of an incomplete frame are left.
    fn decode_all(decoder: &mut Decoder, bytes: &[u8]) -> Result<Vec<Owned>, CloseError> {
        let mut buffer = bytes.to_vec();
        let mut at = 0;
        let mut events = Vec::new();
        loop {
            let (consumed, event) = decoder.decode(&mut buffer[at..])?;
            if consumed == 0 {
                assert!(event.is_none());
                return Ok(events);
            }
            events.extend(event.map(Owned::from));
            at += consumed;
        }
    }

    /// Feeds `bytes` one at a time the way the server does: append, decode
    /// until nothing is consumed, drop what was consumed.
    fn decode_byte_by_byte(decoder: &mut Decoder, bytes: &[u8]) -> Result<Vec<Owned>, CloseError> {
        let mut buffer = Vec::new();
        let mut events = Vec::new();
        for &byte in bytes {
            buffer.push(byte);
            assert!(buffer.len() <= decoder.max_frame(), "held {} bytes", buffer.len());
            loop {
                let before = buffer.clone();
                let (consumed, event) = decoder.decode(&mut buffer)?;
                if consumed == 0 {
                    assert_eq!(buffer, before, "an incomplete frame must be left as it was");
                    break;
                }
                events.extend(event.map(Owned::from));
                buffer.drain(..consumed);
            }
        }
        assert!(buffer.is_empty(), "{} bytes left over", buffer.len());
        Ok(events)
    }

    fn error_of(bytes: &[u8]) -> CloseError {
        decode_all(&mut decoder(), bytes).unwrap_err()
    }

    #[test]
    fn decodes_the_rfc_masked_hello() {
        // RFC 6455 §5.7, "A single-frame masked text message".
        let mut bytes = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
        let mut decoder = decoder();
        assert_eq!(decoder.decode(&mut bytes), Ok((11, Some(Event::Text("Hello")))));
    }

    #[test]
    fn an_unfragmented_message_borrows_the_input_unmasked_in_place() {
        let payload: Vec<u8> = (0..=255).collect();
        let mut bytes = frame(FIN | BINARY, &payload);
        let len = bytes.len();
        let mut decoder = decoder();
        assert_eq!(decoder.decode(&mut bytes), Ok((len, Some(Event::Binary(&payload)))));
        assert_eq!(&bytes[8..], &payload[..], "unmasked in the caller's buffer");
    }

    #[test]
    fn decodes_masked_text_and_binary() {
        let mut bytes = frame(FIN | TEXT, "héllo wörld".as_bytes());
        bytes.extend(frame(FIN | BINARY, &[0, 1, 2, 0xFF]));
        bytes.extend(frame(FIN | TEXT, b""));
        bytes.extend(frame(FIN | BINARY, b""));
        assert_eq!(
            decode_all(&mut decoder(), &bytes),
            Ok(vec![
                Owned::Text("héllo wörld".into()),
                Owned::Binary(vec![0, 1, 2, 0xFF]),
                Owned::Text(String::new()),
                Owned::Binary(vec![]),
            ])
        );
    }

    #[test]
    fn decodes_16_and_64_bit_lengths() {
        let medium = vec![b'm'; 126];
        let large = vec![b'L'; 70_000];
        let mut bytes = frame(FIN | BINARY, &medium);
        assert_eq!(bytes[1], 0x80 | 126);
        let large_frame = frame(FIN | BINARY, &large);
        assert_eq!(large_frame[1], 0x80 | 127);
        bytes.extend(large_frame);
        assert_eq!(decode_all(&mut decoder(), &bytes), Ok(vec![Owned::Binary(medium), Owned::Binary(large)]));
    }

    #[test]
    fn an_incomplete_frame_consumes_nothing_and_is_left_masked() {
        let bytes = frame(FIN | TEXT, b"Hello");
        let mut decoder = decoder();
        for len in 0..bytes.len() {
            let mut prefix = bytes[..len].to_vec();
            assert_eq!(decoder.decode(&mut prefix), Ok((0, None)), "prefix of {len}");
            assert_eq!(prefix, bytes[..len]);
        }
    }

    #[test]
    fn reassembles_fragmented_text_with_a_ping_in_between() {
        let mut bytes = frame(TEXT, b"Hel");
        bytes.extend(frame(FIN | PING, b"are you there"));
        bytes.extend(frame(CONTINUATION, b""));
        bytes.extend(frame(FIN | PONG, b"unsolicited"));
        bytes.extend(frame(FIN | CONTINUATION, b"lo"));
        assert_eq!(
            decode_all(&mut decoder(), &bytes),
            Ok(vec![
                Owned::Ping(b"are you there".to_vec()),
                Owned::Pong(b"unsolicited".to_vec()),
                Owned::Text("Hello".into())
            ])
        );
    }

    #[test]
    fn a_non_final_fragment_is_consumed_without_an_event() {
        let mut bytes = frame(BINARY, b"abc");
        let mut decoder = decoder();
        assert_eq!(decoder.decode(&mut bytes), Ok((9, None)));
    }

    #[test]
    fn the_message_buffer_is_reused_between_messages() {
        let mut bytes = frame(BINARY, b"first ");
        bytes.extend(frame(FIN | CONTINUATION, b"message"));
        bytes.extend(frame(TEXT, b"sec"));
        bytes.extend(frame(FIN | CONTINUATION, b"ond"));
        bytes.extend(frame(FIN | BINARY, b"third"));
        let mut decoder = decoder();
        assert_eq!(
            decode_all(&mut decoder, &bytes),
            Ok(vec![
                Owned::Binary(b"first message".to_vec()),
                Owned::Text("second".into()),
                Owned::Binary(b"third".to_vec())
            ])
        );
        assert!(decoder.message.capacity() >= 13);
    }

    #[test]
    fn a_large_reassembled_message_is_freed_after_it_is_delivered_and_counted_while_in_progress() {
        let big = vec![7u8; 100 * 1024];
        let mut decoder = decoder();
        let mut first = frame(BINARY, &big);
        assert!(matches!(decoder.decode(&mut first), Ok((_, None))));
        assert_eq!(decoder.buffered(), big.len());
        let mut last = frame(FIN | CONTINUATION, b"end");
        assert!(matches!(decoder.decode(&mut last), Ok((_, Some(Event::Binary(m)))) if m.len() == big.len() + 3));
        assert_eq!(decoder.buffered(), 0, "delivered");
        decoder.release();
        assert!(decoder.message.capacity() <= KEEP, "{} bytes kept", decoder.message.capacity());
    }

    #[test]
    fn a_character_split_across_fragments_is_valid() {
        let euro = "€".as_bytes();
        let mut bytes = frame(TEXT, &euro[..1]);
        bytes.extend(frame(CONTINUATION, &euro[1..2]));
        bytes.extend(frame(FIN | CONTINUATION, &euro[2..]));
        assert_eq!(decode_all(&mut decoder(), &bytes), Ok(vec![Owned::Text("€".into())]));
    }

    #[test]
    fn decodes_the_same_events_whatever_the_split() {
        let mut bytes = frame(FIN | TEXT, "single ✓".as_bytes());
        bytes.extend(frame(TEXT, "frag".as_bytes()));
        bytes.extend(frame(FIN | PING, b"ping"));
        bytes.extend(frame(CONTINUATION, &"mented €".as_bytes()[..9]));
        bytes.extend(frame(FIN | CONTINUATION, &"mented €".as_bytes()[9..]));
        bytes.extend(frame(FIN | BINARY, &[7; 300]));
        bytes.extend(frame(BINARY, &[1; 200]));
        bytes.extend(frame(FIN | CONTINUATION, &[2; 70_000]));
        bytes.extend(frame(FIN | PONG, b""));
        bytes.extend(close_frame(1000, b"bye"));
        let at_once = decode_all(&mut decoder(), &bytes).unwrap();
        assert_eq!(at_once.len(), 7);
        assert_eq!(at_once[2], Owned::Text("fragmented €".into()));
        assert_eq!(decode_byte_by_byte(&mut decoder(), &bytes), Ok(at_once));
    }

    #[test]
    fn decodes_close_frames() {
        assert_eq!(decode_all(&mut decoder(), &frame(FIN | CLOSE, b"")), Ok(vec![Owned::Close(None, String::new())]));
        assert_eq!(decode_all(&mut decoder(), &close_frame(1000, b"")), Ok(vec![Owned::Close(Some(1000), "".into())]));
        assert_eq!(
            decode_all(&mut decoder(), &close_frame(4321, "going — away".as_bytes())),
            Ok(vec![Owned::Close(Some(4321), "going — away".into())])
        );
        assert_eq!(
            decode_all(&mut decoder(), &close_frame(1000, &[b'r'; 123])),
            Ok(vec![Owned::Close(Some(1000), "r".repeat(123))])
        );
    }

    #[test]
    fn every_valid_close_code_is_accepted_from_the_client() {
        for code in [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999] {
            assert!(valid_close_code(code), "{code}");
            assert_eq!(
                decode_all(&mut decoder(), &close_frame(code, b"")),
                Ok(vec![Owned::Close(Some(code), "".into())])
            );
        }
    }

    // ---- Each violation and its close code ----

    #[test]
    fn an_unmasked_frame_is_a_protocol_error() {
        // RFC 6455 §5.7, "A single-frame unmasked text message".
        assert_eq!(error_of(&[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]).code, 1002);
        // Rejected from the first two bytes on.
        assert_eq!(decoder().decode(&mut [0x81, 0x05]).unwrap_err().code, 1002);
    }

    #[test]
    fn a_reserved_bit_is_a_protocol_error() {
        for rsv in [0x40, 0x20, 0x10] {
            assert_eq!(error_of(&frame(FIN | rsv | TEXT, b"x")).code, 1002);
            assert_eq!(error_of(&frame(FIN | rsv | PING, b"")).code, 1002);
        }
    }

    #[test]
    fn an_unknown_opcode_is_a_protocol_error() {
        for opcode in [0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            assert_eq!(error_of(&frame(FIN | opcode, b"")).code, 1002, "opcode {opcode:#x}");
        }
    }

    #[test]
    fn a_fragmented_control_frame_is_a_protocol_error() {
        for opcode in [CLOSE, PING, PONG] {
            assert_eq!(error_of(&frame(opcode, b"")).code, 1002);
        }
    }

    #[test]
    fn a_control_frame_over_125_bytes_is_a_protocol_error() {
        assert_eq!(decode_all(&mut decoder(), &frame(FIN | PING, &[0; 125])), Ok(vec![Owned::Ping(vec![0; 125])]));
        assert_eq!(error_of(&frame(FIN | PING, &[0; 126])).code, 1002);
        assert_eq!(error_of(&frame(FIN | PONG, &[0; 126])).code, 1002);
        // Known from the first two bytes (length 126 means "16-bit length follows").
        assert_eq!(decoder().decode(&mut [FIN | PING, 0x80 | 126]).unwrap_err().code, 1002);
        // Even when the extended length is small.
        assert_eq!(error_of(&[FIN | PING, 0x80 | 126, 0, 5, 0, 0, 0, 0, 1, 2, 3, 4, 5]).code, 1002);
    }

    #[test]
    fn a_continuation_without_a_message_is_a_protocol_error() {
        assert_eq!(error_of(&frame(FIN | CONTINUATION, b"x")).code, 1002);
        assert_eq!(error_of(&frame(CONTINUATION, b"x")).code, 1002);
        // Also right after a message finished.
        let mut bytes = frame(TEXT, b"a");
        bytes.extend(frame(FIN | CONTINUATION, b"b"));
        bytes.extend(frame(FIN | CONTINUATION, b"c"));
        assert_eq!(error_of(&bytes).code, 1002);
    }

    #[test]
    fn a_new_message_inside_a_fragmented_one_is_a_protocol_error() {
        for next in [FIN | TEXT, TEXT, FIN | BINARY, BINARY] {
            let mut bytes = frame(TEXT, b"a");
            bytes.extend(frame(next, b"b"));
            assert_eq!(error_of(&bytes).code, 1002);
        }
    }

    #[test]
    fn a_64_bit_length_with_the_top_bit_set_is_a_protocol_error() {
        assert_eq!(decoder().decode(&mut header_only(FIN | BINARY, 1 << 63)).unwrap_err().code, 1002);
        assert_eq!(decoder().decode(&mut header_only(FIN | BINARY, u64::MAX)).unwrap_err().code, 1002);
    }

    #[test]
    fn invalid_utf8_text_is_1007() {
        assert_eq!(error_of(&frame(FIN | TEXT, &[0xC0, 0x80])).code, 1007);
        assert_eq!(error_of(&frame(FIN | TEXT, b"ok\xFF")).code, 1007);
        // Truncated character at the end of a whole message.
        assert_eq!(error_of(&frame(FIN | TEXT, &"€".as_bytes()[..2])).code, 1007);
        let mut bytes = frame(TEXT, b"ok");
        bytes.extend(frame(FIN | CONTINUATION, &"€".as_bytes()[..2]));
        assert_eq!(error_of(&bytes).code, 1007);
        // Binary messages are not checked.
        assert_eq!(decode_all(&mut decoder(), &frame(FIN | BINARY, b"\xFF")), Ok(vec![Owned::Binary(vec![0xFF])]));
    }

    #[test]
    fn invalid_utf8_fails_at_the_first_bad_fragment() {
        let mut decoder = decoder();
        let first = frame(TEXT, b"fine so far");
        assert_eq!(decoder.decode(&mut first.clone()), Ok((first.len(), None)));
        let mut second = frame(CONTINUATION, b"\xED\xA0\x80 surrogate");
        assert_eq!(decoder.decode(&mut second).unwrap_err().code, 1007);
    }

    #[test]
    fn a_close_payload_of_one_byte_is_a_protocol_error() {
        assert_eq!(error_of(&frame(FIN | CLOSE, &[0x03])).code, 1002);
    }

    #[test]
    fn a_close_code_no_peer_may_send_is_a_protocol_error() {
        for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535] {
            assert!(!valid_close_code(code), "{code}");
            assert_eq!(error_of(&close_frame(code, b"")).code, 1002, "code {code}");
        }
    }

    #[test]
    fn a_close_reason_that_is_not_utf8_is_1007() {
        assert_eq!(
            error_of(&close_frame(1000, b"\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5\xED\xA0\x80")).code,
            1007
        );
    }

    // ---- Size limits ----

    fn small_decoder() -> Decoder {
        Decoder::new(Limits { max_message: 1000 })
    }

    #[test]
    fn the_default_limit_is_1_mib() {
        assert_eq!(Limits::default().max_message, 1 << 20);
        assert_eq!(decoder().max_frame(), (1 << 20) + 14);
    }

    #[test]
    fn max_frame_has_room_for_a_control_frame_under_a_tiny_limit() {
        assert_eq!(small_decoder().max_frame(), 1014);
        assert_eq!(Decoder::new(Limits { max_message: 10 }).max_frame(), 139);
        assert_eq!(Decoder::new(Limits { max_message: usize::MAX }).max_frame(), usize::MAX);
    }

    #[test]
    fn a_frame_exactly_at_the_limit_is_accepted() {
        let payload = vec![b'a'; 1000];
        let bytes = frame(FIN | TEXT, &payload);
        assert_eq!(bytes.len(), small_decoder().max_frame() - 6, "a 16-bit length here");
        assert_eq!(decode_all(&mut small_decoder(), &bytes), Ok(vec![Owned::Text("a".repeat(1000))]));
        assert_eq!(decode_byte_by_byte(&mut small_decoder(), &bytes), Ok(vec![Owned::Text("a".repeat(1000))]));
        // The longest header form, at the limit: exactly max_frame bytes.
        let masked_zeros: Vec<u8> = MASK.iter().copied().cycle().take(1000).collect();
        let bytes = [header_only(FIN | BINARY, 1000), masked_zeros].concat();
        assert_eq!(bytes.len(), small_decoder().max_frame());
        assert_eq!(decode_byte_by_byte(&mut small_decoder(), &bytes), Ok(vec![Owned::Binary(vec![0; 1000])]));
    }

    #[test]
    fn a_frame_over_the_limit_is_1009_as_soon_as_its_length_is_known() {
        // 16-bit length: known after 4 bytes, before the mask or payload.
        let bytes = frame(FIN | BINARY, &[0; 1001]);
        assert_eq!(small_decoder().decode(&mut bytes[..4].to_vec()).unwrap_err().code, 1009);
        assert_eq!(small_decoder().decode(&mut bytes[..3].to_vec()), Ok((0, None)));
        // 64-bit length: after 10 bytes.
        let mut header = header_only(FIN | TEXT, 1 << 40);
        assert_eq!(small_decoder().decode(&mut header[..10]).unwrap_err().code, 1009);
        assert_eq!(decoder().decode(&mut header).unwrap_err().code, 1009);
        assert_eq!(decoder().decode(&mut header_only(FIN | BINARY, (1 << 63) - 1)).unwrap_err().code, 1009);
    }

    #[test]
    fn a_fragmented_message_exactly_at_the_limit_is_accepted() {
        let mut bytes = frame(BINARY, &[1; 400]);
        bytes.extend(frame(FIN | PING, b""));
        bytes.extend(frame(CONTINUATION, &[2; 600]));
        bytes.extend(frame(FIN | CONTINUATION, b""));
        let expected = [vec![1; 400], vec![2; 600]].concat();
        assert_eq!(
            decode_byte_by_byte(&mut small_decoder(), &bytes),
            Ok(vec![Owned::Ping(vec![]), Owned::Binary(expected)])
        );
    }

    #[test]
    fn a_fragment_pushing_the_message_over_the_limit_is_1009_from_its_header() {
        let mut decoder = small_decoder();
        let first = frame(TEXT, &[b'a'; 600]);
        assert_eq!(decoder.decode(&mut first.clone()), Ok((first.len(), None)));
        let exact = frame(CONTINUATION, &[b'a'; 400]);
        let mut over = frame(FIN | CONTINUATION, &[b'a'; 401]);
        // Only the header of the fragment: rejected before its payload arrives.
        assert_eq!(decoder.decode(&mut over[..4]).unwrap_err().code, 1009);
        // While one byte less fits.
        assert_eq!(decoder.decode(&mut exact.clone()), Ok((exact.len(), None)));
        let mut one_more = frame(FIN | CONTINUATION, b"b");
        assert_eq!(decoder.decode(&mut one_more).unwrap_err().code, 1009);
    }

    #[test]
    fn control_frames_do_not_count_towards_the_message_limit() {
        let mut decoder = Decoder::new(Limits { max_message: 4 });
        let mut bytes = frame(BINARY, b"1234");
        bytes.extend(frame(FIN | PING, &[9; 125]));
        bytes.extend(frame(FIN | CONTINUATION, b""));
        assert_eq!(
            decode_byte_by_byte(&mut decoder, &bytes),
            Ok(vec![Owned::Ping(vec![9; 125]), Owned::Binary(b"1234".to_vec())])
        );
    }

    // ---- Encoding server frames ----

    #[test]
    fn frame_header_uses_the_shortest_length() {
        let mut buf = [0; 10];
        assert_eq!(frame_header(&mut buf, Opcode::Text, 0), [0x81, 0]);
        assert_eq!(frame_header(&mut buf, Opcode::Binary, 125), [0x82, 125]);
        assert_eq!(frame_header(&mut buf, Opcode::Binary, 126), [0x82, 126, 0, 126]);
        assert_eq!(frame_header(&mut buf, Opcode::Binary, 65535), [0x82, 126, 0xFF, 0xFF]);
        assert_eq!(frame_header(&mut buf, Opcode::Binary, 65536), [0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(frame_header(&mut buf, Opcode::Binary, usize::MAX)[1..2], [127]);
    }

    #[test]
    fn frame_header_sets_fin_and_each_opcode() {
        let mut buf = [0; 10];
        for (opcode, bits) in [
            (Opcode::Continuation, 0x0),
            (Opcode::Text, 0x1),
            (Opcode::Binary, 0x2),
            (Opcode::Close, 0x8),
            (Opcode::Ping, 0x9),
            (Opcode::Pong, 0xA),
        ] {
            assert_eq!(frame_header(&mut buf, opcode, 3), [0x80 | bits, 3]);
        }
    }

    #[test]
    fn close_payload_is_the_code_then_the_reason() {
        let mut buf = [0; 125];
        assert_eq!(close_payload(&mut buf, 1000, ""), [0x03, 0xE8]);
        assert_eq!(close_payload(&mut buf, 4000, "bye"), [0x0F, 0xA0, b'b', b'y', b'e']);
    }

    #[test]
    fn close_payload_truncates_the_reason_at_a_char_boundary() {
        let mut buf = [0; 125];
        let ascii = "a".repeat(200);
        assert_eq!(close_payload(&mut buf, 1001, &ascii).len(), 125);
        // 122 ASCII bytes then a 2-byte "é" would end at 124 > 123: the "é" goes.
        let reason = format!("{}é", "a".repeat(122));
        let payload = close_payload(&mut buf, 1011, &reason);
        assert_eq!(&payload[2..], "a".repeat(122).as_bytes());
        // 41 three-byte "€" fill exactly 123.
        let euros = "€".repeat(50);
        let payload = close_payload(&mut buf, 1000, &euros);
        assert_eq!(payload.len(), 125);
        assert_eq!(std::str::from_utf8(&payload[2..]), Ok("€".repeat(41).as_str()));
        // Four-byte characters: 30 fit in 120 bytes.
        let payload = close_payload(&mut buf, 1000, &"𝄞".repeat(40));
        assert_eq!(std::str::from_utf8(&payload[2..]), Ok("𝄞".repeat(30).as_str()));
    }

    #[test]
    fn an_encoded_close_frame_decodes_back() {
        let mut buf = [0; 125];
        let payload = close_payload(&mut buf, 1001, &"ü".repeat(100)).to_vec();
        assert_eq!(
            decode_all(&mut decoder(), &frame(FIN | CLOSE, &payload)),
            Ok(vec![Owned::Close(Some(1001), "ü".repeat(61))])
        );
    }
}
