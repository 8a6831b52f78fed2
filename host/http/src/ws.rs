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
mod tests;
