//! The one thread-safe way into the loop, like libwebsockets'
//! `lws_cancel_service`: wake it, or post a closure for it to run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::Poller;
use crate::event_loop::Reactor;
use crate::foreign::Waker;

/// A closure posted to the loop; it runs on the loop thread with the
/// handler and the reactor.
pub(crate) type Job<H> = Box<dyn FnOnce(&mut H, &mut Reactor) + Send>;

/// How a wake reaches the waiting thread.
pub(crate) enum Wake {
    /// The poller's eventfd (`EVFILT_USER` on kqueue).
    Os(Arc<Poller>),
    /// Whatever the foreign loop offers ([`crate::foreign::LoopOps::waker`]).
    Foreign(Waker),
}

pub(crate) struct Shared<H> {
    pub(crate) wake: Wake,
    /// Set by the first `wake` after the loop last looked; later wakes see it
    /// set and skip the syscall, so a storm of wakes costs one write.
    pub(crate) woken: AtomicBool,
    pub(crate) jobs: Mutex<Vec<Job<H>>>,
    pub(crate) closed: AtomicBool,
}

/// A `Send + Sync` handle to an [`EventLoop`](crate::EventLoop), for other
/// threads. Cheap to clone.
pub struct LoopHandle<H> {
    pub(crate) shared: Arc<Shared<H>>,
}

impl<H> Clone for LoopHandle<H> {
    fn clone(&self) -> Self {
        LoopHandle { shared: self.shared.clone() }
    }
}

/// The loop this handle belongs to has been dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopClosed;

impl std::fmt::Display for LoopClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the event loop has been dropped")
    }
}

impl std::error::Error for LoopClosed {}

impl<H> LoopHandle<H> {
    /// Makes the loop's current or next wait return at once. Wakes that
    /// arrive before the loop looks are coalesced into one.
    pub fn wake(&self) {
        if !self.shared.woken.swap(true, Ordering::AcqRel) {
            match &self.shared.wake {
                // The only failure is a full eventfd counter, which means a
                // wake is already pending.
                Wake::Os(poller) => {
                    let _ = poller.notify();
                }
                Wake::Foreign(waker) => waker(),
            }
        }
    }

    /// Runs `job` on the loop thread during the loop's "posted closures"
    /// phase, after the closures posted before it. Fails if the loop is gone.
    pub fn post(&self, job: impl FnOnce(&mut H, &mut Reactor) + Send + 'static) -> Result<(), LoopClosed> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(LoopClosed);
        }
        // A panic elsewhere while holding the lock cannot leave the Vec in a
        // broken state, so a poisoned lock is still usable.
        self.shared.jobs.lock().unwrap_or_else(PoisonError::into_inner).push(Box::new(job));
        self.wake();
        Ok(())
    }
}
