//! The HTTP benchmark's `wasmtime serve` contender: a `wasi:http`
//! incoming handler that answers every request like the `http-hello` guests
//! (200, `Content-Type: text/plain`, `Hello, world!`).
//!
//! Built like the guests (`cargo build --profile guest --target
//! wasm32-wasip2 -p http-wasi`) and served with
//! `wasmtime serve -S cli=y target/wasm32-wasip2/guest/http_wasi.wasm`
//! (a std Rust component imports `wasi:cli`).

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

const BODY: &[u8] = b"Hello, world!";

struct Hello;

impl Guest for Hello {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        let headers = Fields::from_list(&[
            ("content-type".to_string(), b"text/plain".to_vec()),
            ("content-length".to_string(), BODY.len().to_string().into_bytes()),
        ])
        .expect("valid header fields");
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("the response body, taken once");
        ResponseOutparam::set(response_out, Ok(response));
        let stream = body.write().expect("the body stream, taken once");
        // 13 bytes fit any stream's first write; a failed write means the
        // client is gone, and there is nobody left to tell.
        let _ = stream.blocking_write_and_flush(BODY);
        drop(stream);
        let _ = OutgoingBody::finish(body, None);
    }
}

wasi::http::proxy::export!(Hello);
