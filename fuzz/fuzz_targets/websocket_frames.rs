//! The WebSocket decoder fed the way the server feeds it, and the opening
//! handshake check fed headers built from the input.
//!
//! The first byte picks a mode:
//! - 0: the rest is a raw client byte stream.
//! - 1: the rest describes frames (first byte, length, payload) that the
//!   harness masks and encodes, so fuzzing spends its time past the header
//!   checks: fragmentation, UTF-8, close codes, limits.
//! - 2: the rest is a request head: a method line, then `name: value` lines.
//! - 3: the rest is a close code and reason to encode and decode back.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmloop_http::ws::{self, Decoder, Event, Limits};

/// Small, so inputs reach the limits.
const MAX_MESSAGE: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => feed_in_pieces(data),
        1 => feed_in_pieces(&encode_client_frames(data)),
        2 => check_request(data),
        _ => close_round_trip(data),
    }
});

/// The first 4 bytes choose the sizes of the pieces the rest arrives in, as
/// reads would: append a piece, decode until nothing is consumed, drop what
/// was consumed.
fn feed_in_pieces(data: &[u8]) {
    let Some((sizes, mut stream)) = data.split_first_chunk::<4>() else {
        return;
    };
    let mut decoder = Decoder::new(Limits { max_message: MAX_MESSAGE });
    let max_frame = decoder.max_frame();
    let mut buffer = Vec::new();
    for size in sizes.iter().cycle() {
        if stream.is_empty() {
            return;
        }
        // 1 to ~8 KiB, mostly small.
        let piece_len = (1 + usize::from(*size).pow(2) / 8).min(stream.len());
        let (piece, rest) = stream.split_at(piece_len);
        stream = rest;
        buffer.extend_from_slice(piece);
        assert!(buffer.len() <= max_frame + piece_len, "held {} bytes", buffer.len());
        loop {
            let held = buffer.len();
            match decoder.decode(&mut buffer) {
                Err(error) => {
                    assert!(matches!(error.code, 1002 | 1007 | 1009), "{error:?}");
                    return;
                }
                Ok((0, event)) => {
                    assert!(event.is_none(), "an event without consuming a frame");
                    break;
                }
                Ok((consumed, event)) => {
                    assert!(consumed <= held, "consumed {consumed} of {held} bytes");
                    if let Some(event) = event {
                        check_event(event);
                    }
                    buffer.drain(..consumed);
                }
            }
        }
    }
}

fn check_event(event: Event<'_>) {
    match event {
        Event::Text(text) => {
            assert!(std::str::from_utf8(text.as_bytes()).is_ok());
            assert!(text.len() <= MAX_MESSAGE);
        }
        Event::Binary(bytes) => assert!(bytes.len() <= MAX_MESSAGE),
        Event::Ping(bytes) | Event::Pong(bytes) => assert!(bytes.len() <= 125),
        Event::Close { code, reason } => {
            assert!(code.is_none_or(ws::valid_close_code));
            assert!(code.is_some() || reason.is_empty());
            assert!(reason.len() <= 123);
        }
    }
}

/// Records of `first, form, length, payload…`: `first` is the header's
/// first byte as is; `form` picks the length encoding (bits 0–1: shortest,
/// 16-bit, 64-bit), a length in units of 64 bytes (bit 3, to pass the
/// limit), and an unmasked frame (bit 2). The payload is what the decoder
/// should see once unmasked.
fn encode_client_frames(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() * 2);
    let mut rest = data;
    while let [first, form, length, tail @ ..] = rest {
        let len = if form & 8 != 0 { usize::from(*length) * 64 } else { usize::from(*length) };
        let unmasked = form & 4 != 0;
        let mask_bit = if unmasked { 0 } else { 0x80 };
        out.push(*first);
        match form & 3 {
            1 => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            2 => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
            _ if len < 126 => out.push(mask_bit | len as u8),
            _ => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
        }
        let mask = [*first, *form, *length, 0x5A];
        if !unmasked {
            out.extend_from_slice(&mask);
        }
        // A payload cut short by the end of the input leaves a frame the
        // decoder must wait for.
        let (payload, tail) = tail.split_at(len.min(tail.len()));
        if unmasked {
            out.extend_from_slice(payload);
        } else {
            out.extend(payload.iter().zip(mask.iter().cycle()).map(|(byte, key)| byte ^ key));
        }
        rest = tail;
    }
    // 4 bytes of piece sizes, as feed_in_pieces expects, from the record bytes.
    let sizes = [data.first(), data.get(1), data.get(2), data.get(3)].map(|byte| byte.copied().unwrap_or(0));
    [sizes.as_slice(), &out].concat()
}

/// A request head: the first line is the method, the first byte picks
/// HTTP/1.0 or 1.1, the other lines are `name:value`.
fn check_request(data: &[u8]) {
    let Some((&version, data)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let method = lines.next().unwrap_or_default();
    let headers: Vec<(&str, &str)> = lines.map(|line| line.split_once(':').unwrap_or((line, ""))).collect();
    match ws::check_upgrade(method, version & 1, headers.iter().copied()) {
        Ok(Some(upgrade)) => {
            assert_eq!(method, "GET");
            assert_eq!(upgrade.key.len(), 24);
            let accept = ws::accept_key(upgrade.key);
            assert!(accept.iter().all(|byte| byte.is_ascii_alphanumeric() || b"+/=".contains(byte)));
            check_response(upgrade.key, None);
            for protocol in upgrade.protocols() {
                assert!(upgrade.offers(protocol));
                check_response(upgrade.key, Some(protocol));
            }
            // Whatever a guest might answer with, even a line break.
            check_response(upgrade.key, Some(method));
        }
        Ok(None) => {}
        Err(error) => assert!(matches!(error.status, 400 | 426), "{error:?}"),
    }
}

/// A 101 response is one head: CR and LF only as CRLF, one blank line, at the end.
fn check_response(key: &str, protocol: Option<&str>) {
    let mut out = Vec::new();
    ws::write_accept(&mut out, key, protocol);
    assert!(out.ends_with(b"\r\n\r\n"));
    assert_eq!(out.windows(4).filter(|window| window == b"\r\n\r\n").count(), 1, "{:?}", String::from_utf8_lossy(&out));
    let line_breaks = out.iter().filter(|&&byte| byte == b'\n').count();
    assert_eq!(out.iter().filter(|&&byte| byte == b'\r').count(), line_breaks);
    assert_eq!(out.windows(2).filter(|window| window == b"\r\n").count(), line_breaks);
}

/// Encodes a close payload and decodes it back as a client would send it.
fn close_round_trip(data: &[u8]) {
    let Some((code, reason)) = data.split_first_chunk::<2>() else {
        return;
    };
    let code = u16::from_be_bytes(*code);
    let reason = String::from_utf8_lossy(reason);
    let mut buf = [0; 125];
    let payload = ws::close_payload(&mut buf, code, &reason);
    assert!(payload.len() <= 125);
    let sent_reason = std::str::from_utf8(&payload[2..]).expect("the reason stays UTF-8");
    assert!(reason.starts_with(sent_reason));

    let mut frame = vec![0x88, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(payload);
    let mut decoder = Decoder::new(Limits { max_message: MAX_MESSAGE });
    match decoder.decode(&mut frame) {
        Ok((consumed, Some(Event::Close { code: Some(got), reason: got_reason }))) => {
            assert!(ws::valid_close_code(code));
            assert_eq!((consumed, got, got_reason), (6 + payload.len(), code, sent_reason));
        }
        Err(error) => {
            assert!(!ws::valid_close_code(code));
            assert_eq!(error.code, 1002);
        }
        other => panic!("{other:?}"),
    }

    let mut header = [0; 10];
    let header = ws::frame_header(&mut header, ws::Opcode::Close, payload.len());
    assert_eq!(header, [0x88, payload.len() as u8]);
}
