//! The store limiter: wasmtime's `StoreLimits`, plus a count of the linear
//! memory it let the guest have, for the guest's memory metrics.

use std::sync::Arc;

use wasmtime::{ResourceLimiter, StoreLimits};

use crate::metrics::GuestMetrics;

pub struct MeteredLimits {
    limits: StoreLimits,
    meter: Option<Arc<GuestMetrics>>,
    /// Linear memory of this store's instances, in bytes.
    memory: usize,
    /// The growth last allowed, taken back if the grow then failed.
    last_growth: usize,
}

impl MeteredLimits {
    pub fn new(limits: StoreLimits, meter: Option<Arc<GuestMetrics>>) -> MeteredLimits {
        MeteredLimits { limits, meter, memory: 0, last_growth: 0 }
    }
}

impl ResourceLimiter for MeteredLimits {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        // Also called when an instance's memory is created (current = 0).
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if allowed {
            self.last_growth = desired.saturating_sub(current);
            self.memory += self.last_growth;
            if let Some(meter) = &self.meter {
                meter.memory_grew(self.last_growth);
            }
        }
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.memory -= self.last_growth;
        if let Some(meter) = &self.meter {
            meter.memory_freed(self.last_growth);
        }
        self.last_growth = 0;
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

impl Drop for MeteredLimits {
    /// The store (and its memories) is going away with this.
    fn drop(&mut self) {
        if let Some(meter) = &self.meter {
            meter.memory_freed(self.memory);
        }
    }
}
