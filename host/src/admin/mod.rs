//! The admin listener (`host run --admin ADDR`): `/metrics` (Prometheus),
//! `/status.json` and the status page (`/`), described in docs/admin.md.
//!
//! It runs on a thread of its own, blocked in `accept` (no CPU while no one
//! asks): it must answer while the loop is busy or stuck inside a guest —
//! that is when an operator looks — and a scrape must never delay an event.
//! It only reads the loops' counters ([`crate::metrics`]), which need no
//! lock. One request per connection, one connection at a time, each bounded
//! by a 2 s timeout: it serves a scraper and a browser, not the internet.
//!
//! Only counts, sizes and times leave through it: no payload, header or
//! peer address of any guest's traffic is ever recorded.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::{debug, info, warn};
use wasmloop_http::h1::{Framing, HeadParser, Limits, http_date, write_head};

use crate::metrics::{self, Metrics};

const STATUS_PAGE: &str = include_str!("status.html");
/// Time a client has to send its request and take the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
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

fn serve(listener: TcpListener, metrics: &Metrics) {
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                if let Err(e) = answer(stream, metrics) {
                    debug!("admin: a request failed: {e}");
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

fn answer(mut stream: TcpStream, metrics: &Metrics) -> io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut parser = HeadParser::new(Limits { max_head: MAX_REQUEST, max_headers: 64, max_body: 0 });
    let mut buf = vec![0; MAX_REQUEST];
    let mut len = 0;
    let (method, path) = loop {
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
                break (method, path);
            }
            Err(e) => return respond(&mut stream, e.status, "text/plain; charset=utf-8", e.reason.as_bytes(), false),
        }
    };
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return respond(&mut stream, 405, "text/plain; charset=utf-8", b"only GET and HEAD", false);
    }
    match path.as_str() {
        "/" | "/index.html" => respond(&mut stream, 200, "text/html; charset=utf-8", STATUS_PAGE.as_bytes(), head_only),
        "/status.json" => {
            let json = serde_json::to_vec(&metrics::status(metrics)).map_err(io::Error::other)?;
            respond(&mut stream, 200, "application/json", &json, head_only)
        }
        "/metrics" => {
            let text = metrics::encode_prometheus(metrics::status(metrics));
            respond(
                &mut stream,
                200,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                text.as_bytes(),
                head_only,
            )
        }
        _ => respond(
            &mut stream,
            404,
            "text/plain; charset=utf-8",
            b"not found: try /, /status.json or /metrics",
            head_only,
        ),
    }
}

fn respond(stream: &mut TcpStream, status: u16, content_type: &str, body: &[u8], head_only: bool) -> io::Result<()> {
    let mut out = Vec::with_capacity(256 + body.len());
    let headers =
        [("Content-Type", content_type), ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff")];
    write_head(&mut out, status, headers, Framing::Length(body.len() as u64), true, &http_date(SystemTime::now()));
    if !head_only {
        out.extend_from_slice(body);
    }
    stream.write_all(&out)?;
    // Read nothing more: closing with unread input would reset, so shut our
    // side first and let the client close.
    stream.shutdown(std::net::Shutdown::Write)
}
