//! Tokens taken from Redis in advance, spent locally without a round trip.
//!
//! One `AtomicU64` per key: the high 48 bits hold the lease's expiry (milliseconds since the
//! store's origin), the low 16 bits the tokens left. A process never holds more than one
//! lease's worth, so a fleet of `P` processes can run at most `lease × P` tokens ahead of the
//! shared schedule: the documented over-admission bound.

use std::sync::atomic::{AtomicU64, Ordering};

const TOKEN_BITS: u32 = 16;
const TOKEN_MASK: u64 = (1 << TOKEN_BITS) - 1;

/// The most tokens one lease may hold.
pub(crate) const MAX_LEASE: u32 = TOKEN_MASK as u32;

#[derive(Debug, Default)]
pub(crate) struct LeasePool {
    packed: AtomicU64,
}

fn unpack(packed: u64) -> (u64, u64) {
    (packed >> TOKEN_BITS, packed & TOKEN_MASK)
}

impl LeasePool {
    /// Spends `cost` leased tokens, if the lease holds that many and has not expired.
    pub(crate) fn take(&self, cost: u32, now_ms: u64) -> bool {
        self.take_counting(cost, now_ms).is_some()
    }

    /// Like [`take`](Self::take), returning the tokens left afterwards.
    pub(crate) fn take_counting(&self, cost: u32, now_ms: u64) -> Option<u32> {
        let cost = u64::from(cost);
        self.packed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |packed| {
                let (expiry, tokens) = unpack(packed);
                (now_ms < expiry && tokens >= cost).then(|| packed - cost)
            })
            .ok()
            .map(|before| u32::try_from(unpack(before).1 - cost).unwrap_or(MAX_LEASE))
    }

    /// Adds `tokens` just taken from Redis, valid until `expiry_ms`, keeping at most `cap`.
    /// Returns how many were dropped because the pool was full (another request of this
    /// process refilled it at the same moment).
    pub(crate) fn add(&self, tokens: u32, now_ms: u64, expiry_ms: u64, cap: u32) -> u32 {
        let mut dropped = 0;
        let _ = self
            .packed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |packed| {
                let (expiry, held) = unpack(packed);
                let held = if now_ms < expiry { held } else { 0 };
                let total = held + u64::from(tokens);
                let kept = total.min(u64::from(cap));
                dropped = u32::try_from(total - kept).unwrap_or(u32::MAX);
                Some((expiry_ms.max(expiry) << TOKEN_BITS) | kept)
            });
        dropped
    }

    /// Tokens usable at `now_ms`.
    pub(crate) fn available(&self, now_ms: u64) -> u32 {
        let (expiry, tokens) = unpack(self.packed.load(Ordering::Acquire));
        if now_ms < expiry {
            u32::try_from(tokens).unwrap_or(MAX_LEASE)
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_spent_until_gone_or_expired() {
        let pool = LeasePool::default();
        assert!(!pool.take(1, 0), "an empty pool spends nothing");
        assert_eq!(pool.add(5, 0, 100, 10), 0);
        assert_eq!(pool.take_counting(2, 10), Some(3));
        assert_eq!(pool.take_counting(3, 99), Some(0));
        assert!(!pool.take(1, 99), "all five spent");
        assert_eq!(pool.add(4, 100, 200, 10), 0);
        assert_eq!(pool.available(150), 4);
        assert!(!pool.take(1, 200), "expired at 200 ms");
        assert_eq!(pool.available(200), 0);
    }

    #[test]
    fn the_pool_holds_at_most_one_lease() {
        let pool = LeasePool::default();
        assert_eq!(pool.add(8, 0, 100, 10), 0);
        assert_eq!(
            pool.add(8, 1, 101, 10),
            6,
            "two refills at once keep one lease's worth"
        );
        assert_eq!(pool.available(1), 10);
        // Expired tokens do not count toward the cap.
        assert_eq!(pool.add(10, 500, 600, 10), 0);
        assert_eq!(pool.available(500), 10);
    }
}
