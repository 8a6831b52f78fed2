//! `wasi:io/poll` and `wasi:clocks/monotonic-clock` for a guest on the loop
//! thread: a wait never blocks.
//!
//! wasmtime-wasi's synchronous `poll` and `pollable.block` run the wait to
//! completion on a tokio runtime, and its clock pollables are tokio timers.
//! On our loop that is wrong twice: a host call cannot be interrupted by the
//! epoch deadline, so a `sleep(10 s)` would freeze every guest for ten
//! seconds; and our tokio context has no timer driver, so it panicked and
//! took the host down. Here a wait is answered from what is ready *now*:
//! `ready` says so, `poll` returns the ready subset, and a `poll` or `block`
//! with nothing ready is a fault of that guest ([`Blocked`]), at once, with
//! no time spent. A callback must return to the loop to wait (a timer, the
//! next event); WASI's blocking calls are not for that.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime_wasi::WasiView;
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock;
use wasmtime_wasi::p2::bindings::io::poll as async_poll;
use wasmtime_wasi::p2::bindings::sync::io::poll;
use wasmtime_wasi::p2::{DynPollable, Pollable, subscribe};

use crate::runtime::imports::monotonic_nanos;
use crate::runtime::state::GuestState;

/// A guest waited on something that was not ready. The fault kind
/// `blocked`.
#[derive(Debug, thiserror::Error)]
#[error(
    "blocked: waited in wasi:io/poll ({0}) on a pollable that is not ready (a sleep, or a blocking read); \
     a callback must not block the loop: return, and let a timer or the next event call it again"
)]
pub struct Blocked(&'static str);

/// The store's resource table, seen through these interfaces.
pub struct NonBlocking<'a>(&'a mut ResourceTable);

struct View;
impl wasmtime::component::HasData for View {
    type Data<'a> = NonBlocking<'a>;
}

pub fn add_to_linker(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    poll::add_to_linker::<GuestState, View>(linker, |s| NonBlocking(s.ctx().table))?;
    monotonic_clock::add_to_linker::<GuestState, View>(linker, |s| NonBlocking(s.ctx().table))?;
    Ok(())
}

/// Polls `future` once. The futures behind our pollables never wait for a
/// wake-up (each one is ready or not when asked), so one poll is the
/// answer, and `None` means "not ready".
fn now_or_never<F: Future>(future: F) -> Option<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut cx) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

impl poll::Host for NonBlocking<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        // wasmtime-wasi's `poll` resolves with the ready subset, or stays
        // pending while none is ready.
        now_or_never(async_poll::Host::poll(self.0, pollables)).unwrap_or_else(|| Err(Blocked("poll").into()))
    }
}

impl poll::HostPollable for NonBlocking<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        now_or_never(async_poll::HostPollable::ready(self.0, pollable)).unwrap_or(Ok(false))
    }

    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        now_or_never(async_poll::HostPollable::block(self.0, pollable))
            .unwrap_or_else(|| Err(Blocked("pollable.block").into()))
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        async_poll::HostPollable::drop(self.0, pollable)
    }
}

/// A monotonic-clock pollable: ready once the clock reaches `at`
/// (nanoseconds of CLOCK_MONOTONIC, the clock `now` reads).
struct Deadline {
    at: u64,
}

#[wasmtime_wasi::async_trait]
impl Pollable for Deadline {
    async fn ready(&mut self) {
        if monotonic_nanos() < self.at {
            // Never woken: `now_or_never` reads this as "not ready".
            std::future::pending::<()>().await
        }
    }
}

impl NonBlocking<'_> {
    fn deadline(&mut self, at: u64) -> wasmtime::Result<Resource<DynPollable>> {
        let deadline = self.0.push(Deadline { at })?;
        subscribe(self.0, deadline)
    }
}

impl monotonic_clock::Host for NonBlocking<'_> {
    fn now(&mut self) -> wasmtime::Result<u64> {
        Ok(monotonic_nanos())
    }

    fn resolution(&mut self) -> wasmtime::Result<u64> {
        Ok(1)
    }

    fn subscribe_instant(&mut self, when: u64) -> wasmtime::Result<Resource<DynPollable>> {
        self.deadline(when)
    }

    fn subscribe_duration(&mut self, duration: u64) -> wasmtime::Result<Resource<DynPollable>> {
        self.deadline(monotonic_nanos().saturating_add(duration))
    }
}
