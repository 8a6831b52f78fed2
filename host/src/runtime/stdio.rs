//! A guest's stdout and stderr, line by line into the host log through its
//! [`GuestLog`] (rate-limited, escaped, never waiting on the log's reader).

use std::sync::Arc;

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use crate::guest_io::GuestLog;

/// Longest line kept before it is logged anyway (and then cut to
/// [`log::MAX_LINE`](crate::guest_io::log::MAX_LINE)).
const MAX_LINE: usize = 16 * 1024;

#[derive(Clone)]
pub struct GuestOutput {
    log: Arc<GuestLog>,
    stream: &'static str,
}

impl GuestOutput {
    pub fn new(log: Arc<GuestLog>, stream: &'static str) -> GuestOutput {
        GuestOutput { log, stream }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(LineWriter { out: self.clone(), line: Vec::new() })
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only WASIp3 uses this; our hosts link WASIp2 only.
        Box::new(tokio::io::sink())
    }
}

struct LineWriter {
    out: GuestOutput,
    line: Vec<u8>,
}

impl LineWriter {
    fn emit(&mut self) {
        let text = String::from_utf8_lossy(&self.line);
        let text = text.trim_end_matches(['\n', '\r']);
        self.out.log.line(tracing::Level::INFO, self.out.stream, text);
        self.line.clear();
    }
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        for chunk in bytes.split_inclusive(|&b| b == b'\n') {
            // At most MAX_LINE held, however long the write.
            let mut rest = chunk;
            while !rest.is_empty() {
                let take = rest.len().min(MAX_LINE - self.line.len());
                self.line.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if self.line.ends_with(b"\n") || self.line.len() >= MAX_LINE {
                    self.emit();
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_LINE)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.emit();
        }
    }
}
