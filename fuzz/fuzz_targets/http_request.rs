//! The HTTP/1.1 request reader fed the way the server feeds it: the socket
//! delivers the input in pieces, the buffer grows by each piece, heads are
//! parsed with `HeadParser`, bodies drained with `BodyDecoder`, consumed
//! bytes removed, pipelined requests handled in a loop.
//!
//! The first byte seeds the piece sizes (1..=64 bytes, so split points land
//! everywhere including inside CRLFs; seeds below 16 feed byte by byte, the
//! hardest case for a parser); the rest is the client byte stream.
//! Small limits so inputs reach them.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmloop_http::h1::{BodyDecoder, BodyKind, Head, HeadParser, HttpError, Limits, http_date};

const LIMITS: Limits = Limits { max_head: 512, max_headers: 8, max_body: 1024 };

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    serve(seed, stream);
});

enum Reading {
    Head,
    Body { decoder: BodyDecoder, length: Option<u64>, keep_alive: bool },
}

fn serve(seed: u8, mut stream: &[u8]) {
    let mut parser = HeadParser::new(LIMITS);
    let mut buffer = Vec::new();
    let mut reading = Reading::Head;
    let mut piece_sizes = PieceSizes(u32::from(seed) | 0x100);
    let byte_by_byte = seed < 16;

    while !stream.is_empty() {
        let (piece, rest) = stream.split_at(if byte_by_byte { 1 } else { piece_sizes.next().min(stream.len()) });
        stream = rest;
        // The parser must refuse a head before the buffer outgrows it.
        assert!(buffer.len() < LIMITS.max_head, "buffered {} bytes without a head", buffer.len());
        buffer.extend_from_slice(piece);

        loop {
            match &mut reading {
                Reading::Head => match parser.parse(&buffer) {
                    Err(error) => return refuse(error),
                    Ok(None) => {
                        assert!(buffer.len() < LIMITS.max_head);
                        break;
                    }
                    Ok(Some(head)) => {
                        check_head(head, &buffer);
                        let length = match head.body {
                            BodyKind::Length(n) => Some(n),
                            BodyKind::Chunked => None,
                        };
                        let decoder = BodyDecoder::new(head.body, &LIMITS);
                        let keep_alive = head.keep_alive;
                        let len = head.len;
                        buffer.drain(..len);
                        reading = Reading::Body { decoder, length, keep_alive };
                    }
                },
                Reading::Body { decoder, length, keep_alive } => {
                    let before = decoder.received();
                    let (consumed, data) = match decoder.decode(&buffer) {
                        Ok(decoded) => decoded,
                        Err(error) => return refuse(error),
                    };
                    assert!(consumed <= buffer.len());
                    assert!(data.len() <= consumed);
                    // The data is a sub-slice of the consumed bytes.
                    let consumed_range = buffer[..consumed].as_ptr_range();
                    assert!(data.is_empty() || consumed_range.start <= data.as_ptr());
                    assert!(data.as_ptr_range().end <= consumed_range.end || data.is_empty());
                    assert_eq!(decoder.received(), before + data.len() as u64);
                    assert!(decoder.received() <= LIMITS.max_body);
                    buffer.drain(..consumed);
                    if decoder.is_done() {
                        if let Some(length) = length {
                            assert_eq!(decoder.received(), *length);
                        }
                        if !*keep_alive {
                            return;
                        }
                        reading = Reading::Head;
                    } else if consumed == 0 {
                        // Framing bytes are consumed as they come: nothing
                        // may sit in the buffer while the body is unfinished.
                        assert!(buffer.is_empty(), "{} unconsumed bytes in a body", buffer.len());
                        break;
                    }
                }
            }
        }
    }
}

fn check_head(head: &Head, buffer: &[u8]) {
    assert!(head.len <= buffer.len() && head.len <= LIMITS.max_head);
    assert!(head.headers.len() <= LIMITS.max_headers);
    let in_head = |span: &std::ops::Range<usize>| span.start <= span.end && span.end <= head.len;
    assert!(in_head(&head.method) && in_head(&head.target));
    assert!(!head.str(buffer, &head.method).is_empty());
    assert!(!head.str(buffer, &head.target).is_empty());
    for (name, value) in &head.headers {
        assert!(in_head(name) && in_head(value));
        assert!(std::str::from_utf8(&buffer[value.clone()]).is_ok());
        assert!(!head.str(buffer, name).is_empty());
    }
    assert_eq!(head.headers(buffer).count(), head.headers.len());
    assert!(head.minor_version <= 1);
    if let BodyKind::Length(n) = head.body {
        assert!(n <= LIMITS.max_body);
    }
    if head.minor_version == 1 {
        assert!(head.header(buffer, "host").is_some());
    }
}

fn refuse(error: HttpError) {
    assert!(matches!(error.status, 400 | 408 | 413 | 431 | 501 | 505), "{error:?}");
    let mut response = Vec::new();
    error.write_response(&mut response, &http_date(std::time::SystemTime::now()));
    assert!(response.starts_with(b"HTTP/1.1 "));
}

/// Piece sizes from a tiny xorshift seeded by the first input byte.
struct PieceSizes(u32);

impl PieceSizes {
    fn next(&mut self) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        (self.0 % 64) as usize + 1
    }
}
