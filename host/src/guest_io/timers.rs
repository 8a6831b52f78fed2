//! The operations of the WIT `timers` interface, shared by the wasm imports
//! (`runtime/imports.rs`) and native handlers (`runtime/native.rs`).

use std::time::Duration;

use wasmloop_io::{ErrorCode, timer_handle, timer_id};
use wasmloop_reactor::Token;

use crate::guest_io::GuestIo;

/// The shortest interval a repeating timer may have: shorter ones would let
/// a guest keep the loop busy without doing anything.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

impl GuestIo {
    /// Fires `on-timer` once, `delay` from now (`timers.set-timeout`).
    pub fn add_timeout(&mut self, delay: Duration) -> Result<u64, ErrorCode> {
        self.start_timer(delay, None)
    }

    /// Fires `on-timer` every `interval`, at least `MIN_INTERVAL` (1 ms)
    /// (`timers.set-interval`).
    pub fn add_interval(&mut self, interval: Duration) -> Result<u64, ErrorCode> {
        if interval < MIN_INTERVAL {
            return Err(ErrorCode::InvalidArgument);
        }
        self.start_timer(interval, Some(interval))
    }

    /// `timers.cancel`.
    pub fn cancel_timer(&mut self, t: u64) -> Result<(), ErrorCode> {
        if self.timers.cancel(timer_id(t)) { Ok(()) } else { Err(ErrorCode::InvalidHandle) }
    }

    fn start_timer(&mut self, delay: Duration, interval: Option<Duration>) -> Result<u64, ErrorCode> {
        if self.timers.len() >= self.limits.max_timers {
            return Err(ErrorCode::LimitReached);
        }
        let deadline = std::time::Instant::now().checked_add(delay).ok_or(ErrorCode::InvalidArgument)?;
        Ok(timer_handle(self.timers.insert(deadline, interval, Token(0))))
    }
}
