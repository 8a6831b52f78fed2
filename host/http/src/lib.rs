//! HTTP/1.1 and WebSocket (RFC 6455), server side, sans-IO: the caller reads
//! bytes from its sockets and hands them in; these modules say what they
//! mean (a request head, body bytes, a message, an error with the status or
//! close code to answer) and build the bytes to write back. Nothing here
//! does IO, allocates per event in steady state, or knows about wasm, so it
//! can be fuzzed alone (`fuzz/`).

#![forbid(unsafe_code)]

pub mod h1;
pub mod ws;
