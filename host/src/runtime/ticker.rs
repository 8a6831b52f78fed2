//! The epoch ticker: the one helper thread, there because a loop thread is
//! inside the guest when a deadline must be enforced. It advances wasmtime's
//! epoch every period, but only while some loop is busy: an idle host, and a
//! host that wakes only for a timer now and then, cause it no wakeups.
//!
//! One engine has one epoch and so one ticker, shared by every loop that
//! runs guests of that engine (`host run --workers N`). Each loop has its own
//! handle ([`EpochTicker::for_another_loop`]) that remembers whether *this*
//! loop is busy; the shared part counts the busy loops and runs the timer
//! while the count is above zero. A loop going idle therefore never stops
//! the ticks another loop's runaway callback needs to be interrupted.
//!
//! On Linux the ticker blocks in `read` on a timerfd. A loop marks itself
//! busy when a callback starts and it is not busy yet, and idle in its
//! prepare phase, right before it may block ([`EpochTicker::idle`]). Only the
//! first loop to get busy arms the timer and only the last to go idle
//! disarms it: one cheap syscall each, no context switch, and nothing per
//! callback. A burst of callbacks shorter than a period never wakes the
//! ticker; a loop busy for longer gets a tick per period, and a callback that
//! runs away gets its deadline's worth of ticks and is interrupted. (Ticks
//! are wall-clock periods, so another loop being busy too does not shorten
//! anyone's deadline.)
//!
//! Elsewhere the ticker parks when no callback runs on any loop and is
//! unparked when one starts, which costs it a wakeup per burst of callbacks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use wasmtime::Engine;

pub use sys::EpochTicker;

#[cfg(target_os = "linux")]
mod sys {
    use std::os::fd::OwnedFd;
    use std::sync::Mutex;

    use rustix::time::{
        Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create, timerfd_settime,
    };

    use super::*;

    /// One loop's handle on the engine's ticker.
    pub struct EpochTicker {
        shared: Arc<Shared>,
        /// This loop counts as busy (its own view; atomic only so the handle
        /// can be shared with the guests of the loop).
        busy: AtomicBool,
    }

    /// The timer and its thread, shared by every loop of one engine.
    struct Shared {
        timer: Arc<OwnedFd>,
        period: Duration,
        /// Loops that are busy. Locked only when a loop changes from idle to
        /// busy or back (once per burst of callbacks), and held across the
        /// `timerfd_settime`, so a loop going idle cannot disarm the timer
        /// after another one armed it.
        busy_loops: Mutex<usize>,
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
            let shared = Shared { timer, period, busy_loops: Mutex::new(0), stop, thread: Some(thread) };
            Ok(EpochTicker { shared: Arc::new(shared), busy: AtomicBool::new(false) })
        }

        /// A handle for another loop (on another thread) running guests of
        /// the same engine: the same timer and thread, its own busy state.
        pub fn for_another_loop(&self) -> EpochTicker {
            EpochTicker { shared: self.shared.clone(), busy: AtomicBool::new(false) }
        }

        /// A callback starts: make sure the timer runs.
        pub fn enter(&self) {
            if !self.busy.swap(true, SeqCst) {
                let mut busy_loops = self.shared.lock();
                *busy_loops += 1;
                if *busy_loops == 1 {
                    self.shared.set(self.shared.period, self.shared.period);
                }
            }
        }

        /// The callback returned. The timer keeps running until the loop is
        /// about to block ([`EpochTicker::idle`]), so a busy loop pays no
        /// syscall per callback.
        pub fn exit(&self) {}

        /// The loop may block now: stop the timer unless another loop is
        /// still busy.
        pub fn idle(&self) {
            if self.busy.swap(false, SeqCst) {
                let mut busy_loops = self.shared.lock();
                *busy_loops -= 1;
                if *busy_loops == 0 {
                    self.shared.set(Duration::ZERO, Duration::ZERO);
                }
            }
        }
    }

    impl Drop for EpochTicker {
        /// A loop that goes away while busy (its thread panicked, say) must
        /// not keep the timer running for ever.
        fn drop(&mut self) {
            self.idle();
        }
    }

    impl Shared {
        fn lock(&self) -> std::sync::MutexGuard<'_, usize> {
            // The count stays consistent even if a holder panicked: it is
            // changed in one statement.
            self.busy_loops.lock().unwrap_or_else(|e| e.into_inner())
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

    impl Drop for Shared {
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
    use std::sync::atomic::AtomicUsize;
    use std::thread::Thread;

    use super::*;

    struct Shared {
        engine: Engine,
        /// Callbacks running, at most one per loop.
        busy: AtomicUsize,
        /// The ticker is parked (or about to park).
        parked: AtomicBool,
        stop: AtomicBool,
    }

    /// One loop's handle on the engine's ticker. Every handle is alike here:
    /// `busy` counts callbacks, not loops.
    pub struct EpochTicker {
        shared: Arc<Shared>,
        thread: Thread,
        _owner: Arc<Owner>,
    }

    /// Stops and joins the thread when the last handle goes.
    struct Owner {
        shared: Arc<Shared>,
        thread: Option<JoinHandle<()>>,
    }

    impl EpochTicker {
        pub fn start(engine: Engine, period: Duration) -> std::io::Result<EpochTicker> {
            let shared = Arc::new(Shared {
                engine,
                busy: AtomicUsize::new(0),
                parked: AtomicBool::new(false),
                stop: AtomicBool::new(false),
            });
            let ticker = shared.clone();
            let thread = thread::Builder::new().name("epoch-ticker".into()).spawn(move || {
                while !ticker.stop.load(SeqCst) {
                    if ticker.busy.load(SeqCst) == 0 {
                        // Publish `parked` before re-checking `busy`: `enter`
                        // stores `busy` before loading `parked`, so one of the
                        // two sees the other and no wakeup is lost.
                        ticker.parked.store(true, SeqCst);
                        if ticker.busy.load(SeqCst) == 0 && !ticker.stop.load(SeqCst) {
                            thread::park();
                        }
                        ticker.parked.store(false, SeqCst);
                        continue;
                    }
                    thread::sleep(period);
                    ticker.engine.increment_epoch();
                }
            })?;
            let owner = Arc::new(Owner { shared: shared.clone(), thread: Some(thread) });
            let thread = owner.thread.as_ref().map(|t| t.thread().clone()).expect("just spawned");
            Ok(EpochTicker { shared, thread, _owner: owner })
        }

        /// A handle for another loop running guests of the same engine.
        pub fn for_another_loop(&self) -> EpochTicker {
            EpochTicker { shared: self.shared.clone(), thread: self.thread.clone(), _owner: self._owner.clone() }
        }

        /// A callback starts: make sure the ticker runs.
        pub fn enter(&self) {
            self.shared.busy.fetch_add(1, SeqCst);
            if self.shared.parked.load(SeqCst) {
                self.thread.unpark();
            }
        }

        /// The callback returned: the ticker parks after its current tick
        /// if no other loop is inside a callback.
        pub fn exit(&self) {
            self.shared.busy.fetch_sub(1, SeqCst);
        }

        /// The loop may block now (nothing to do here: `exit` parks).
        pub fn idle(&self) {}
    }

    impl Drop for Owner {
        fn drop(&mut self) {
            self.shared.stop.store(true, SeqCst);
            if let Some(t) = self.thread.take() {
                t.thread().unpark();
                let _ = t.join();
            }
        }
    }
}
