//! CPU fairness between the guests on one loop.
//!
//! The callback deadline bounds one callback; this bounds a guest's share
//! of the loop over many of them, so callbacks that each stay under the
//! deadline cannot together stall a neighbour (10,000 timers each spinning
//! 49 ms, or one slow callback per connection over thousands of them).
//!
//! - **Per turn** a guest gets at most [`TURN_SLICE`] of callback time and
//!   `max_callbacks_per_turn` callbacks. Past either, its remaining events
//!   wait for the next turn (the server defers them), so every other
//!   guest's ready events are served in between: a neighbour waits at most
//!   one slice plus one callback.
//! - **Per second** a guest may use `cpu_budget` of callback time (a token
//!   bucket holding one second's budget, refilled continuously). Past it
//!   the guest is *throttled*: its events are held until the bucket is
//!   back above zero, while other guests run and the loop sleeps if
//!   nothing else is ready.
//! - A guest that keeps hitting its budget for `cpu_overrun` is faulted
//!   (`cpu_budget`), and its fault policy applies.
//!
//! Callback time is wall time on the loop thread, host imports included
//! (a `write` syscall counts against the guest that made it).
//!
//! Not guaranteed: the budget is not a reservation. A guest under its
//! budget can still wait behind others' slices, and the first callback
//! that crosses the budget runs to its end (at most its deadline).

use std::time::{Duration, Instant};

/// Callback time a guest gets per loop turn before its other events wait
/// for the next turn.
pub const TURN_SLICE: Duration = Duration::from_millis(10);

/// Two throttles further apart than this end an overrun: the guest was
/// back under its budget in between.
const OVERRUN_GAP: Duration = Duration::from_secs(2);

/// What may happen to a guest's next event now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Run it.
    Open,
    /// The guest used its slice of this turn: the next turn.
    NextTurn,
    /// The guest is over its budget until the given time.
    Throttled(Instant),
    /// The guest has been over its budget for `cpu_overrun`: a fault.
    Overrun(Duration),
}

/// The limits of [`CpuShare`], from the guest's limits.
#[derive(Clone, Copy, Debug)]
pub struct CpuLimits {
    pub budget: Duration,
    pub overrun: Duration,
    pub callbacks_per_turn: u32,
}

/// One guest's use of the loop.
#[derive(Debug)]
pub struct CpuShare {
    limits: CpuLimits,
    /// The turn (its clock reading) the counts below are for.
    turn: Option<Instant>,
    turn_used: Duration,
    turn_callbacks: u32,
    /// Budget left, in nanoseconds; negative when overdrawn (by at most
    /// one callback: a deadline, or `init`'s).
    tokens: i64,
    refilled: Instant,
    /// Held until then.
    throttled_until: Option<Instant>,
    /// When the current run of throttles began, and the last one.
    overrun_since: Option<Instant>,
    last_throttle: Option<Instant>,
}

impl CpuShare {
    pub fn new(limits: CpuLimits, now: Instant) -> CpuShare {
        CpuShare {
            limits,
            turn: None,
            turn_used: Duration::ZERO,
            turn_callbacks: 0,
            tokens: nanos(limits.budget),
            refilled: now,
            throttled_until: None,
            overrun_since: None,
            last_throttle: None,
        }
    }

    /// May the guest run a callback in the turn that read the clock at
    /// `turn`? `throttled` is told when a throttle begins.
    pub fn gate(&mut self, turn: Instant) -> Gate {
        if self.turn != Some(turn) {
            // The clock stands still within a turn: refill once per turn.
            self.turn = Some(turn);
            self.turn_used = Duration::ZERO;
            self.turn_callbacks = 0;
            self.refill(turn);
        }
        if let Some(until) = self.throttled_until {
            if turn < until {
                return Gate::Throttled(until);
            }
            self.throttled_until = None;
        }
        if self.tokens < 0 {
            return self.throttle(turn);
        }
        if self.turn_used >= TURN_SLICE || self.turn_callbacks >= self.limits.callbacks_per_turn {
            return Gate::NextTurn;
        }
        Gate::Open
    }

    /// A callback ran for `took`.
    pub fn charge(&mut self, took: Duration) {
        self.turn_used += took;
        self.turn_callbacks += 1;
        self.tokens = self.tokens.saturating_sub(nanos(took));
    }

    /// Whether the guest is held by its budget now.
    pub fn throttled(&self) -> Option<Instant> {
        self.throttled_until
    }

    fn refill(&mut self, now: Instant) {
        // A second refills the whole bucket: longer gaps change nothing,
        // and the product below stays under 10^18.
        let elapsed = nanos(now.saturating_duration_since(self.refilled).min(Duration::from_secs(1)));
        self.refilled = now;
        // budget per second × elapsed seconds, in ns, capped at one second's.
        let budget = nanos(self.limits.budget);
        let refill = budget * elapsed / 1_000_000_000;
        self.tokens = self.tokens.saturating_add(refill).min(budget);
    }

    fn throttle(&mut self, now: Instant) -> Gate {
        if self.last_throttle.is_none_or(|last| now.saturating_duration_since(last) > OVERRUN_GAP) {
            self.overrun_since = Some(now);
        }
        self.last_throttle = Some(now);
        let over = now.saturating_duration_since(self.overrun_since.unwrap_or(now));
        if over >= self.limits.overrun {
            return Gate::Overrun(over);
        }
        // Until the bucket is back at zero.
        let budget = nanos(self.limits.budget).max(1);
        // Rounded up: when it ends, the bucket is back at zero. An overdraft
        // over 9 s would overflow; the clamp below cuts it to 1 s anyway.
        let overdraft = self.tokens.saturating_neg().min(9_000_000_000);
        let wait_ns = (overdraft * 1_000_000_000 + budget - 1) / budget;
        let until = now + Duration::from_nanos(wait_ns.clamp(1_000_000, 1_000_000_000) as u64);
        self.throttled_until = Some(until);
        Gate::Throttled(until)
    }
}

/// A duration in nanoseconds, saturating (ours are seconds at most).
fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: CpuLimits =
        CpuLimits { budget: Duration::from_millis(500), overrun: Duration::from_secs(3), callbacks_per_turn: 4 };

    #[test]
    fn a_turn_allows_one_slice_of_time_and_a_number_of_callbacks() {
        let t0 = Instant::now();
        let mut share = CpuShare::new(LIMITS, t0);
        for _ in 0..4 {
            assert_eq!(share.gate(t0), Gate::Open);
            share.charge(Duration::from_micros(10));
        }
        assert_eq!(share.gate(t0), Gate::NextTurn, "callbacks per turn");
        let t1 = t0 + Duration::from_millis(1);
        assert_eq!(share.gate(t1), Gate::Open, "a new turn");
        share.charge(TURN_SLICE);
        assert_eq!(share.gate(t1), Gate::NextTurn, "the slice");
    }

    #[test]
    fn past_its_budget_a_guest_is_throttled_until_the_bucket_refills_and_a_lasting_overrun_is_a_fault() {
        let t0 = Instant::now();
        let mut share = CpuShare::new(LIMITS, t0);
        let mut now = t0;
        // 40 ms callbacks back to back, each refilling 20 ms (500 ms/s):
        // 20 ms net a callback, so 25 fit in the 500 ms bucket, and a 26th
        // starts at exactly zero.
        let mut ran = 0;
        while share.gate(now) == Gate::Open {
            share.charge(Duration::from_millis(40));
            now += Duration::from_millis(40);
            ran += 1;
        }
        assert_eq!(ran, 26);
        let Gate::Throttled(until) = share.gate(now) else { panic!("throttled") };
        // 20 ms overdrawn at 500 ms/s: 40 ms.
        assert_eq!(until.duration_since(now), Duration::from_millis(40));
        assert_eq!(share.gate(until - Duration::from_millis(1)), Gate::Throttled(until));
        // Keep spinning whenever allowed: throttled again and again, then a fault.
        let mut now = until;
        let fault = loop {
            match share.gate(now) {
                Gate::Open | Gate::NextTurn => {
                    share.charge(Duration::from_millis(40));
                    now += Duration::from_millis(40);
                }
                Gate::Throttled(until) => now = until,
                Gate::Overrun(over) => break over,
            }
        };
        assert!(fault >= LIMITS.overrun, "{fault:?}");
        assert!(now.duration_since(t0) < LIMITS.overrun + Duration::from_secs(2));
    }

    #[test]
    fn a_guest_back_under_its_budget_for_a_while_starts_a_new_overrun() {
        let t0 = Instant::now();
        let mut share = CpuShare::new(LIMITS, t0);
        share.charge(Duration::from_millis(600));
        assert!(matches!(share.gate(t0), Gate::Throttled(_)));
        // Quiet for 5 s (longer than the overrun allowance), then over
        // again: a new run of throttles, not a fault.
        let later = t0 + Duration::from_secs(5);
        assert_eq!(share.gate(later), Gate::Open, "refilled");
        share.charge(Duration::from_millis(1100));
        assert!(matches!(share.gate(later), Gate::Throttled(_)));
    }
}
