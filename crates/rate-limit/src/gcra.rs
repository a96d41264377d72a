//! The generic cell rate algorithm over atomics: one theoretical arrival time (TAT) per
//! quota, advanced by compare-and-swap. Times are nanoseconds from the limiter's origin.
//!
//! A request of cost `c` at time `now` moves a quota's TAT to `max(TAT, now) + c × T`; it is
//! admitted when that lies at most `burst × T` ahead of `now`. With several quotas every one
//! must admit: each is advanced in turn, and if a later one refuses, the earlier ones are
//! given their tokens back.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::quota::Quota;

/// Why GCRA did not admit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not now; every quota would admit this request at this time (nanoseconds from origin).
    Until(u64),
    /// The cost exceeds a quota's burst: no wait will ever admit it.
    Oversize,
}

/// The per-key state of a set of quotas.
#[derive(Debug)]
pub struct GcraCells {
    tats: Box<[AtomicU64]>,
}

impl GcraCells {
    /// Fresh cells (every quota full) for `quotas` many quotas.
    pub fn new(quotas: usize) -> Self {
        Self {
            tats: (0..quotas).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Takes `cost` from every quota at `now`, or says when it could.
    pub fn try_take(&self, quotas: &[Quota], cost: u32, now: u64) -> Result<(), Refusal> {
        for (index, (quota, tat)) in quotas.iter().zip(self.tats.iter()).enumerate() {
            if let Err(refusal) = take_one(quota, tat, cost, now) {
                // Give the earlier quotas their tokens back, and report when all would admit.
                for (quota, tat) in quotas[..index].iter().zip(self.tats.iter()) {
                    refund(quota, tat, cost);
                }
                return Err(match refusal {
                    Refusal::Oversize => Refusal::Oversize,
                    Refusal::Until(_) => self.earliest(quotas, cost, now),
                });
            }
        }
        Ok(())
    }

    /// When every quota would admit `cost` (now or later), without taking anything.
    pub fn earliest(&self, quotas: &[Quota], cost: u32, now: u64) -> Refusal {
        let mut at = now;
        for (quota, tat) in quotas.iter().zip(self.tats.iter()) {
            if cost > quota.burst_size() {
                return Refusal::Oversize;
            }
            let increment = quota.interval_nanos().saturating_mul(u64::from(cost));
            let tat = tat.load(Ordering::Acquire).max(now);
            let allowed_at = tat
                .saturating_add(increment)
                .saturating_sub(quota.tolerance_nanos());
            at = at.max(allowed_at);
        }
        Refusal::Until(at)
    }

    /// When every quota would have admitted `tokens` more tokens, taken in turn as soon as
    /// each quota allows and no earlier than `from` (nanoseconds from origin): the slot of
    /// the last of a queue's waiters. Unlike [`earliest`](Self::earliest), `tokens` may
    /// exceed a burst: a queue's tokens are taken by many requests.
    ///
    /// Exact for one quota. With several, each quota's own schedule is exact and the queue
    /// goes at the slowest one's pace; the answer is the latest of them (a quota with a
    /// large burst, say 20 a minute, lets the first 20 go at a faster quota's pace).
    pub fn predict(&self, quotas: &[Quota], tokens: u64, from: u64) -> u64 {
        let mut at = from;
        for (quota, tat) in quotas.iter().zip(self.tats.iter()) {
            let increment = quota.interval_nanos().saturating_mul(tokens);
            let tat = tat.load(Ordering::Acquire).max(from);
            at = at.max(
                tat.saturating_add(increment)
                    .saturating_sub(quota.tolerance_nanos()),
            );
        }
        at
    }

    /// Whether every quota is full at `now` (the key holds nothing worth keeping).
    pub fn is_idle(&self, now: u64) -> bool {
        self.tats
            .iter()
            .all(|tat| tat.load(Ordering::Relaxed) <= now)
    }
}

fn take_one(quota: &Quota, tat: &AtomicU64, cost: u32, now: u64) -> Result<(), Refusal> {
    if cost > quota.burst_size() {
        return Err(Refusal::Oversize);
    }
    let increment = quota.interval_nanos().saturating_mul(u64::from(cost));
    let mut current = tat.load(Ordering::Acquire);
    loop {
        let next = current.max(now).saturating_add(increment);
        if next - now > quota.tolerance_nanos() {
            return Err(Refusal::Until(next.saturating_sub(quota.tolerance_nanos())));
        }
        match tat.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Ok(()),
            Err(actual) => current = actual,
        }
    }
}

/// Returns `cost` tokens taken a moment ago. If the TAT had caught up with the clock in
/// between, the refund can be at most one request's worth too generous, never stingy.
fn refund(quota: &Quota, tat: &AtomicU64, cost: u32) {
    let increment = quota.interval_nanos().saturating_mul(u64::from(cost));
    let _ = tat.fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
        Some(current.saturating_sub(increment))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn the_arithmetic_saturates_at_the_end_of_time() {
        // The schedule cannot run past the last nanosecond: every answer saturates there
        // instead of overflowing (a debug build panicked in `earliest`).
        let day = std::time::Duration::from_secs(86_400);
        let quotas = [Quota::per(1, day).unwrap().burst(2).unwrap()];
        let cells = GcraCells::new(1);
        let late = u64::MAX - 10;
        assert_eq!(cells.try_take(&quotas, 1, late), Ok(()));
        assert_eq!(cells.tats[0].load(Ordering::Relaxed), u64::MAX);
        assert_eq!(cells.earliest(&quotas, 1, late), Refusal::Until(late));
        assert_eq!(cells.predict(&quotas, 1_000, late), late);
    }

    #[test]
    fn several_quotas_must_all_admit_and_refund_on_refusal() {
        // 10/s with burst 5, and 2 per second with burst 2.
        let fast = Quota::per_second(10).unwrap().burst(5).unwrap();
        let slow = Quota::per_second(2).unwrap().burst(2).unwrap();
        let quotas = [fast, slow];
        let cells = GcraCells::new(2);
        assert_eq!(cells.try_take(&quotas, 1, 0), Ok(()));
        assert_eq!(cells.try_take(&quotas, 1, 0), Ok(()));
        // The slow quota refuses; the fast one must get its token back.
        assert_eq!(cells.try_take(&quotas, 1, 0), Err(Refusal::Until(500 * MS)));
        assert_eq!(cells.try_take(&quotas, 1, 0), Err(Refusal::Until(500 * MS)));
        assert_eq!(cells.try_take(&quotas, 1, 500 * MS), Ok(()));
        // The fast quota spent only 3 of its 5: two more would pass it alone.
        assert_eq!(cells.tats[0].load(Ordering::Relaxed), 500 * MS + 100 * MS);
    }

    /// Admits `tokens` requests of cost 1 one after another, each at the first instant from
    /// `from` that every quota allows, and returns the last one's instant.
    fn admit_in_turn(cells: &GcraCells, quotas: &[Quota], tokens: u64, from: u64) -> u64 {
        let mut at = from;
        for _ in 0..tokens {
            loop {
                match cells.try_take(quotas, 1, at) {
                    Ok(()) => break,
                    Err(Refusal::Until(next)) => at = next.max(at + 1),
                    Err(Refusal::Oversize) => unreachable!("cost 1 fits every burst"),
                }
            }
        }
        at
    }

    proptest! {
        /// For one quota, the predicted slot of a queue's last token is exactly when taking
        /// the queue's tokens in turn admits it, whatever the quota has already given out.
        #[test]
        fn predict_matches_taking_the_tokens_in_turn(
            per_second in 1u32..1_000,
            burst in 1u32..50,
            spent in 0u64..60,
            tokens in 1u64..120,
        ) {
            let quotas = [Quota::per_second(per_second).unwrap().burst(burst).unwrap()];
            let cells = GcraCells::new(1);
            for _ in 0..spent {
                let _ = cells.try_take(&quotas, 1, 0);
            }
            let predicted = cells.predict(&quotas, tokens, 0);
            prop_assert_eq!(predicted, admit_in_turn(&cells, &quotas, tokens, 0));
        }

        /// Over any arrival pattern, admitted requests i..=j satisfy
        /// j - i + 1 <= burst + (t_j - t_i) / T: no window admits more than burst + W/T.
        #[test]
        fn no_window_admits_more_than_burst_plus_rate(
            per_second in 1u32..2_000,
            burst in 1u32..20,
            mut arrivals in proptest::collection::vec(0u64..3_000_000_000, 1..400),
        ) {
            let quota = Quota::per_second(per_second).unwrap().burst(burst).unwrap();
            let quotas = [quota];
            let cells = GcraCells::new(1);
            arrivals.sort_unstable();
            let admitted: Vec<u64> = arrivals
                .into_iter()
                .filter(|&at| cells.try_take(&quotas, 1, at).is_ok())
                .collect();
            let interval = quota.interval_nanos();
            for i in 0..admitted.len() {
                for j in i..admitted.len() {
                    let count = (j - i + 1) as u64;
                    let allowed = u64::from(burst) + (admitted[j] - admitted[i]) / interval;
                    prop_assert!(count <= allowed, "{count} admitted in {} ns, allowed {allowed}", admitted[j] - admitted[i]);
                }
            }
        }
    }
}
