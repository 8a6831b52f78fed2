//! What happens after a guest traps: restart with exponential backoff, or
//! stop when the traps come too often (a crash loop), or as configured.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Traps within [`CRASH_WINDOW`] that make a crash loop.
pub const CRASH_LOOP_FAULTS: usize = 5;
pub const CRASH_WINDOW: Duration = Duration::from_secs(60);
/// The first restart's delay; doubled per recent trap, up to the cap.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A guest's recent traps.
#[derive(Debug, Default)]
pub struct FaultHistory {
    recent: VecDeque<Instant>,
}

/// The decision after a trap.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Start a fresh instance after this delay.
    RestartAfter(Duration),
    /// Too many traps in the window: leave it stopped.
    CrashLoop,
}

impl FaultHistory {
    /// Records a trap at `now` and decides what to do under the restart
    /// policy.
    pub fn record(&mut self, now: Instant) -> Next {
        while self.recent.front().is_some_and(|&t| now.duration_since(t) > CRASH_WINDOW) {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        if self.recent.len() >= CRASH_LOOP_FAULTS {
            return Next::CrashLoop;
        }
        let doublings = (self.recent.len() - 1) as u32;
        Next::RestartAfter(FIRST_BACKOFF.saturating_mul(1 << doublings).min(MAX_BACKOFF))
    }

    pub fn count(&self) -> usize {
        self.recent.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_a_crash_loop_stops_the_guest() {
        let t0 = Instant::now();
        let mut history = FaultHistory::default();
        let ms = Duration::from_millis;
        assert_eq!(history.record(t0), Next::RestartAfter(ms(100)));
        assert_eq!(history.record(t0 + ms(200)), Next::RestartAfter(ms(200)));
        assert_eq!(history.record(t0 + ms(500)), Next::RestartAfter(ms(400)));
        assert_eq!(history.record(t0 + ms(1_000)), Next::RestartAfter(ms(800)));
        assert_eq!(history.record(t0 + ms(2_000)), Next::CrashLoop);
    }

    #[test]
    fn old_traps_are_forgiven() {
        let t0 = Instant::now();
        let mut history = FaultHistory::default();
        for i in 0..4 {
            history.record(t0 + Duration::from_secs(i));
        }
        let later = t0 + CRASH_WINDOW + Duration::from_secs(10);
        assert_eq!(history.record(later), Next::RestartAfter(Duration::from_millis(100)));
        assert_eq!(history.count(), 1);
    }
}
