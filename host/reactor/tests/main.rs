//! The reactor's integration tests, one binary (`cargo test -p
//! wasmloop-reactor --test reactor`): one link instead of one per file.
//! Each file is a module named for what it checks, so a test is named
//! `event_loop::…`, `foreign::…`, `proc::…` or `watch::…`.
//!
//! Every test holds [`common::serial`] while it runs (through
//! [`common::bounded`], or directly): the descriptor-leak test counts the
//! whole process's descriptors, and the idle test its loop thread's CPU.

mod common;
mod event_loop;
mod foreign;
mod proc;
mod watch;
