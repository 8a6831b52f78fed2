//! HTTP hello: answers every request with `200 OK`, `content-type:
//! text/plain` and `Hello, world!`, on the host's HTTP interface
//! (`host run ... --listen-http ADDR`). One of the guests of the suite's HTTP
//! benchmark (`bench/suite/src/http.rs`), next to `guests/raw-http-hello`,
//! which answers the same speaking HTTP itself on raw TCP.
//!
//! The host does the protocol: parsing, keep-alive, pipelining, framing,
//! `HEAD`, `Expect: 100-continue`, limits. A request body, if any, is
//! ignored (the host reads and discards what the guest does not want).
//!
//! Nothing here allocates per request: the answer is static and the SDK
//! hands the borrowed header list and body straight to the host. (What the
//! canonical ABI does around the call, lifting the request head into guest
//! memory and lowering the header list, is the bindings' business.)

use wasmloop_sdk::{Handler, Listener, Request, RequestHead, export, warn};

const HEADERS: &[(&str, &str)] = &[("content-type", "text/plain")];
const HELLO: &[u8] = b"Hello, world!";

struct HttpHello;

impl Handler for HttpHello {
    fn init(_config: &str, _listeners: &[Listener]) -> Result<Self, String> {
        Ok(HttpHello)
    }

    fn on_request(&mut self, req: Request, _head: &RequestHead, _body: &[u8], _end: bool) {
        // Fails only if the client is already gone (`on_request_closed`
        // follows) or the answer does not fit the output limit, which 13
        // bytes always do.
        if let Err(e) = req.respond(200, HEADERS, HELLO) {
            warn!("{req:?}: cannot answer ({e})");
        }
    }
}

export!(HttpHello);
