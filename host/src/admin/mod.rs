//! The admin listener (`host run --admin ADDR`): `/metrics` (Prometheus),
//! `/status.json` and the status page (`/`), described in docs/admin.md.
//!
//! It runs on a thread of its own, blocked in `accept` (no CPU while no one
//! asks): it must answer while the loop is busy or stuck inside a guest —
//! that is when an operator looks — and a scrape must never delay an event.
//! It only reads the loops' counters ([`crate::metrics`]), which need no
//! lock. One request per connection, each on a thread of its own, so a slow
//! client cannot keep a scraper waiting: at most [`MAX_CLIENTS`] at once
//! (one more is closed at once, so a flood costs threads and descriptors
//! only up to that), each with [`REQUEST_DEADLINE`] for its whole request
//! and answer (a deadline, not a per-read timeout: a client dripping a byte
//! at a time cannot hold a slot longer). It serves a scraper and a browser,
//! not the internet.
//!
//! DNS rebinding: a web page can point a name of its own at 127.0.0.1 and
//! then read this listener as its own origin. The browser still sends that
//! name as `Host`, so only requests whose `Host` is an IP address or
//! `localhost` (with or without a port) are answered; others get 421.
//!
//! Only counts, sizes and times leave through it: no payload, header or
//! peer address of any guest's traffic is ever recorded.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, info, warn};
use wasmloop_http::h1::{Framing, HeadParser, Limits, http_date, write_head};

use crate::metrics::{self, Metrics};

const STATUS_PAGE: &str = include_str!("status.html");
/// Time a client has to send its whole request and take the whole answer.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(2);
/// Clients served at once; a scraper and a few browser tabs fit.
pub const MAX_CLIENTS: usize = 16;
/// A client's thread only parses a head and formats the status: a small
/// stack is plenty (the default is 2 MiB of address space per thread).
const CLIENT_STACK: usize = 256 * 1024;
const MAX_REQUEST: usize = 8 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "--admin {0}: not a loopback address; the admin listener shows every guest's metrics, \
         so it listens on loopback only unless --admin-public is given"
    )]
    NotLoopback(SocketAddr),
    #[error("--admin {0}: cannot listen: {1}")]
    Bind(SocketAddr, io::Error),
    #[error("cannot start the admin thread: {0}")]
    Thread(io::Error),
}

/// Binds `addr` (loopback only unless `public`) and serves `metrics` from a
/// new thread for the life of the process. Returns the bound address.
pub fn start(addr: SocketAddr, public: bool, metrics: Arc<Metrics>) -> Result<SocketAddr, AdminError> {
    if !public && !addr.ip().is_loopback() {
        return Err(AdminError::NotLoopback(addr));
    }
    let listener = TcpListener::bind(addr).map_err(|e| AdminError::Bind(addr, e))?;
    let bound = listener.local_addr().map_err(|e| AdminError::Bind(addr, e))?;
    std::thread::Builder::new()
        .name("admin".into())
        .spawn(move || serve(listener, &metrics))
        .map_err(AdminError::Thread)?;
    info!("admin listening on http://{bound}/ (metrics at /metrics, status at /status.json)");
    Ok(bound)
}

fn serve(listener: TcpListener, metrics: &Arc<Metrics>) {
    // Only this thread adds to the count, so checking then adding is no race.
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                if active.load(Ordering::Acquire) >= MAX_CLIENTS {
                    debug!("admin: {MAX_CLIENTS} clients already; closing a new connection");
                    continue;
                }
                active.fetch_add(1, Ordering::AcqRel);
                let slot = Slot(active.clone());
                let metrics = metrics.clone();
                let spawned =
                    std::thread::Builder::new().name("admin-client".into()).stack_size(CLIENT_STACK).spawn(move || {
                        let _slot = slot;
                        if let Err(e) = answer(stream, &metrics, Instant::now() + REQUEST_DEADLINE) {
                            debug!("admin: a request failed: {e}");
                        }
                    });
                // The closure, and with it the slot and the stream, is dropped.
                if let Err(e) = spawned {
                    warn!("admin: cannot start a thread for a client: {e}");
                }
            }
            // Out of descriptors, say: do not spin on it.
            Err(e) => {
                warn!("admin: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// A client's place under [`MAX_CLIENTS`], given back when its thread ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Time left until `deadline`, as a socket timeout; an error once it passed
/// (a zero timeout would mean "none" to the socket).
fn left(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(io::ErrorKind::TimedOut, "request deadline passed"));
    }
    Ok(left)
}

/// Whether a `Host` header names this listener in a way no DNS rebinding
/// can: an IP address (IPv6 in brackets) or `localhost`, each with or
/// without a port.
fn host_allowed(host: &str) -> bool {
    let host = host.trim();
    if host.parse::<SocketAddr>().is_ok() || host.parse::<Ipv4Addr>().is_ok() {
        return true;
    }
    if let Some(ip) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return ip.parse::<Ipv6Addr>().is_ok();
    }
    let name = match host.split_once(':') {
        Some((name, port)) if port.parse::<u16>().is_ok() => name,
        Some(_) => return false,
        None => host,
    };
    name.eq_ignore_ascii_case("localhost")
}

fn answer(mut stream: TcpStream, metrics: &Metrics, deadline: Instant) -> io::Result<()> {
    let mut parser = HeadParser::new(Limits { max_head: MAX_REQUEST, max_headers: 64, max_body: 0 });
    let mut buf = vec![0; MAX_REQUEST];
    let mut len = 0;
    let (method, path, host_ok) = loop {
        stream.set_read_timeout(Some(left(deadline)?))?;
        let n = stream.read(&mut buf[len..])?;
        if n == 0 {
            return Ok(());
        }
        len += n;
        match parser.parse(&buf[..len]) {
            Ok(None) => continue,
            Ok(Some(head)) => {
                let method = head.str(&buf, &head.method).to_owned();
                let target = head.str(&buf, &head.target);
                let path = target.split_once('?').map_or(target, |(p, _)| p).to_owned();
                // No `Host` at all passes: the parser refuses that on
                // HTTP/1.1, and no browser sends HTTP/1.0 without one.
                let host_ok = head.header(&buf, "host").is_none_or(host_allowed);
                break (method, path, host_ok);
            }
            Err(e) => {
                let body = e.reason.as_bytes();
                return respond(&mut stream, deadline, e.status, "text/plain; charset=utf-8", body, false);
            }
        }
    };
    if !host_ok {
        let body = b"the Host header must be an IP address or localhost (a DNS name could be DNS rebinding)";
        return respond(&mut stream, deadline, 421, "text/plain; charset=utf-8", body, false);
    }
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return respond(&mut stream, deadline, 405, "text/plain; charset=utf-8", b"only GET and HEAD", false);
    }
    match path.as_str() {
        "/" | "/index.html" => {
            respond(&mut stream, deadline, 200, "text/html; charset=utf-8", STATUS_PAGE.as_bytes(), head_only)
        }
        "/status.json" => {
            let json = serde_json::to_vec(&metrics::status(metrics)).map_err(io::Error::other)?;
            respond(&mut stream, deadline, 200, "application/json", &json, head_only)
        }
        "/metrics" => {
            let text = metrics::encode_prometheus(metrics::status(metrics));
            respond(
                &mut stream,
                deadline,
                200,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                text.as_bytes(),
                head_only,
            )
        }
        _ => respond(
            &mut stream,
            deadline,
            404,
            "text/plain; charset=utf-8",
            b"not found: try /, /status.json or /metrics",
            head_only,
        ),
    }
}

fn respond(
    stream: &mut TcpStream,
    deadline: Instant,
    status: u16,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> io::Result<()> {
    let mut out = Vec::with_capacity(256 + body.len());
    let headers =
        [("Content-Type", content_type), ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff")];
    write_head(&mut out, status, headers, Framing::Length(body.len() as u64), true, &http_date(SystemTime::now()));
    if !head_only {
        out.extend_from_slice(body);
    }
    // Write by write, each bounded by what is left of the deadline: a
    // client that stops reading cannot hold the slot past it either.
    let mut rest = &out[..];
    while !rest.is_empty() {
        stream.set_write_timeout(Some(left(deadline)?))?;
        match stream.write(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    // Read nothing more: closing with unread input would reset, so shut our
    // side first and let the client close.
    stream.shutdown(std::net::Shutdown::Write)
}

#[cfg(test)]
mod tests {
    use super::host_allowed;

    #[test]
    fn only_ip_addresses_and_localhost_are_allowed_hosts() {
        for good in ["127.0.0.1", "127.0.0.1:9900", "[::1]", "[::1]:9900", "10.1.2.3:80", "localhost", "LocalHost:9900"]
        {
            assert!(host_allowed(good), "{good}");
        }
        for bad in [
            "evil.example",
            "evil.example:9900",
            "localhost.evil.example",
            "localhost:http",
            "127.0.0.1.nip.io",
            "::1",
            "[::1",
            "",
            "127.0.0.1:99999",
        ] {
            assert!(!host_allowed(bad), "{bad}");
        }
    }
}
