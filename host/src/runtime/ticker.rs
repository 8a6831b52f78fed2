//! The epoch ticker: the one helper thread, there because the loop thread is
//! inside the guest when a deadline must be enforced. It ticks only while a
//! callback runs and parks otherwise, so an idle host makes no wakeups.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use wasmtime::Engine;

struct Shared {
    engine: Engine,
    /// A callback is running.
    busy: AtomicBool,
    /// The ticker is parked (or about to park).
    parked: AtomicBool,
    stop: AtomicBool,
}

pub struct EpochTicker {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub fn start(engine: Engine, period: Duration) -> std::io::Result<EpochTicker> {
        let shared = Arc::new(Shared {
            engine,
            busy: AtomicBool::new(false),
            parked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let ticker = shared.clone();
        let thread = thread::Builder::new().name("epoch-ticker".into()).spawn(move || {
            while !ticker.stop.load(SeqCst) {
                if !ticker.busy.load(SeqCst) {
                    // Publish `parked` before re-checking `busy`: `enter`
                    // stores `busy` before loading `parked`, so one of the two
                    // sees the other and no wakeup is lost.
                    ticker.parked.store(true, SeqCst);
                    if !ticker.busy.load(SeqCst) && !ticker.stop.load(SeqCst) {
                        thread::park();
                    }
                    ticker.parked.store(false, SeqCst);
                    continue;
                }
                thread::sleep(period);
                ticker.engine.increment_epoch();
            }
        })?;
        Ok(EpochTicker { shared, thread: Some(thread) })
    }

    /// A callback starts: make sure the ticker runs.
    pub fn enter(&self) {
        self.shared.busy.store(true, SeqCst);
        if self.shared.parked.load(SeqCst)
            && let Some(t) = &self.thread
        {
            t.thread().unpark();
        }
    }

    /// The callback returned: the ticker parks after its current tick.
    pub fn exit(&self) {
        self.shared.busy.store(false, SeqCst);
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.shared.stop.store(true, SeqCst);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}
