//! The ticker guest on the real host: timers fire on schedule, never early
//! and only a little late, and the guest sees the same monotonic clock as
//! everyone else on the machine.

mod support;

use std::time::Duration;

use support::{Host, LineReader, bounded, monotonic_ns};

const INTERVAL_MS: u64 = 50;
/// How late a tick may reach a client, measured from its scheduled time.
const MAX_LATE_NS: u64 = 20_000_000;
const TICKS: usize = 20;

/// One `tick {n} {scheduled_ns} {fired_ns}` line.
struct Tick {
    n: u64,
    scheduled: u64,
    fired: u64,
}

fn parse(line: &str) -> Tick {
    let fields: Vec<&str> = line.split(' ').collect();
    let number = |i: usize| -> u64 {
        fields.get(i).and_then(|f| f.parse().ok()).unwrap_or_else(|| panic!("malformed tick line {line:?}"))
    };
    assert!(fields.len() == 4 && fields[0] == "tick", "malformed tick line {line:?}");
    Tick { n: number(1), scheduled: number(2), fired: number(3) }
}

#[test]
fn ticks_are_never_early_and_at_most_20_ms_late() {
    bounded(Duration::from_secs(90), || {
        let host = Host::command("ticker").args(["--guest-config", &INTERVAL_MS.to_string()]).spawn();
        let mut client = LineReader::new(host.connect());
        let mut previous: Option<Tick> = None;
        let mut worst_late = 0;
        for _ in 0..TICKS {
            let line = client.line();
            // Our own reading of CLOCK_MONOTONIC when the line arrived.
            let arrived = monotonic_ns();
            let tick = parse(&line);
            assert!(
                tick.fired >= tick.scheduled,
                "tick {} fired {} ns before it was due",
                tick.n,
                tick.scheduled - tick.fired
            );
            assert!(
                arrived >= tick.fired,
                "tick {} arrived before it fired: the guest's clock is not CLOCK_MONOTONIC",
                tick.n
            );
            let late = arrived - tick.scheduled;
            assert!(
                late <= MAX_LATE_NS,
                "tick {} reached the client {:.3} ms after it was due (fired {:.3} ms late)",
                tick.n,
                late as f64 / 1e6,
                (tick.fired - tick.scheduled) as f64 / 1e6
            );
            worst_late = worst_late.max(late);
            if let Some(prev) = &previous {
                assert_eq!(tick.n, prev.n + 1, "tick numbers go up by one");
                assert_eq!(
                    tick.scheduled - prev.scheduled,
                    INTERVAL_MS * 1_000_000,
                    "ticks are scheduled one interval apart"
                );
            }
            previous = Some(tick);
        }
        eprintln!("{TICKS} ticks, worst arrival {:.3} ms after schedule", worst_late as f64 / 1e6);
        host.assert_no_errors();
    });
}
