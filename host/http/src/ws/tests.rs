//! The WebSocket handshake's, frame decoder's and encoder's unit tests.

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
        assert_eq!(decode_all(&mut decoder(), &close_frame(code, b"")), Ok(vec![Owned::Close(Some(code), "".into())]));
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
    assert_eq!(error_of(&close_frame(1000, b"\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5\xED\xA0\x80")).code, 1007);
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
