//! Ticker: writes `tick {n} {scheduled} {fired}\n` to every connected client
//! on each tick of a repeating timer.
//!
//! `scheduled` is when tick `n` was due (`start + n * interval`) and `fired`
//! when it ran, both in nanoseconds on the host's monotonic clock, so a
//! client can measure timer lateness. The configuration string is the
//! interval in milliseconds (default 1000).

use std::collections::HashSet;
use std::time::Duration;

use wasmloop_sdk::{CloseReason, Connection, Handler, Instant, Listener, Timer, export, warn};

struct Ticker {
    /// Read just before the timer started, so no tick is due before
    /// `start + n * interval`.
    start: Instant,
    interval_ns: u64,
    /// Ticks so far.
    ticks: u64,
    clients: HashSet<Connection>,
}

impl Handler for Ticker {
    fn init(config: &str, _listeners: &[Listener]) -> Result<Self, String> {
        let millis = match config.trim() {
            "" => 1000,
            text => text
                .parse::<u64>()
                .ok()
                .filter(|&ms| ms > 0)
                .ok_or_else(|| format!("ticker: bad interval {text:?}: expected whole milliseconds, at least 1"))?,
        };
        let start = Instant::now();
        Timer::every(Duration::from_millis(millis))
            .map_err(|e| format!("ticker: cannot start a {millis} ms timer: {e}"))?;
        Ok(Ticker { start, interval_ns: millis.saturating_mul(1_000_000), ticks: 0, clients: HashSet::new() })
    }

    fn on_accept(&mut self, _listener: Listener, conn: Connection) {
        self.clients.insert(conn);
    }

    fn on_close(&mut self, conn: Connection, _reason: CloseReason) {
        self.clients.remove(&conn);
    }

    fn on_timer(&mut self, _timer: Timer) {
        self.ticks += 1;
        let scheduled = self.start.as_nanos() + self.ticks * self.interval_ns;
        let fired = Instant::now().as_nanos();
        let line = format!("tick {} {scheduled} {fired}\n", self.ticks);
        // A client that cannot take a whole line has fallen behind by the
        // host's whole output buffer: drop it rather than break its stream.
        self.clients.retain(|&client| {
            let whole = client.write(line.as_bytes()) == Ok(line.len());
            if !whole {
                warn!("{client:?} cannot keep up; aborting it");
                let _ = client.abort();
            }
            whole
        });
    }
}

export!(Ticker);
