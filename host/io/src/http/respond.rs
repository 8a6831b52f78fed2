//! The guest's side of a request: what the `http` imports `respond`,
//! `respond-start`, `respond-write`, `respond-finish`, `notify-writable`
//! and `accept-websocket` do. Each is all or nothing: a refused call
//! changes no state and writes no byte.

use std::cell::RefMut;

use wasmloop_http::{h1, ws};

use super::{Exchange, HttpConn, HttpLimits, Response, State, check_response, date};
use crate::error::ErrorCode;
use crate::output::Output;

impl HttpConn {
    /// The live request, whatever its response.
    fn exchange(&self) -> Result<RefMut<'_, Exchange>, ErrorCode> {
        RefMut::filter_map(self.state.borrow_mut(), |s| match s {
            State::Exchange(ex) => Some(ex),
            _ => None,
        })
        .map_err(|_| ErrorCode::InvalidHandle)
    }

    /// The live request, if no response has begun and output is accepted.
    fn unanswered<O: Output>(&self, out: &O) -> Result<RefMut<'_, Exchange>, ErrorCode> {
        let ex = self.exchange()?;
        if ex.response != Response::NotStarted || !out.open() {
            return Err(ErrorCode::Closed);
        }
        Ok(ex)
    }

    /// `respond`: the whole response, or nothing.
    pub fn respond<'h, O: Output>(
        &self,
        status: u16,
        headers: impl Iterator<Item = (&'h str, &'h str)> + Clone,
        body: &[u8],
        out: &O,
        scratch: &mut Vec<u8>,
    ) -> Result<(), ErrorCode> {
        let mut ex = self.unanswered(out)?;
        check_response(status, headers.clone())?;
        if !h1::status_allows_body(status) && !body.is_empty() {
            return Err(ErrorCode::InvalidArgument);
        }
        let close = !ex.keep_alive || !ex.body_done();
        scratch.clear();
        h1::write_head(scratch, status, headers, h1::Framing::Length(body.len() as u64), close, &date());
        let body = if ex.head_only { &[][..] } else { body };
        if !out.write_all(&[scratch, body]) {
            return Err(ErrorCode::LimitReached);
        }
        ex.response = Response::Done;
        ex.close_after = close;
        Ok(())
    }

    /// `respond-start`: the head of a streamed response.
    pub fn respond_start<'h, O: Output>(
        &self,
        status: u16,
        headers: impl Iterator<Item = (&'h str, &'h str)> + Clone,
        out: &O,
        scratch: &mut Vec<u8>,
    ) -> Result<(), ErrorCode> {
        let mut ex = self.unanswered(out)?;
        check_response(status, headers.clone())?;
        // An HTTP/1.0 client knows no chunked encoding: the body ends when
        // the connection does.
        let chunked = !ex.http10 && h1::status_allows_body(status);
        let close = !ex.keep_alive || !ex.body_done() || ex.http10;
        let framing = if chunked { h1::Framing::Chunked } else { h1::Framing::UntilClose };
        scratch.clear();
        h1::write_head(scratch, status, headers, framing, close, &date());
        if !out.write_all(&[scratch]) {
            return Err(ErrorCode::LimitReached);
        }
        ex.response = Response::Streaming { chunked };
        ex.close_after = close;
        Ok(())
    }

    /// `respond-write`: as much of `data` as fits, framed as one chunk.
    pub fn respond_write<O: Output>(&self, data: &[u8], out: &O) -> Result<u32, ErrorCode> {
        let ex = self.exchange()?;
        let Response::Streaming { chunked } = ex.response else {
            return Err(ErrorCode::Closed);
        };
        if !out.open() {
            return Err(ErrorCode::Closed);
        }
        if ex.head_only || data.is_empty() {
            return Ok(data.len().min(u32::MAX as usize) as u32);
        }
        // Chunk header and trailing CRLF: at most 18 + 2 bytes.
        let overhead = if chunked { 20 } else { 0 };
        let n = data.len().min(out.room().saturating_sub(overhead)).min(u32::MAX as usize);
        if n == 0 {
            return Ok(0);
        }
        let mut header = [0; 18];
        let taken = if chunked {
            let header = h1::chunk_header(&mut header, n);
            out.write_all(&[header, &data[..n], h1::CHUNK_END])
        } else {
            out.write_all(&[&data[..n]])
        };
        Ok(if taken { n as u32 } else { 0 })
    }

    /// `respond-finish`.
    pub fn respond_finish<O: Output>(&self, out: &O) -> Result<(), ErrorCode> {
        let mut ex = self.exchange()?;
        let Response::Streaming { chunked } = ex.response else {
            return Err(ErrorCode::Closed);
        };
        if chunked && !ex.head_only && !out.write_all(&[h1::LAST_CHUNK]) {
            return Err(ErrorCode::LimitReached);
        }
        ex.response = Response::Done;
        Ok(())
    }

    /// `notify-writable` on a request.
    pub fn notify_response_writable(&self) -> Result<(), ErrorCode> {
        self.exchange().map(|mut ex| ex.notify_writable = true)
    }

    /// `accept-websocket`: the 101 response; the connection is a WebSocket
    /// from now on, with the handle `mint` gives. The request handle dies:
    /// the caller removes it from its table.
    pub fn accept_websocket<O: Output>(
        &self,
        protocol: Option<&str>,
        out: &O,
        scratch: &mut Vec<u8>,
        limits: &HttpLimits,
        mint: impl FnOnce() -> u64,
    ) -> Result<u64, ErrorCode> {
        let ex = self.unanswered(out)?;
        let Some((key, offered)) = &ex.upgrade else {
            return Err(ErrorCode::InvalidArgument);
        };
        if let Some(p) = protocol
            && !offered.split(',').any(|o| o.trim() == p)
        {
            return Err(ErrorCode::InvalidArgument);
        }
        scratch.clear();
        ws::write_accept(scratch, key, protocol);
        if !out.write_all(&[scratch]) {
            return Err(ErrorCode::LimitReached);
        }
        drop(ex);
        let handle = mint();
        self.upgrade(handle, limits);
        Ok(handle)
    }
}
