//! A lock-free count over a sliding time window.
//!
//! The window is a ring of `N` slots, each covering `window / N`. Each slot is one `AtomicU64`
//! holding the slot's epoch and its count together, so adding is a load and a
//! compare-and-swap (or, for a count only one thread adds to, a load and a store), and a slot
//! left over from an earlier turn of the ring is reset by the same write that adds to it. No
//! lock, no background task. Used by the retry budget.
//!
//! Epochs are kept in 24 bits, so a slot nobody has written for 2^24 slot lengths (194 days
//! for a 10 s window of 10 slots) reads as current again for one window. A count that is
//! added to at least once in that time never sees it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::Divisor;

const COUNT_BITS: u32 = 40;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
const EPOCH_MASK: u64 = (1 << (64 - COUNT_BITS)) - 1;

/// A count of events over the last `window`, in `N` steps. Counts saturate at 2^40 per slot.
#[derive(Debug)]
pub struct SlidingCount<const N: usize> {
    origin: Instant,
    /// A slot's length in nanoseconds, as a divisor (a division per add would cost more than
    /// the rest of it).
    slot_nanos: Divisor,
    slots: [AtomicU64; N],
}

impl<const N: usize> SlidingCount<N> {
    /// A count over `window`, its first slot starting at `origin`.
    pub fn new(window: Duration, origin: Instant) -> Self {
        let nanos = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
        Self {
            origin,
            slot_nanos: Divisor::new(nanos / N.max(1) as u64),
            slots: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Adds `amount` at `now`.
    #[inline]
    pub fn add(&self, now: Instant, amount: u64) {
        let (slot, epoch) = self.slot_at(now);
        let mut current = slot.load(Ordering::Relaxed);
        loop {
            let next = Self::added(current, epoch, amount);
            match slot.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// The sum over the window that ends at `now` (the current slot and the `N - 1` before).
    pub fn sum(&self, now: Instant) -> u64 {
        let epoch = self.epoch(now) & EPOCH_MASK;
        self.slots
            .iter()
            .map(|slot| slot.load(Ordering::Relaxed))
            .filter(|value| (epoch.wrapping_sub(value >> COUNT_BITS) & EPOCH_MASK) < N as u64)
            .map(|value| value & COUNT_MASK)
            .sum()
    }

    /// Adds `amount` at `now`, for a count that only the calling thread adds to (one shard
    /// of a per-thread count): a load and a store, where [`add`](Self::add) needs a
    /// compare-and-swap. Readers on other threads see whole values. If another thread did
    /// add at the same time, one of the two amounts could be lost, never the count's shape.
    #[inline]
    pub fn add_unshared(&self, now: Instant, amount: u64) {
        let (slot, epoch) = self.slot_at(now);
        let current = slot.load(Ordering::Relaxed);
        slot.store(Self::added(current, epoch, amount), Ordering::Relaxed);
    }

    /// Takes back `amount` added at `at`, if the slot that counted it still does: once the
    /// ring has turned past `at`, what was added then has left the window by itself.
    pub fn take_back(&self, at: Instant, amount: u64) {
        let (slot, epoch) = self.slot_at(at);
        let tag = (epoch & EPOCH_MASK) << COUNT_BITS;
        let mut current = slot.load(Ordering::Relaxed);
        while current & !COUNT_MASK == tag {
            let next = tag | (current & COUNT_MASK).saturating_sub(amount);
            match slot.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// The slot that counts what happens at `now`, and `now`'s epoch.
    #[inline]
    fn slot_at(&self, now: Instant) -> (&AtomicU64, u64) {
        let epoch = self.epoch(now);
        (&self.slots[(epoch % N as u64) as usize], epoch)
    }

    /// The value of a slot holding `current` once `amount` is added in `epoch`.
    #[inline]
    fn added(current: u64, epoch: u64, amount: u64) -> u64 {
        let tag = (epoch & EPOCH_MASK) << COUNT_BITS;
        if current & !COUNT_MASK == tag {
            // Saturate rather than carry into the epoch bits.
            tag | (current & COUNT_MASK)
                .saturating_add(amount)
                .min(COUNT_MASK)
        } else {
            tag | amount.min(COUNT_MASK)
        }
    }

    #[inline]
    fn epoch(&self, now: Instant) -> u64 {
        let nanos = u64::try_from(now.saturating_duration_since(self.origin).as_nanos())
            .unwrap_or(u64::MAX);
        self.slot_nanos.quotient(nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_taken_back_leaves_its_own_slot_and_only_while_it_counts() {
        let t0 = Instant::now();
        let count = SlidingCount::<10>::new(Duration::from_secs(10), t0);
        count.add(t0, 3);
        count.add(t0 + Duration::from_secs(5), 4);
        count.take_back(t0, 1);
        assert_eq!(count.sum(t0 + Duration::from_secs(5)), 6);
        // Never below zero.
        count.take_back(t0, 5);
        assert_eq!(count.sum(t0 + Duration::from_secs(5)), 4);
        // Once the ring has turned past the slot, it holds a later second: nothing is taken.
        count.add(t0 + Duration::from_secs(10), 2);
        count.take_back(t0, 2);
        assert_eq!(count.sum(t0 + Duration::from_secs(10)), 6);
    }

    #[test]
    fn counts_slide_out_slot_by_slot() {
        let t0 = Instant::now();
        let count = SlidingCount::<10>::new(Duration::from_secs(10), t0);
        count.add(t0, 3);
        count.add(t0 + Duration::from_millis(4_500), 2);
        assert_eq!(count.sum(t0 + Duration::from_millis(9_999)), 5);
        assert_eq!(count.sum(t0 + Duration::from_secs(10)), 2);
        // The second add fell in the slot from 4 s to 5 s, which leaves the window at 14 s.
        assert_eq!(count.sum(t0 + Duration::from_millis(13_999)), 2);
        assert_eq!(count.sum(t0 + Duration::from_secs(14)), 0);
    }

    #[test]
    fn a_slot_reused_after_a_full_turn_starts_from_zero() {
        let t0 = Instant::now();
        let count = SlidingCount::<10>::new(Duration::from_secs(10), t0);
        count.add(t0, 7);
        let later = t0 + Duration::from_secs(10);
        count.add(later, 1);
        assert_eq!(count.sum(later), 1);
    }

    #[test]
    fn counts_saturate_instead_of_corrupting_the_epoch() {
        let t0 = Instant::now();
        let count = SlidingCount::<2>::new(Duration::from_secs(2), t0);
        count.add(t0, u64::MAX);
        count.add(t0, 5);
        assert_eq!(count.sum(t0), COUNT_MASK);
    }

    #[test]
    fn an_unshared_count_slides_and_saturates_like_a_shared_one() {
        let t0 = Instant::now();
        let shared = SlidingCount::<10>::new(Duration::from_secs(10), t0);
        let unshared = SlidingCount::<10>::new(Duration::from_secs(10), t0);
        // (when, amount, the sum over the window ending then)
        let steps = [
            (0, 3, 3),
            (4_500, 2, 5),
            (9_999, 1, 6),
            // Slot 0 turns over: the 3 from the first second leaves the window.
            (10_000, 4, 7),
            (25_000, 1, 1),
            (25_000, u64::MAX, COUNT_MASK),
        ];
        for (at_ms, amount, sum) in steps {
            let at = t0 + Duration::from_millis(at_ms);
            shared.add(at, amount);
            unshared.add_unshared(at, amount);
            assert_eq!(unshared.sum(at), sum, "after adding {amount} at {at_ms} ms");
            assert_eq!(shared.sum(at), sum, "after adding {amount} at {at_ms} ms");
        }
    }
}
