//! The test's side of a connection: socket settings, a line reader with
//! deadlines, a background writer that reports its progress, exact reads,
//! byte comparisons and reproducible random data.

use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Read and write timeouts on client sockets: a second line of defence
/// behind the watchdog, so no socket call blocks forever.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Timeouts and no Nagle on a client socket.
pub fn configure(stream: &TcpStream) {
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
}

/// Reads `\n`-terminated lines from a stream, with deadlines, never losing
/// bytes when a wait times out.
pub struct LineReader {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl LineReader {
    pub fn new(stream: TcpStream) -> LineReader {
        LineReader { stream, buf: Vec::new() }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Sends `line` plus `\n`.
    pub fn send(&mut self, line: &str) {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.stream.write_all(&bytes).unwrap_or_else(|e| panic!("cannot send {line:?}: {e}"));
    }

    /// The next line (without its `\n`), or `None` if none is complete by
    /// `deadline`. Panics on end-of-stream or a socket error.
    pub fn line_by(&mut self, deadline: Instant) -> Option<String> {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                return Some(String::from_utf8_lossy(&line[..end]).into_owned());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            let wait = (deadline - now).max(Duration::from_millis(1));
            self.stream.set_read_timeout(Some(wait)).unwrap();
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!(
                    "connection closed while waiting for a line (unfinished: {:?})",
                    String::from_utf8_lossy(&self.buf)
                ),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
                Err(e) => panic!("reading a line failed: {e}"),
            }
        }
    }

    /// The next line, waiting at most [`IO_TIMEOUT`].
    pub fn line(&mut self) -> String {
        self.line_by(Instant::now() + IO_TIMEOUT).unwrap_or_else(|| panic!("no complete line within {IO_TIMEOUT:?}"))
    }
}

/// A thread writing a buffer to a stream, reporting how far it got.
pub struct Writer {
    progress: Arc<AtomicUsize>,
    total: usize,
    handle: JoinHandle<io::Result<()>>,
}

impl Writer {
    /// Writes `data` in 64 KiB pieces; then, if `then_shutdown`, shuts the
    /// write side down.
    pub fn start(stream: &TcpStream, data: Arc<Vec<u8>>, then_shutdown: bool) -> Writer {
        let mut stream = stream.try_clone().expect("cannot clone the socket");
        let progress = Arc::new(AtomicUsize::new(0));
        let total = data.len();
        let counter = progress.clone();
        let handle = thread::spawn(move || {
            for piece in data.chunks(64 * 1024) {
                stream.write_all(piece)?;
                counter.fetch_add(piece.len(), Ordering::SeqCst);
            }
            if then_shutdown {
                stream.shutdown(std::net::Shutdown::Write)?;
            }
            Ok(())
        });
        Writer { progress, total, handle }
    }

    pub fn written(&self) -> usize {
        self.progress.load(Ordering::SeqCst)
    }

    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Waits until the writer has finished or made no progress for `quiet`
    /// (the other side stopped taking bytes: backpressure reached us);
    /// returns the bytes written by then. Panics after `limit`.
    pub fn wait_until_stalled(&self, quiet: Duration, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        let mut last = self.written();
        let mut since = Instant::now();
        loop {
            if self.is_finished() {
                return self.written();
            }
            thread::sleep(Duration::from_millis(10));
            let now = self.written();
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                return now;
            }
            assert!(
                Instant::now() < deadline,
                "the writer neither finished nor stalled within {limit:?} ({now} of {} bytes)",
                self.total
            );
        }
    }

    /// Waits for the writer to finish; panics on a write error.
    pub fn join(self) {
        let written = self.written();
        match self.handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("writing failed after {written} of {} bytes: {e}", self.total),
            Err(payload) => std::panic::resume_unwind(payload),
        }
    }
}

/// Reads exactly `len` bytes.
pub fn read_exactly(stream: &mut TcpStream, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match stream.read(&mut buf[got..]) {
            Ok(0) => panic!("end-of-stream after {got} of {len} bytes"),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("reading failed after {got} of {len} bytes: {e}"),
        }
    }
    buf
}

/// Reads until end-of-stream. On an error (a timeout, a reset) returns the
/// bytes read so far with it.
pub fn read_to_eof(stream: &mut TcpStream) -> Result<Vec<u8>, (Vec<u8>, io::Error)> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err((got, e)),
        }
    }
}

/// Asserts two byte strings are equal, naming the first difference instead
/// of printing megabytes.
pub fn assert_same_bytes(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let first = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
    panic!("{what}: got {} bytes, expected {}; first difference at offset {first}", got.len(), want.len());
}

/// `len` pseudo-random bytes from a xorshift64 generator: reproducible from
/// `seed`, and incompressible enough that a dropped, duplicated or
/// reordered piece cannot go unnoticed.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}
