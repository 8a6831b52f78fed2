//! The harness shared by the integration tests, a module per concern:
//!
//! - `guests`: [`guest`] builds the first-party guests from source, once per
//!   test process, and returns the path of a `.wasm` component;
//!   [`example_guest`] builds an example in another language.
//! - `host`: [`Host`] runs the real `host` binary on loopback, waits for its
//!   `ready` log line, keeps its log, and kills it when dropped.
//! - `watchdog`: [`bounded`] runs a test body under a watchdog: a test that
//!   hangs fails (and its hosts are killed) instead of blocking CI.
//!   [`alone`] keeps a test that measures time or CPU from sharing the
//!   process with other tests; [`alone_in_process`] gives a test a process
//!   of its own.
//! - `process`: other commands, run to completion with a time limit.
//! - `clients`: a line reader with deadlines, a background writer that
//!   reports its progress, exact reads, a seeded PRNG.
//! - `measure`: `/proc` readings (CPU time, wakeups, TCP queues).
//! - [`conformance`]: what every echo and chat guest must do, in any language.

pub mod conformance;

mod clients;
mod guests;
mod host;
mod measure;
mod process;
mod watchdog;

pub use clients::{
    IO_TIMEOUT, LineReader, Writer, assert_same_bytes, configure, random_bytes, read_exactly, read_to_eof,
};
pub use guests::{example_guest, guest, workspace_root};
pub use host::{HOST, Host, HostCommand, shared_cache_home};
pub use measure::{monotonic_ns, tcp_queues, tcp_socket};
pub use process::{Output, Signal, describe, raise_fd_limit, run_bounded};
pub use watchdog::{alone, alone_in_process, bounded};
