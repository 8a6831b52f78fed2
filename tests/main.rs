//! The host's integration tests: the real `host` binary (or the library,
//! embedded), real guests, real sockets on loopback.
//!
//! One test binary, `integration`, with a module per file: one link of
//! wasmtime instead of one per file. A test's name starts with its file's:
//! `cargo test --test integration sandbox::` runs `sandbox.rs`.
//!
//! cargo's test threads run tests of different files side by side. A test
//! that times the host against a deadline, reads its CPU time or loads the
//! machine on purpose takes [`support::alone`]; the allocation count runs
//! in a process of its own ([`support::alone_in_process`]).

mod support;

mod admin;
mod allocations;
mod cache;
mod chat;
mod cli;
mod echo;
mod embed;
mod faults;
mod foreign_loop;
mod http;
mod inspect;
mod lang_c;
mod lang_js;
mod lang_python;
mod lang_zig;
mod lifecycle;
mod migrate;
mod native;
mod outbound;
mod reload;
mod sandbox;
mod status_page;
mod ticker;
mod websocket;
mod workers;
