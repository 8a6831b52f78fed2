//! A histogram a loop thread records into and the admin thread reads, with
//! no lock: one atomic per bucket.
//!
//! Buckets are a quarter of a power of two wide (values 0 to 7 each have
//! their own), so a quantile read from them is within 25% of the truth;
//! recording is a `leading_zeros`, a shift and three relaxed stores.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::Counter;

/// Up to 2^40 (1,100 s in nanoseconds); larger values land in the last.
const BUCKETS: usize = 160;

#[derive(Debug)]
pub struct Histogram {
    buckets: [Counter; BUCKETS],
    sum: Counter,
    max: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            buckets: std::array::from_fn(|_| Counter::default()),
            sum: Counter::default(),
            max: AtomicU64::new(0),
        }
    }
}

/// The bucket of `value`: values below 4 have their own; above, an octave
/// `[2^o, 2^(o+1))` is split in four.
fn index(value: u64) -> usize {
    if value < 4 {
        return value as usize;
    }
    let octave = 63 - value.leading_zeros() as u64;
    let quarter = (value >> (octave - 2)) & 3;
    ((octave - 1) * 4 + quarter).min(BUCKETS as u64 - 1) as usize
}

/// The smallest value in bucket `i`.
fn lower(i: usize) -> u64 {
    if i < 4 {
        return i as u64;
    }
    let octave = (i / 4 + 1) as u32;
    (1u64 << octave) + (i % 4) as u64 * (1u64 << (octave - 2))
}

impl Histogram {
    /// Records one value. Only the owning loop thread calls this.
    #[inline]
    pub fn record(&self, value: u64) {
        self.buckets[index(value)].inc();
        self.sum.add(value);
        if value > self.max.load(Relaxed) {
            self.max.store(value, Relaxed);
        }
    }

    /// A copy of the counts, for reading and merging.
    pub fn snapshot(&self) -> Snapshot {
        let mut snapshot = Snapshot::default();
        snapshot.add(self);
        snapshot
    }
}

/// Counts read from one or more [`Histogram`]s (summed over workers).
#[derive(Clone, Debug)]
pub struct Snapshot {
    counts: [u64; BUCKETS],
    pub sum: u64,
    pub max: u64,
}

impl Default for Snapshot {
    fn default() -> Snapshot {
        Snapshot { counts: [0; BUCKETS], sum: 0, max: 0 }
    }
}

impl Snapshot {
    pub fn add(&mut self, h: &Histogram) {
        for (count, bucket) in self.counts.iter_mut().zip(&h.buckets) {
            *count += bucket.get();
        }
        self.sum += h.sum.get();
        self.max = self.max.max(h.max.load(Relaxed));
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The largest value in the bucket where quantile `q` falls, capped at
    /// the largest value seen; 0 if empty.
    pub fn quantile(&self, q: f64) -> u64 {
        let rank = ((self.count() as f64 * q).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return (lower(i + 1) - 1).min(self.max);
            }
        }
        0
    }

    /// The non-empty buckets as (largest value in it, count).
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.counts.iter().enumerate().filter(|(_, c)| **c > 0).map(|(i, &c)| (lower(i + 1) - 1, c))
    }

    /// How many values are below `bound`, for a bound that starts a bucket
    /// (a power of two, or below 4).
    pub fn below(&self, bound: u64) -> u64 {
        let end = if bound == 0 { 0 } else { index(bound) };
        self.counts[..end].iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_tile_the_numbers_and_hold_what_they_say() {
        for i in 0..BUCKETS - 1 {
            assert!(lower(i) < lower(i + 1), "bucket {i}");
            assert_eq!(index(lower(i)), i);
            assert_eq!(index(lower(i + 1) - 1), i);
        }
        for value in [5u64, 1000, 123_456, 1 << 39] {
            let i = index(value);
            assert!(lower(i) <= value && value < lower(i + 1), "{value} in bucket {i}");
            // A quarter octave: the bucket is at most 25% of its lower bound wide.
            assert!((lower(i + 1) - lower(i)) * 4 <= lower(i));
        }
    }

    #[test]
    fn quantiles_come_from_the_bucket_and_never_exceed_the_max() {
        let h = Histogram::default();
        for v in 1..=100u64 {
            h.record(v * 1000);
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 100);
        assert_eq!(s.sum, 5_050_000);
        assert_eq!(s.max, 100_000);
        let p50 = s.quantile(0.5);
        assert!((50_000..=50_000 * 5 / 4).contains(&p50), "p50 {p50}");
        assert_eq!(s.quantile(1.0), 100_000);
        assert_eq!(s.below(1 << 16), 65, "values 1000..=65000 are below 65536");
        assert_eq!(s.buckets().map(|(_, c)| c).sum::<u64>(), 100);
    }

    #[test]
    fn small_counts_are_exact() {
        let h = Histogram::default();
        for v in [0, 1, 1, 2, 3, 7] {
            h.record(v);
        }
        let s = h.snapshot();
        assert_eq!(s.quantile(0.5), 1);
        assert_eq!(s.below(1), 1);
        assert_eq!(s.below(4), 5);
        assert_eq!(s.buckets().collect::<Vec<_>>(), [(0, 1), (1, 2), (2, 1), (3, 1), (7, 1)]);
    }
}
