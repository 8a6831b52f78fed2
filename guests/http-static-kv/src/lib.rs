//! An in-memory key-value store over HTTP (`host run ... --listen-http ADDR`):
//!
//! - `PUT /kv/KEY` stores the request body as KEY's value: `201 Created` for
//!   a new key, `204 No Content` for a replaced one; a value over 1 MiB gets
//!   `413 Content Too Large` (the host enforces its own body limit too,
//!   1 MiB by default);
//! - `GET /kv/KEY` answers `200` with the value, or `404`; `HEAD` answers
//!   the same without the body (the host drops it);
//! - `DELETE /kv/KEY` answers `204`, or `404` if there was no such key;
//! - `GET /kv` answers `200` with the keys, one per line, in byte order;
//! - other methods get `405` with an `allow` header; other paths `404`.
//!
//! A key is the rest of the path after `/kv/`, as sent (not
//! percent-decoded). The query is ignored but for `GET /kv/KEY?after=MS`,
//! answered MS milliseconds later from a timer: a response need not come
//! from the callback that got the request. The store lives as long
//! as the guest and is bounded only by the guest's memory limit.
//!
//! It shows both kinds of response and their backpressure. A body that
//! comes in parts (`on_request_body`) is gathered per request. Values up to
//! [`STREAM_ABOVE`] go out whole with `respond`; larger ones are streamed
//! with `start`, `write` and `finish`, and when the host's output buffer is
//! full the rest waits for `on_response_writable`. A value being streamed
//! is shared with the store (`Rc`), so a `PUT` or `DELETE` meanwhile neither
//! copies it nor changes what the reader gets.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use std::time::Duration;

use wasmloop_sdk::{Handler, Listener, Request, RequestHead, Timer, export, warn};

/// The largest value `PUT` accepts.
const MAX_VALUE: usize = 1024 * 1024;

/// Values longer than this are streamed rather than sent in one `respond`.
const STREAM_ABOVE: usize = 64 * 1024;

/// How much of a streamed value one `write` offers: each call hands its
/// bytes to the host, so offering all that is left each time would copy a
/// large value many times over when the client reads slowly.
const CHUNK: usize = 64 * 1024;

const OCTETS: &[(&str, &str)] = &[("content-type", "application/octet-stream")];
const TEXT: &[(&str, &str)] = &[("content-type", "text/plain")];
/// For `405` on `/kv/KEY` (`HEAD` goes with `GET`).
const ALLOW_KEY: &[(&str, &str)] = &[("allow", "GET, PUT, DELETE"), ("content-type", "text/plain")];
/// For `405` on `/kv`, which can only be listed.
const ALLOW_LIST: &[(&str, &str)] = &[("allow", "GET"), ("content-type", "text/plain")];

#[derive(Default)]
struct KvStore {
    values: BTreeMap<String, Rc<Vec<u8>>>,
    /// Requests whose answer is not finished yet.
    pending: HashMap<Request, Pending>,
    /// `GET ?after=MS` requests waiting for their timer, with their key.
    delayed: HashMap<Timer, (Request, String)>,
}

enum Pending {
    /// A `PUT` whose body is still arriving.
    Upload { key: String, body: Vec<u8> },
    /// A streamed response: `value[sent..]` is still to be written.
    Download { value: Rc<Vec<u8>>, sent: usize },
}

/// What a request's path names.
enum Route<'a> {
    /// `/kv`: the list of keys.
    List,
    /// `/kv/KEY`, KEY not empty.
    Key(&'a str),
    /// Anything else.
    Elsewhere,
}

/// `after=MS` in a query.
fn delay(query: Option<&str>) -> Option<u64> {
    query?.split('&').find_map(|pair| pair.strip_prefix("after=")?.parse().ok())
}

fn route(path: &str) -> Route<'_> {
    match path.strip_prefix("/kv") {
        Some("") => Route::List,
        Some(rest) => match rest.strip_prefix('/') {
            Some(key) if !key.is_empty() => Route::Key(key),
            _ => Route::Elsewhere,
        },
        None => Route::Elsewhere,
    }
}

impl Handler for KvStore {
    fn init(_config: &str, _listeners: &[Listener]) -> Result<Self, String> {
        Ok(KvStore::default())
    }

    fn on_request(&mut self, req: Request, head: &RequestHead, body: &[u8], end: bool) {
        // A body we do not want (on GET, DELETE, ...) is the host's to skip.
        match (route(head.path()), head.method()) {
            (Route::List, "GET" | "HEAD") => self.list(req),
            (Route::List, _) => answer(req, 405, ALLOW_LIST, b"/kv can only be listed (GET)\n"),
            (Route::Key(key), "GET" | "HEAD") => match delay(head.query()) {
                Some(ms) => match Timer::after(Duration::from_millis(ms)) {
                    Ok(timer) => {
                        self.delayed.insert(timer, (req, key.to_owned()));
                    }
                    Err(e) => answer(req, 503, TEXT, format!("cannot wait: {e}\n").as_bytes()),
                },
                None => self.get(req, key),
            },
            (Route::Key(key), "PUT") => self.put(req, key, head, body, end),
            (Route::Key(key), "DELETE") => {
                let status = if self.values.remove(key).is_some() { 204 } else { 404 };
                answer(req, status, &[], b"");
            }
            (Route::Key(_), _) => answer(req, 405, ALLOW_KEY, b"use GET, PUT or DELETE on /kv/KEY\n"),
            (Route::Elsewhere, _) => answer(req, 404, TEXT, b"not found: try /kv or /kv/KEY\n"),
        }
    }

    fn on_timer(&mut self, timer: Timer) {
        // The request may have died meanwhile (its client left): answering
        // it then fails harmlessly with `InvalidHandle`.
        if let Some((req, key)) = self.delayed.remove(&timer) {
            self.get(req, &key);
        }
    }

    fn on_request_body(&mut self, req: Request, data: &[u8], end: bool) {
        // Not an upload we are gathering: already answered (413), or a body
        // of a request that does not take one.
        let Some(Pending::Upload { body, .. }) = self.pending.get_mut(&req) else {
            return;
        };
        if body.len() + data.len() > MAX_VALUE {
            self.pending.remove(&req);
            too_large(req);
            return;
        }
        body.extend_from_slice(data);
        if end && let Some(Pending::Upload { key, body }) = self.pending.remove(&req) {
            self.store(req, key, body);
        }
    }

    fn on_response_writable(&mut self, req: Request) {
        match self.pending.remove(&req) {
            Some(Pending::Download { value, sent }) => self.stream(req, value, sent),
            // Only streams ask for room; an upload stays as it is.
            Some(upload) => {
                self.pending.insert(req, upload);
            }
            None => {}
        }
    }

    fn on_request_closed(&mut self, req: Request) {
        self.pending.remove(&req);
    }
}

impl KvStore {
    fn list(&mut self, req: Request) {
        let mut keys = Vec::with_capacity(self.values.keys().map(|key| key.len() + 1).sum());
        for key in self.values.keys() {
            keys.extend_from_slice(key.as_bytes());
            keys.push(b'\n');
        }
        self.send(req, TEXT, Rc::new(keys));
    }

    fn get(&mut self, req: Request, key: &str) {
        match self.values.get(key) {
            Some(value) => {
                let value = Rc::clone(value);
                self.send(req, OCTETS, value);
            }
            None => answer(req, 404, TEXT, b"no such key\n"),
        }
    }

    fn put(&mut self, req: Request, key: &str, head: &RequestHead, body: &[u8], end: bool) {
        // A declared length says at once what would only show at the end.
        if head.body_length().is_some_and(|n| n > MAX_VALUE as u64) || body.len() > MAX_VALUE {
            too_large(req);
            return;
        }
        if end {
            self.store(req, key.to_owned(), body.to_vec());
            return;
        }
        // A chunked body (no declared length) grows as it comes.
        let declared = head.body_length().map_or(0, |n| n as usize);
        let mut gathered = Vec::with_capacity(declared.max(body.len()));
        gathered.extend_from_slice(body);
        self.pending.insert(req, Pending::Upload { key: key.to_owned(), body: gathered });
    }

    fn store(&mut self, req: Request, key: String, value: Vec<u8>) {
        let status = if self.values.insert(key, Rc::new(value)).is_some() { 204 } else { 201 };
        answer(req, status, &[], b"");
    }

    /// Answers `200` with `value`: whole if small, else streamed.
    fn send(&mut self, req: Request, headers: &[(&str, &str)], value: Rc<Vec<u8>>) {
        if value.len() <= STREAM_ABOVE {
            answer(req, 200, headers, &value);
            return;
        }
        match req.start(200, headers) {
            Ok(()) => self.stream(req, value, 0),
            Err(e) => warn!("{req:?}: cannot start the response ({e})"),
        }
    }

    /// Writes `value[sent..]` as far as the host takes it, then finishes the
    /// response or waits for `on_response_writable`.
    fn stream(&mut self, req: Request, value: Rc<Vec<u8>>, mut sent: usize) {
        while sent < value.len() {
            let chunk = &value[sent..value.len().min(sent + CHUNK)];
            match req.write(chunk) {
                Ok(taken) => {
                    sent += taken;
                    if taken < chunk.len() {
                        // The output buffer is full: go on once it drains.
                        if let Err(e) = req.notify_writable() {
                            warn!("{req:?}: cannot wait for room ({e})");
                            return;
                        }
                        self.pending.insert(req, Pending::Download { value, sent });
                        return;
                    }
                }
                Err(e) => {
                    // The client is gone; `on_request_closed` follows.
                    warn!("{req:?}: write failed ({e})");
                    return;
                }
            }
        }
        if let Err(e) = req.finish() {
            warn!("{req:?}: cannot finish the response ({e})");
        }
    }
}

fn too_large(req: Request) {
    answer(req, 413, TEXT, b"values are limited to 1 MiB\n");
}

/// Answers with a whole response. It fails only for a client that is gone
/// (`on_request_closed` follows) or for our own bug (a bad header), so it is
/// logged, not handled.
fn answer(req: Request, status: u16, headers: &[(&str, &str)], body: &[u8]) {
    if let Err(e) = req.respond(status, headers, body) {
        warn!("{req:?}: cannot answer {status} ({e})");
    }
}

export!(KvStore);
