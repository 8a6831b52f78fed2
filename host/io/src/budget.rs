//! A guest's output budget: bytes buffered over all of its connections,
//! against its `max-output-total`, so many slow readers cannot add up to
//! unbounded memory.

use std::cell::Cell;
use std::sync::Arc;

/// Told of every byte handed to the kernel, for the owner's metrics. The
/// I/O core counts; what the count feeds is not its business.
pub trait Meter: Send + Sync {
    fn bytes_sent(&self, bytes: u64);
}

/// Bytes buffered over all of one owner's connections, against its limit.
/// Every write of the owner's output passes it — the host's own protocol
/// output (a pong, an error response) too — so it also meters bytes sent.
pub struct OutputBudget {
    used: Cell<usize>,
    max: usize,
    meter: Option<Arc<dyn Meter>>,
}

impl std::fmt::Debug for OutputBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputBudget").field("used", &self.used.get()).field("max", &self.max).finish()
    }
}

impl OutputBudget {
    pub fn new(max: usize, meter: Option<Arc<dyn Meter>>) -> OutputBudget {
        OutputBudget { used: Cell::new(0), max, meter }
    }

    /// `bytes` went to the kernel.
    #[inline]
    pub(crate) fn sent(&self, bytes: usize) {
        if let Some(meter) = &self.meter {
            meter.bytes_sent(bytes as u64);
        }
    }

    /// Bytes buffered now.
    pub fn used(&self) -> usize {
        self.used.get()
    }

    /// Room left under the limit.
    pub fn room(&self) -> usize {
        self.max.saturating_sub(self.used.get())
    }

    /// `bytes` were buffered.
    pub(crate) fn take(&self, bytes: usize) {
        self.used.set(self.used.get() + bytes);
    }

    /// Gives back bytes that left a buffer (sent, or dropped with their
    /// connection).
    pub fn release(&self, bytes: usize) {
        self.used.set(self.used.get().saturating_sub(bytes));
    }
}
