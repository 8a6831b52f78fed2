//! Request bodies: [`BodyDecoder`] for `Content-Length` and `chunked`, one
//! byte of framing at a time, so any split of the input decodes alike.

use super::{BodyKind, HttpError, Limits, bad_request, is_control, is_token};

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
