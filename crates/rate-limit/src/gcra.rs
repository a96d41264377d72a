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
            let allowed_at = (tat + increment).saturating_sub(quota.tolerance_nanos());
            at = at.max(allowed_at);
        }
        Refusal::Until(at)
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
