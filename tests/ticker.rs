//! The ticker guest on the real host: timers fire on schedule, never early
//! and only a little late, and the guest sees the same monotonic clock as
//! everyone else on the machine.

use std::time::Duration;

use crate::support::{self, alone, bounded};

#[test]
fn ticks_are_never_early_and_at_most_20_ms_late() {
    let _alone = alone();
    bounded(Duration::from_secs(90), || {
        let host = support::conformance::ticker_command().spawn();
        support::conformance::ticks_on_schedule(&host);
        host.assert_no_errors();
    });
}
