//! Timers: a binary heap ordered by (deadline, sequence number).
//!
//! - A timer never fires before its deadline: it is due when the deadline is
//!   at or before the loop's clock reading for the tick.
//! - Timers with equal deadlines fire in the order they were set: the
//!   sequence number breaks ties.
//! - Cancel is O(1): the timer leaves the slot map and its heap entry goes
//!   stale, to be skipped when it reaches the top. Most timers are cancelled
//!   before they fire (idle timeouts re-armed on every read), so when stale
//!   entries outnumber live ones the heap is rebuilt without them, which
//!   bounds its size at twice the live timers.
//! - A repeating timer keeps its schedule (`first + n * interval`); if the
//!   loop was late past whole intervals, the missed ticks are skipped rather
//!   than fired in a burst.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use slotmap::{Key, KeyData, SlotMap, new_key_type};

use crate::Token;

new_key_type! { struct TimerKey; }

/// A timer set on the loop. Stale ids (fired one-shot, cancelled) are
/// recognised as such: the slot's generation differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId(TimerKey);

impl TimerId {
    /// The id as an integer, to embed in a handle or a token.
    pub fn to_u64(self) -> u64 {
        self.0.data().as_ffi()
    }

    /// The id back from [`TimerId::to_u64`]. Any integer is accepted; one
    /// that was never an id simply names no timer.
    pub fn from_u64(value: u64) -> TimerId {
        // `from_ffi` forces the generation (high 32 bits) odd: an even one
        // would alias the id one generation up. Ids always have odd ones.
        if value & (1 << 32) == 0 {
            return TimerId(TimerKey::null());
        }
        TimerId(KeyData::from_ffi(value).into())
    }
}

struct Timer {
    deadline: Instant,
    seq: u64,
    interval: Option<Duration>,
    token: Token,
}

struct HeapEntry {
    deadline: Instant,
    seq: u64,
    key: TimerKey,
}

impl PartialEq for HeapEntry {
    fn eq(&self, other: &Self) -> bool {
        (self.deadline, self.seq) == (other.deadline, other.seq)
    }
}
impl Eq for HeapEntry {}
impl PartialOrd for HeapEntry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for HeapEntry {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.deadline, self.seq).cmp(&(other.deadline, other.seq))
    }
}

/// The loop's timers. Not thread-safe; lives inside the loop.
#[derive(Default)]
pub struct TimerHeap {
    timers: SlotMap<TimerKey, Timer>,
    heap: BinaryHeap<Reverse<HeapEntry>>,
    next_seq: u64,
}

/// A timer that came due, as returned by [`TimerHeap::pop_due`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expired {
    pub id: TimerId,
    pub token: Token,
}

impl TimerHeap {
    pub fn new() -> TimerHeap {
        TimerHeap::default()
    }

    /// Sets a timer due at `deadline`, then every `interval` if given.
    pub fn insert(&mut self, deadline: Instant, interval: Option<Duration>, token: Token) -> TimerId {
        let seq = self.bump_seq();
        let key = self.timers.insert(Timer { deadline, seq, interval, token });
        self.heap.push(Reverse(HeapEntry { deadline, seq, key }));
        TimerId(key)
    }

    /// Cancels a timer; returns false if it was not live.
    pub fn cancel(&mut self, id: TimerId) -> bool {
        let removed = self.timers.remove(id.0).is_some();
        if removed && self.heap.len() > 64 && self.heap.len() > 2 * self.timers.len() {
            let timers = &self.timers;
            self.heap.retain(|Reverse(e)| timers.get(e.key).is_some_and(|t| t.seq == e.seq));
        }
        removed
    }

    pub fn contains(&self, id: TimerId) -> bool {
        self.timers.contains_key(id.0)
    }

    pub fn len(&self) -> usize {
        self.timers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.timers.is_empty()
    }

    /// The next sequence number: timers set from now on have one at least
    /// this large. [`TimerHeap::pop_due`] takes it as a barrier so a timer set
    /// while due timers run waits for the next tick (no starvation).
    pub fn barrier(&self) -> u64 {
        self.next_seq
    }

    /// The earliest live deadline, dropping stale entries on the way.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        self.skip_stale();
        self.heap.peek().map(|Reverse(e)| e.deadline)
    }

    /// Removes and returns the first timer due at `now` that was set before
    /// `barrier`. A repeating timer is re-armed on its schedule.
    pub fn pop_due(&mut self, now: Instant, barrier: u64) -> Option<Expired> {
        self.skip_stale();
        let Reverse(top) = self.heap.peek()?;
        if top.deadline > now || top.seq >= barrier {
            return None;
        }
        let Reverse(entry) = self.heap.pop()?;
        let timer = &self.timers[entry.key];
        let expired = Expired { id: TimerId(entry.key), token: timer.token };
        match timer.interval {
            None => {
                self.timers.remove(entry.key);
            }
            Some(interval) => {
                let mut next = timer.deadline + interval;
                if next <= now {
                    // Late by whole intervals: skip them, keep the phase.
                    let behind = (now - timer.deadline).as_nanos() / interval.as_nanos();
                    next = timer.deadline + interval * (behind as u32).saturating_add(1);
                }
                let seq = self.bump_seq();
                let timer = &mut self.timers[entry.key];
                timer.deadline = next;
                timer.seq = seq;
                self.heap.push(Reverse(HeapEntry { deadline: next, seq, key: entry.key }));
            }
        }
        Some(expired)
    }

    fn skip_stale(&mut self) {
        while let Some(Reverse(top)) = self.heap.peek() {
            match self.timers.get(top.key) {
                Some(t) if t.seq == top.seq => return,
                _ => {
                    self.heap.pop();
                }
            }
        }
    }

    fn bump_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn drain(heap: &mut TimerHeap, now: Instant) -> Vec<u64> {
        let barrier = heap.barrier();
        std::iter::from_fn(|| heap.pop_due(now, barrier)).map(|e| e.token.0).collect()
    }

    #[test]
    fn fires_in_deadline_order_and_fifo_at_equal_deadlines() {
        let t0 = Instant::now();
        let mut heap = TimerHeap::new();
        heap.insert(t0 + ms(20), None, Token(3));
        heap.insert(t0 + ms(10), None, Token(1));
        heap.insert(t0 + ms(20), None, Token(4));
        heap.insert(t0 + ms(10), None, Token(2));
        heap.insert(t0 + ms(20), None, Token(5));
        assert_eq!(drain(&mut heap, t0 + ms(30)), vec![1, 2, 3, 4, 5]);
        assert!(heap.is_empty());
    }

    #[test]
    fn never_fires_before_its_deadline() {
        let t0 = Instant::now();
        let mut heap = TimerHeap::new();
        heap.insert(t0 + ms(10), None, Token(1));
        assert_eq!(drain(&mut heap, t0 + ms(10) - Duration::from_nanos(1)), Vec::<u64>::new());
        assert_eq!(heap.next_deadline(), Some(t0 + ms(10)));
        assert_eq!(drain(&mut heap, t0 + ms(10)), vec![1]);
    }

    #[test]
    fn cancelled_timers_do_not_fire_and_stale_ids_are_refused() {
        let t0 = Instant::now();
        let mut heap = TimerHeap::new();
        let a = heap.insert(t0 + ms(1), None, Token(1));
        let b = heap.insert(t0 + ms(2), None, Token(2));
        assert!(heap.cancel(a));
        assert!(!heap.cancel(a), "second cancel of the same id");
        assert_eq!(drain(&mut heap, t0 + ms(5)), vec![2]);
        assert!(!heap.cancel(b), "a one-shot timer is dead once fired");
        assert_eq!(heap.next_deadline(), None);
    }

    #[test]
    fn only_the_exact_id_names_a_timer() {
        let t0 = Instant::now();
        let mut heap = TimerHeap::new();
        let id = heap.insert(t0 + ms(1), None, Token(1)).to_u64();
        for forged in [id ^ (1 << 32), id + (2 << 32), id + 1, 0, u64::MAX] {
            assert!(!heap.cancel(TimerId::from_u64(forged)), "{forged:#x} is not {id:#x}");
        }
        assert!(heap.cancel(TimerId::from_u64(id)));
    }

    #[test]
    fn cancel_churn_keeps_the_heap_bounded() {
        let t0 = Instant::now();
        let mut heap = TimerHeap::new();
        let keep = heap.insert(t0 + ms(1_000), None, Token(0));
        for i in 0..100_000 {
            let id = heap.insert(t0 + ms(500 + i % 100), None, Token(i));
            heap.cancel(id);
        }
        assert_eq!(heap.len(), 1);
        assert!(heap.heap.len() <= 65, "heap holds {} entries for 1 timer", heap.heap.len());
        assert!(heap.contains(keep));
    }

    #[test]
    fn repeating_timer_keeps_its_schedule_and_skips_missed_ticks() {
        let t0 = Instant::now();
        let mut heap = TimerHeap::new();
        heap.insert(t0 + ms(10), Some(ms(10)), Token(7));
        assert_eq!(drain(&mut heap, t0 + ms(12)), vec![7]);
        assert_eq!(heap.next_deadline(), Some(t0 + ms(20)), "late firing does not shift the phase");
        // The loop stalls past the 20, 30 and 40 ms ticks.
        assert_eq!(drain(&mut heap, t0 + ms(45)), vec![7], "missed ticks are skipped, not burst");
        assert_eq!(heap.next_deadline(), Some(t0 + ms(50)));
    }

    #[test]
    fn timer_set_during_a_tick_waits_for_the_next_tick() {
        let t0 = Instant::now();
        let mut heap = TimerHeap::new();
        heap.insert(t0, None, Token(1));
        let barrier = heap.barrier();
        assert_eq!(heap.pop_due(t0, barrier).map(|e| e.token), Some(Token(1)));
        heap.insert(t0, None, Token(2));
        assert_eq!(heap.pop_due(t0, barrier), None);
        assert_eq!(drain(&mut heap, t0), vec![2]);
    }
}
