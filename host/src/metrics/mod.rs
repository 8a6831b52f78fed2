//! What the host counts, per guest and per loop, for the admin listener
//! (`crate::admin`): `/metrics`, `/status.json` and the status page.
//!
//! A loop thread is the only writer of its counters, so an update is a
//! relaxed load and a relaxed store (no locked instruction, no fence); the
//! admin thread reads them while the loops run. Each worker has its own
//! [`WorkerMetrics`], and a guest its own [`GuestMetrics`] in each worker,
//! summed when read. With no `--admin` nothing is recorded at all: every
//! hook is behind an `Option`.
//!
//! Not guaranteed: a reading is not one atomic snapshot (a count and its sum
//! may be an event apart), and counters are not persisted across processes.

mod export;
pub mod histogram;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

pub use export::{encode_prometheus, status};
use histogram::Histogram;

use crate::callbacks::Callback;

/// When a callback starts, for [`GuestMetrics::callback`]: the CPU's
/// time-stamp counter where it is steady (quanta calibrates it against the
/// OS clock), else the OS clock.
pub fn stamp() -> quanta::Instant {
    quanta::Instant::now()
}

/// A counter with one writer thread.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn add(&self, n: u64) {
        // One writer: no read-modify-write instruction needed.
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    #[inline]
    pub fn sub(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).saturating_sub(n), Relaxed);
    }

    pub fn set(&self, n: u64) {
        self.0.store(n, Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Why a guest faulted: the `kind` label of the trap counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Still running at the callback deadline (epoch interruption).
    Deadline,
    /// A memory or table grow over the guest's memory limit (`max_memory`,
    /// memories and tables together), or one that failed.
    MemoryLimit,
    /// A memory or table access out of bounds.
    OutOfBounds,
    Unreachable,
    StackOverflow,
    /// Integer overflow, division by zero, a bad float-to-int conversion.
    Arithmetic,
    /// A null or mistyped indirect call.
    IndirectCall,
    /// Any other trap or error out of the guest.
    Other,
    /// A native handler panicked.
    Panic,
    /// `init` or `restore` returned an error.
    InitRefused,
    /// Waited in `wasi:io/poll` on something not ready (a sleep).
    Blocked,
    /// Kept using more than its CPU budget (`--cpu-budget-ms`).
    CpuBudget,
}

impl FaultKind {
    pub const ALL: [FaultKind; 12] = [
        FaultKind::Deadline,
        FaultKind::MemoryLimit,
        FaultKind::OutOfBounds,
        FaultKind::Unreachable,
        FaultKind::StackOverflow,
        FaultKind::Arithmetic,
        FaultKind::IndirectCall,
        FaultKind::Other,
        FaultKind::Panic,
        FaultKind::InitRefused,
        FaultKind::Blocked,
        FaultKind::CpuBudget,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Deadline => "deadline",
            FaultKind::MemoryLimit => "memory_limit",
            FaultKind::OutOfBounds => "out_of_bounds",
            FaultKind::Unreachable => "unreachable",
            FaultKind::StackOverflow => "stack_overflow",
            FaultKind::Arithmetic => "arithmetic",
            FaultKind::IndirectCall => "indirect_call",
            FaultKind::Other => "other",
            FaultKind::Panic => "panic",
            FaultKind::InitRefused => "init_refused",
            FaultKind::Blocked => "blocked",
            FaultKind::CpuBudget => "cpu_budget",
        }
    }
}

/// Log lines the host's log writer dropped because its queue was full (the
/// log's reader is slower than the host writes), set once at start.
static LOG_QUEUE: std::sync::OnceLock<tracing_appender::non_blocking::ErrorCounter> = std::sync::OnceLock::new();

/// Counts the lines dropped by the log writer (`main.rs`), for `/metrics`.
pub fn count_dropped_log_lines(counter: tracing_appender::non_blocking::ErrorCounter) {
    let _ = LOG_QUEUE.set(counter);
}

/// Log lines dropped so far because the log writer's queue was full.
pub fn log_lines_dropped() -> u64 {
    LOG_QUEUE.get().map_or(0, |c| c.dropped_lines() as u64)
}

/// Every worker's metrics: what the admin listener reads.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    workers: Mutex<Vec<Arc<WorkerMetrics>>>,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics { started: Instant::now(), workers: Mutex::new(Vec::new()) })
    }

    /// Metrics for one more worker (loop); its index is its position.
    pub fn add_worker(&self) -> Arc<WorkerMetrics> {
        let mut workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        let worker = Arc::new(WorkerMetrics {
            index: workers.len(),
            turns: LoopMetrics::default(),
            guests: Mutex::new(Vec::new()),
        });
        workers.push(worker.clone());
        worker
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    fn workers(&self) -> Vec<Arc<WorkerMetrics>> {
        self.workers.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// One loop and the guests on it.
#[derive(Debug)]
pub struct WorkerMetrics {
    pub index: usize,
    pub turns: LoopMetrics,
    guests: Mutex<Vec<Arc<GuestMetrics>>>,
}

impl WorkerMetrics {
    /// The metrics of guest `name` on this loop, made on first use; every
    /// version and restart of the guest shares them.
    pub fn guest(&self, name: &str) -> Arc<GuestMetrics> {
        let mut guests = self.guests.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(g) = guests.iter().find(|g| &*g.name == name) {
            return g.clone();
        }
        let g = Arc::new(GuestMetrics::new(name));
        guests.push(g.clone());
        g
    }

    fn guests(&self) -> Vec<Arc<GuestMetrics>> {
        self.guests.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// Turns of one loop (recorded by `Server::turned`).
#[derive(Debug, Default)]
pub struct LoopMetrics {
    wakeups: Counter,
    events: Counter,
    busy_ns: Counter,
    waiting_ns: Counter,
    timers_armed: Counter,
    iteration: Histogram,
    events_per_wakeup: Histogram,
}

impl LoopMetrics {
    pub fn turn(&self, events: usize, waited: Duration, busy: Duration, timers_armed: usize) {
        let busy = nanos(busy);
        self.wakeups.inc();
        self.events.add(events as u64);
        self.busy_ns.add(busy);
        self.waiting_ns.add(nanos(waited));
        self.timers_armed.set(timers_armed as u64);
        self.iteration.record(busy);
        self.events_per_wakeup.record(events as u64);
    }
}

/// One guest on one loop, across its versions and restarts.
#[derive(Debug)]
pub struct GuestMetrics {
    pub name: Arc<str>,
    version: Mutex<Arc<str>>,
    up: AtomicBool,
    pub connections_open: Counter,
    pub accepted: Counter,
    pub refused: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    events: [Counter; Callback::ALL.len()],
    latency: Histogram,
    traps: [Counter; FaultKind::ALL.len()],
    pub restarts: Counter,
    pub reloads: Counter,
    /// Log lines dropped by the guest's rate limit.
    pub log_dropped: Counter,
    /// Times the guest went over its CPU budget and was held.
    pub throttled: Counter,
    /// Time it spent held, in nanoseconds.
    pub throttled_ns: Counter,
    /// Events that waited for a later turn for the guest's CPU share.
    pub deferred: Counter,
    /// Input the host holds for the guest's connections (a gauge).
    pub input_bytes: Counter,
    /// Connections refused because that input reached its cap.
    pub input_refused: Counter,
    memory: Counter,
    memory_high_water: Counter,
    memory_limit: Counter,
}

/// The I/O core reports every byte a guest's connections send.
impl wasmloop_io::Meter for GuestMetrics {
    fn bytes_sent(&self, bytes: u64) {
        self.bytes_out.add(bytes);
    }
}

impl GuestMetrics {
    fn new(name: &str) -> GuestMetrics {
        GuestMetrics {
            name: name.into(),
            version: Mutex::new("".into()),
            up: AtomicBool::new(false),
            connections_open: Counter::default(),
            accepted: Counter::default(),
            refused: Counter::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            events: Default::default(),
            latency: Histogram::default(),
            traps: Default::default(),
            restarts: Counter::default(),
            reloads: Counter::default(),
            log_dropped: Counter::default(),
            throttled: Counter::default(),
            throttled_ns: Counter::default(),
            deferred: Counter::default(),
            input_bytes: Counter::default(),
            input_refused: Counter::default(),
            memory: Counter::default(),
            memory_high_water: Counter::default(),
            memory_limit: Counter::default(),
        }
    }

    /// One callback ran, from `started` ([`stamp`]) until now.
    #[inline]
    pub fn callback(&self, callback: Callback, started: quanta::Instant) {
        self.events[callback as usize].inc();
        self.latency.record(nanos(stamp().duration_since(started)));
    }

    pub fn fault(&self, kind: FaultKind) {
        self.traps[kind as usize].inc();
    }

    /// The version now serving new connections, and whether it is up.
    pub fn set_running(&self, version: Option<&str>) {
        if let Some(version) = version {
            let mut current = self.version.lock().unwrap_or_else(PoisonError::into_inner);
            if &**current != version {
                *current = version.into();
            }
        }
        self.up.store(version.is_some(), Relaxed);
    }

    pub fn set_memory_limit(&self, bytes: usize) {
        self.memory_limit.set(bytes as u64);
    }

    /// Linear memory grew (or appeared) by `bytes`.
    pub fn memory_grew(&self, bytes: usize) {
        self.memory.add(bytes as u64);
        if self.memory.get() > self.memory_high_water.get() {
            self.memory_high_water.set(self.memory.get());
        }
    }

    /// An instance with `bytes` of linear memory went away.
    pub fn memory_freed(&self, bytes: usize) {
        self.memory.sub(bytes as u64);
    }
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}
