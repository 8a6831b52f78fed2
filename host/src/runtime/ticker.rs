//! The epoch ticker: the one helper thread, there because the loop thread is
//! inside the guest when a deadline must be enforced. It advances wasmtime's
//! epoch every period, but only while the loop is busy: an idle host, and a
//! host that wakes only for a timer now and then, cause it no wakeups.
//!
//! On Linux the ticker blocks in `read` on a timerfd. The loop thread arms
//! the timer (periodic) when a callback starts and it is not armed, and
//! disarms it in the loop's prepare phase, right before the loop may block
//! ([`EpochTicker::idle`]): each is one cheap syscall, no context switch. A
//! burst of callbacks shorter than a period never wakes the ticker; a loop
//! busy for longer gets a tick per period, and a callback that runs away
//! gets its deadline's worth of ticks and is interrupted.
//!
//! Elsewhere the ticker parks when no callback runs and is unparked when one
//! starts, which costs it a wakeup per burst of callbacks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use wasmtime::Engine;

pub use sys::EpochTicker;

#[cfg(target_os = "linux")]
mod sys {
    use std::os::fd::OwnedFd;

    use rustix::time::{
        Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create, timerfd_settime,
    };

    use super::*;

    pub struct EpochTicker {
        timer: Arc<OwnedFd>,
        period: Duration,
        /// The timer runs (loop thread's view; atomic only so the ticker
        /// can be shared).
        armed: AtomicBool,
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
    }

    impl EpochTicker {
        pub fn start(engine: Engine, period: Duration) -> std::io::Result<EpochTicker> {
            let timer = Arc::new(timerfd_create(TimerfdClockId::Monotonic, TimerfdFlags::CLOEXEC)?);
            let stop = Arc::new(AtomicBool::new(false));
            let (fd, stopped) = (timer.clone(), stop.clone());
            let thread = thread::Builder::new().name("epoch-ticker".into()).spawn(move || {
                let mut expirations = [0u8; 8];
                // Blocks until the timer expires; a disarmed timer never does.
                while rustix::io::read(&*fd, &mut expirations).is_ok() && !stopped.load(SeqCst) {
                    engine.increment_epoch();
                }
            })?;
            Ok(EpochTicker { timer, period, armed: AtomicBool::new(false), stop, thread: Some(thread) })
        }

        /// A callback starts: make sure the timer runs.
        pub fn enter(&self) {
            if !self.armed.swap(true, SeqCst) {
                self.set(self.period, self.period);
            }
        }

        /// The callback returned. The timer keeps running until the loop is
        /// about to block ([`EpochTicker::idle`]), so a busy loop pays no
        /// syscall per callback.
        pub fn exit(&self) {}

        /// The loop may block now: stop the timer.
        pub fn idle(&self) {
            if self.armed.swap(false, SeqCst) {
                self.set(Duration::ZERO, Duration::ZERO);
            }
        }

        fn set(&self, first: Duration, every: Duration) {
            let spec = Itimerspec { it_value: timespec(first), it_interval: timespec(every) };
            // Cannot fail for a valid descriptor and in-range values.
            let _ = timerfd_settime(&*self.timer, TimerfdTimerFlags::empty(), &spec);
        }
    }

    fn timespec(d: Duration) -> Timespec {
        Timespec { tv_sec: d.as_secs() as _, tv_nsec: d.subsec_nanos() as _ }
    }

    impl Drop for EpochTicker {
        fn drop(&mut self) {
            self.stop.store(true, SeqCst);
            // Expire at once so the blocked `read` returns and sees `stop`.
            self.set(Duration::from_nanos(1), Duration::ZERO);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use super::*;

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
                        // stores `busy` before loading `parked`, so one of the
                        // two sees the other and no wakeup is lost.
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

        /// The loop may block now (nothing to do here: `exit` parks).
        pub fn idle(&self) {}
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
}
