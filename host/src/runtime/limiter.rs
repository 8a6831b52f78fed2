//! The store limiter: one memory budget (`max_memory`) for all of a guest's
//! linear memories and tables together, bounds on how many instances,
//! memories and tables it may create, and a count of its linear memory for
//! the guest's memory metrics.
//!
//! wasmtime's own `StoreLimits` caps each linear memory on its own, so a
//! component with several memories could have several times the cap. Here
//! every grow (and every creation, a grow from zero) is checked against the
//! sum of everything the store already has.

use std::sync::Arc;

use wasmtime::ResourceLimiter;

use crate::metrics::GuestMetrics;

/// Bounds on what one guest's component may create. A componentize-py
/// (Python) component instantiates 38 core modules: CPython, its shared
/// libraries, the runtime and one stub per WASI interface.
const MAX_INSTANCES: usize = 64;
const MAX_TABLES: usize = 16;
const MAX_MEMORIES: usize = 4;
/// Elements of one table.
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// What a table element counts against `max_memory`: a function reference
/// is a pointer in wasmtime's tables, 8 bytes on the 64-bit hosts we run on.
pub const TABLE_ELEMENT_BYTES: usize = 8;

/// A grow (or a creation) the limiter refused, or a grow that failed: the
/// guest traps with this error, and the fault is reported as
/// `memory_limit` (see `guest.rs`, which finds it by its type).
#[derive(Debug, thiserror::Error)]
pub enum LimitExceeded {
    #[error(
        "growing a {what} by {growth} bytes would take the guest's memories and tables to {total} bytes, \
         over its limit of {limit} (max_memory)"
    )]
    Total { what: &'static str, growth: usize, total: usize, limit: usize },
    #[error("growing a table to {desired} elements, over the limit of {MAX_TABLE_ELEMENTS} per table")]
    TableElements { desired: usize },
    #[error("growing a {what} to {desired}, over its declared maximum of {maximum}")]
    Maximum { what: &'static str, desired: usize, maximum: usize },
    #[error("a {what} could not grow: {reason:#}")]
    Failed { what: &'static str, reason: wasmtime::Error },
}

pub struct MemoryLimiter {
    /// Bytes of linear memory plus table storage the store may have.
    max_memory: usize,
    meter: Option<Arc<GuestMetrics>>,
    /// Linear memory of this store's instances, in bytes.
    memory: usize,
    /// Table storage of this store's instances, in bytes.
    tables: usize,
    /// The growths last allowed, taken back if the grow then failed.
    last_memory_growth: usize,
    last_table_growth: usize,
}

impl MemoryLimiter {
    pub fn new(max_memory: usize, meter: Option<Arc<GuestMetrics>>) -> MemoryLimiter {
        MemoryLimiter { max_memory, meter, memory: 0, tables: 0, last_memory_growth: 0, last_table_growth: 0 }
    }

    /// Refuses `growth` more bytes if the store's total would pass the limit.
    fn check_total(&self, what: &'static str, growth: usize) -> Result<(), LimitExceeded> {
        let total = self.memory.saturating_add(self.tables).saturating_add(growth);
        if total > self.max_memory {
            return Err(LimitExceeded::Total { what, growth, total, limit: self.max_memory });
        }
        Ok(())
    }
}

impl ResourceLimiter for MemoryLimiter {
    /// Also called when an instance's memory is created (`current` = 0).
    /// A refusal is an error, not `false`: the grow traps (as with
    /// `StoreLimitsBuilder::trap_on_grow_failure`) rather than return -1 to
    /// a guest that would rarely check it.
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if let Some(maximum) = maximum.filter(|&m| desired > m) {
            return Err(LimitExceeded::Maximum { what: "memory", desired, maximum }.into());
        }
        let growth = desired.saturating_sub(current);
        self.check_total("memory", growth)?;
        self.memory += growth;
        self.last_memory_growth = growth;
        if let Some(meter) = &self.meter {
            meter.memory_grew(growth);
        }
        Ok(true)
    }

    /// The grow failed after all (or could not be tried): the guest traps.
    /// The last growth allowed is taken back so the metrics do not count
    /// memory that never came. (If it belonged to an earlier grow that did
    /// succeed, the count is low only until the store, dead after the trap,
    /// is dropped: `Drop` frees what is counted, so the metrics balance.)
    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        let growth = std::mem::take(&mut self.last_memory_growth);
        self.memory -= growth;
        if let Some(meter) = &self.meter {
            meter.memory_freed(growth);
        }
        Err(LimitExceeded::Failed { what: "memory", reason: error }.into())
    }

    /// Elements, counted at [`TABLE_ELEMENT_BYTES`] against the same budget
    /// as linear memory; also called when a table is created.
    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            return Err(LimitExceeded::TableElements { desired }.into());
        }
        if let Some(maximum) = maximum.filter(|&m| desired > m) {
            return Err(LimitExceeded::Maximum { what: "table", desired, maximum }.into());
        }
        // At most MAX_TABLE_ELEMENTS * 8 bytes: no overflow.
        let growth = desired.saturating_sub(current) * TABLE_ELEMENT_BYTES;
        self.check_total("table", growth)?;
        self.tables += growth;
        self.last_table_growth = growth;
        Ok(true)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.tables -= std::mem::take(&mut self.last_table_growth);
        Err(LimitExceeded::Failed { what: "table", reason: error }.into())
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

impl Drop for MemoryLimiter {
    /// The store (and its memories) is going away with this.
    fn drop(&mut self) {
        if let Some(meter) = &self.meter {
            meter.memory_freed(self.memory);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(result: wasmtime::Result<bool>) -> LimitExceeded {
        let error = result.expect_err("the limiter allowed it");
        match error.downcast::<LimitExceeded>() {
            Ok(refusal) => refusal,
            Err(other) => panic!("not a LimitExceeded: {other:#}"),
        }
    }

    #[test]
    fn memories_and_tables_share_one_budget() {
        let mib = 1 << 20;
        let mut limiter = MemoryLimiter::new(64 * mib, None);
        // Two memories of 30 MiB each fit; the next 5 MiB do not, in either.
        assert!(limiter.memory_growing(0, 30 * mib, None).unwrap());
        assert!(limiter.memory_growing(0, 30 * mib, None).unwrap());
        assert!(matches!(refused(limiter.memory_growing(30 * mib, 35 * mib, None)), LimitExceeded::Total { .. }));
        // 4 MiB are left: a table of 512 Ki elements (4 MiB) fits only to
        // MAX_TABLE_ELEMENTS; 100,000 elements (800 KB) do.
        assert!(matches!(refused(limiter.table_growing(0, 1 << 19, None)), LimitExceeded::TableElements { .. }));
        assert!(limiter.table_growing(0, MAX_TABLE_ELEMENTS, None).unwrap());
        let left = 64 * mib - 60 * mib - MAX_TABLE_ELEMENTS * TABLE_ELEMENT_BYTES;
        assert!(matches!(
            refused(limiter.memory_growing(0, left + 1, None)),
            LimitExceeded::Total { total, .. } if total == 64 * mib + 1
        ));
        assert!(limiter.memory_growing(0, left, None).unwrap());
    }

    #[test]
    fn a_declared_maximum_is_kept_and_a_failed_grow_is_taken_back() {
        let mut limiter = MemoryLimiter::new(1 << 20, None);
        assert!(matches!(refused(limiter.memory_growing(0, 2, Some(1))), LimitExceeded::Maximum { .. }));
        assert!(limiter.memory_growing(0, 1000, None).unwrap());
        let error = limiter.memory_grow_failed(wasmtime::format_err!("mmap failed")).unwrap_err();
        assert!(error.downcast_ref::<LimitExceeded>().is_some());
        assert_eq!(limiter.memory, 0);
        // A second failure without a grow between takes nothing more back.
        let _ = limiter.memory_grow_failed(wasmtime::format_err!("type limits"));
        assert_eq!(limiter.memory, 0);
    }
}
