//! Timers and the host's monotonic clock.

use std::ops::Add;
use std::time::Duration;

use crate::Result;
use crate::bindings::wasmloop::handler::{clock, timers};

/// A timer started by the guest; it fires
/// [`Handler::on_timer`](crate::Handler::on_timer).
///
/// Timers never fire early and may fire late when the loop is busy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timer(pub(crate) u64);

impl Timer {
    /// Fires once, `delay` from now.
    pub fn after(delay: Duration) -> Result<Timer> {
        Ok(Timer(timers::set_timeout(nanos(delay))?))
    }

    /// Fires every `interval` (at least 1 ms) until cancelled. A late tick
    /// does not shift the schedule: ticks missed meanwhile are skipped.
    pub fn every(interval: Duration) -> Result<Timer> {
        Ok(Timer(timers::set_interval(nanos(interval))?))
    }

    /// Stops the timer; it does not fire again, even if already due.
    pub fn cancel(&self) -> Result<()> {
        Ok(timers::cancel(self.0)?)
    }
}

/// A point on the host's monotonic clock (the clock timers run on).
///
/// Only differences are meaningful; [`as_nanos`](Self::as_nanos) counts from
/// an arbitrary origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

impl Instant {
    /// The current time.
    pub fn now() -> Instant {
        Instant(clock::now())
    }

    /// Nanoseconds since the clock's origin.
    pub fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time from `earlier` to `self`; zero if `earlier` is later.
    pub fn duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// Time since `self`.
    pub fn elapsed(self) -> Duration {
        Instant::now().duration_since(self)
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;

    /// Saturates at the end of the clock's range (~584 years).
    fn add(self, d: Duration) -> Instant {
        Instant(self.0.saturating_add(nanos(d)))
    }
}

/// `d` in nanoseconds, saturated to the WIT's `u64`.
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
