//! The generic cell rate algorithm over atomics: one theoretical arrival time (TAT) per
//! quota, advanced by compare-and-swap. Times are nanoseconds from the limiter's origin.
//!
//! A request of cost `c` at time `now` moves a quota's TAT to `max(TAT, now) + c × T`; it is
//! admitted when that lies at most `burst × T` ahead of `now`. With several quotas every one
//! must admit: each is advanced in turn, and if a later one refuses, the earlier ones are
//! given their tokens back.
//!
//! Window quotas ([`Quota::window`]) among them keep an exact log of their admissions
//! instead, behind one small lock per key taken only when a key has a window quota: a log of
//! several instants cannot be updated by one compare-and-swap. Keys with GCRA quotas alone
//! never touch it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use crate::quota::Quota;
use crate::window::WindowLog;

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
    /// One log per quota, made on a window quota's first use: a key with GCRA quotas alone
    /// holds one empty word for them. A window quota is the one admission path under a lock
    /// (the key's own, held for the expiry and one push): an exact log of admissions of any
    /// cost, checked across every window of the key at once and refunded from its newest
    /// end, does not fit in words one compare-and-swap can move; a lock-free ring would need
    /// a slot per token made up front (8 MB a key for a million an hour), where this log
    /// holds only what the window does. GCRA quotas take no lock.
    windows: OnceLock<Box<Mutex<Vec<WindowLog>>>>,
}

fn has_window(quotas: &[Quota]) -> bool {
    quotas.iter().any(Quota::is_window)
}

impl GcraCells {
    /// Fresh cells (every quota full) for `quotas` many quotas.
    pub fn new(quotas: usize) -> Self {
        Self {
            tats: (0..quotas).map(|_| AtomicU64::new(0)).collect(),
            windows: OnceLock::new(),
        }
    }

    /// The window logs, one per quota, expired at `now`.
    fn logs(&self, quotas: &[Quota], now: u64) -> MutexGuard<'_, Vec<WindowLog>> {
        // Every update of a log is complete before anything can panic, so a poisoned lock
        // still guards a consistent log.
        let mut logs = self
            .windows
            .get_or_init(Box::default)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if logs.len() < quotas.len() {
            logs.resize_with(quotas.len(), WindowLog::default);
        }
        for (quota, log) in quotas.iter().zip(logs.iter_mut()) {
            if quota.is_window() {
                log.expire(quota.window_nanos(), now);
            }
        }
        logs
    }

    /// Takes `cost` from every quota at `now`, or says when it could.
    #[inline]
    pub fn try_take(&self, quotas: &[Quota], cost: u32, now: u64) -> Result<(), Refusal> {
        // One GCRA quota, the most common set: one compare-and-swap, nothing to give back.
        if let ([quota], Some(tat)) = (quotas, self.tats.first())
            && !quota.is_window()
        {
            return take_one(quota, tat, cost, now);
        }
        self.try_take_all(quotas, cost, now)
    }

    /// [`try_take`](Self::try_take) for any set of quotas.
    fn try_take_all(&self, quotas: &[Quota], cost: u32, now: u64) -> Result<(), Refusal> {
        if !has_window(quotas) {
            return self.take_gcra(quotas, cost, now);
        }
        let mut logs = self.logs(quotas, now);
        let window_at = window_earliest(&logs, quotas, cost, now)?;
        if window_at > now {
            let gcra_at = match self.gcra_earliest(quotas, cost, now) {
                Refusal::Until(at) => at,
                Refusal::Oversize => return Err(Refusal::Oversize),
            };
            return Err(Refusal::Until(window_at.max(gcra_at)));
        }
        match self.take_gcra(quotas, cost, now) {
            Ok(()) => {
                for (quota, log) in quotas.iter().zip(logs.iter_mut()) {
                    if quota.is_window() {
                        log.push(now, u64::from(cost));
                    }
                }
                Ok(())
            }
            Err(Refusal::Oversize) => Err(Refusal::Oversize),
            Err(Refusal::Until(at)) => Err(Refusal::Until(at.max(window_at))),
        }
    }

    /// Takes `cost` from every GCRA quota (window quotas are skipped).
    fn take_gcra(&self, quotas: &[Quota], cost: u32, now: u64) -> Result<(), Refusal> {
        for (index, (quota, tat)) in quotas.iter().zip(self.tats.iter()).enumerate() {
            if quota.is_window() {
                continue;
            }
            if let Err(refusal) = take_one(quota, tat, cost, now) {
                // Give the earlier quotas their tokens back, and report when all would admit.
                for (quota, tat) in quotas[..index].iter().zip(self.tats.iter()) {
                    if !quota.is_window() {
                        refund(quota, tat, u64::from(cost));
                    }
                }
                return Err(match refusal {
                    Refusal::Oversize => Refusal::Oversize,
                    Refusal::Until(_) => self.gcra_earliest(quotas, cost, now),
                });
            }
        }
        Ok(())
    }

    /// When every quota would admit `cost` (now or later), without taking anything.
    pub fn earliest(&self, quotas: &[Quota], cost: u32, now: u64) -> Refusal {
        let gcra = self.gcra_earliest(quotas, cost, now);
        if !has_window(quotas) {
            return gcra;
        }
        let logs = self.logs(quotas, now);
        match (gcra, window_earliest(&logs, quotas, cost, now)) {
            (Refusal::Until(gcra), Ok(window)) => Refusal::Until(gcra.max(window)),
            _ => Refusal::Oversize,
        }
    }

    fn gcra_earliest(&self, quotas: &[Quota], cost: u32, now: u64) -> Refusal {
        let mut at = now;
        for (quota, tat) in quotas.iter().zip(self.tats.iter()) {
            if cost > quota.burst_size() {
                return Refusal::Oversize;
            }
            if quota.is_window() {
                continue;
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
        if has_window(quotas) {
            let logs = self.logs(quotas, from);
            for (quota, log) in quotas.iter().zip(logs.iter()) {
                if quota.is_window() {
                    let n = u64::from(quota.burst_size());
                    at = at.max(log.predict(n, quota.window_nanos(), tokens, from));
                }
            }
        }
        for (quota, tat) in quotas.iter().zip(self.tats.iter()) {
            if quota.is_window() {
                continue;
            }
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
        if !self
            .tats
            .iter()
            .all(|tat| tat.load(Ordering::Relaxed) <= now)
        {
            return false;
        }
        // A key whose window still counts admissions must be kept, or it would get a fresh
        // window; the lock is free in all but a race, and this is asked only of idle keys.
        let Some(windows) = self.windows.get() else {
            return true;
        };
        let logs = windows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        logs.iter().all(|log| log.is_idle(now))
    }

    /// Settles a request after its answer: `delta` more tokens taken from every quota at
    /// `now` (a debit: the request cost more than it was admitted for, and the next ones
    /// wait for the difference, beyond the burst if need be), or, if negative, given back
    /// (a refund: it cost less).
    pub fn settle(&self, quotas: &[Quota], delta: i64, now: u64) {
        let tokens = delta.unsigned_abs();
        if tokens == 0 {
            return;
        }
        if has_window(quotas) {
            let mut logs = self.logs(quotas, now);
            for (quota, log) in quotas.iter().zip(logs.iter_mut()) {
                if quota.is_window() {
                    if delta > 0 {
                        log.push(now, tokens);
                    } else {
                        log.refund(tokens);
                    }
                }
            }
        }
        for (quota, tat) in quotas.iter().zip(self.tats.iter()) {
            if quota.is_window() {
                continue;
            }
            if delta > 0 {
                let increment = quota.interval_nanos().saturating_mul(tokens);
                let _ = tat.fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                    Some(current.max(now).saturating_add(increment))
                });
            } else {
                refund(quota, tat, tokens);
            }
        }
    }

    /// Gives back `held(quota)` tokens to each quota: a rate quota's schedule moves back by
    /// them, a window takes them off the newest admissions recorded no later than
    /// `admitted`.
    pub fn refund(&self, quotas: &[Quota], held: impl Fn(&Quota) -> u64, admitted: u64, now: u64) {
        if has_window(quotas) {
            let mut logs = self.logs(quotas, now);
            for (quota, log) in quotas.iter().zip(logs.iter_mut()) {
                if quota.is_window() {
                    log.refund_at(admitted, held(quota));
                }
            }
        }
        for (quota, tat) in quotas.iter().zip(self.tats.iter()) {
            if !quota.is_window() {
                refund(quota, tat, held(quota));
            }
        }
    }

    /// How many tokens every quota would admit at `now`.
    pub fn available(&self, quotas: &[Quota], now: u64) -> u64 {
        let mut free = u64::MAX;
        for (quota, tat) in quotas.iter().zip(self.tats.iter()) {
            if quota.is_window() {
                continue;
            }
            let ahead = tat.load(Ordering::Acquire).saturating_sub(now);
            let room = quota.tolerance_nanos().saturating_sub(ahead);
            free = free.min(room / quota.interval_nanos().max(1));
        }
        if has_window(quotas) {
            let logs = self.logs(quotas, now);
            for (quota, log) in quotas.iter().zip(logs.iter()) {
                if quota.is_window() {
                    free = free.min(u64::from(quota.burst_size()).saturating_sub(log.total()));
                }
            }
        }
        free
    }
}

/// When every window quota would admit `cost` at or after `now`, from logs expired at `now`.
fn window_earliest(
    logs: &[WindowLog],
    quotas: &[Quota],
    cost: u32,
    now: u64,
) -> Result<u64, Refusal> {
    let mut at = now;
    for (quota, log) in quotas.iter().zip(logs.iter()) {
        if !quota.is_window() {
            continue;
        }
        if cost > quota.burst_size() {
            return Err(Refusal::Oversize);
        }
        let n = u64::from(quota.burst_size());
        at = at.max(log.earliest(n, quota.window_nanos(), u64::from(cost), now));
    }
    Ok(at)
}

#[inline]
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
fn refund(quota: &Quota, tat: &AtomicU64, cost: u64) {
    let increment = quota.interval_nanos().saturating_mul(cost);
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

    #[test]
    fn a_debit_pushes_the_schedule_past_the_burst_and_a_refund_gives_back() {
        // 100 a second (10 ms a token), burst 100.
        let quotas = [Quota::per_second(100).unwrap().burst(100).unwrap()];
        let cells = GcraCells::new(1);
        for _ in 0..100 {
            cells.try_take(&quotas, 1, 0).unwrap();
        }
        cells.settle(&quotas, 200, 0);
        assert_eq!(cells.earliest(&quotas, 1, 0), Refusal::Until(2_010 * MS));
        cells.settle(&quotas, -150, 0);
        assert_eq!(cells.earliest(&quotas, 1, 0), Refusal::Until(510 * MS));
        assert_eq!(cells.available(&quotas, 600 * MS), 10);
    }

    #[test]
    fn windows_and_gcra_all_must_admit() {
        // 2 in any second, and 10 a second with burst 1 (one per 100 ms).
        let window = Quota::window(2, std::time::Duration::from_secs(1)).unwrap();
        let paced = Quota::per_second(10).unwrap();
        let quotas = [window, paced];
        let cells = GcraCells::new(2);
        assert_eq!(cells.try_take(&quotas, 1, 0), Ok(()));
        assert_eq!(cells.try_take(&quotas, 1, 0), Err(Refusal::Until(100 * MS)));
        assert_eq!(cells.try_take(&quotas, 1, 100 * MS), Ok(()));
        // The window is full until the first admission leaves it; GCRA is not taken from.
        assert_eq!(
            cells.try_take(&quotas, 1, 200 * MS),
            Err(Refusal::Until(1_000 * MS))
        );
        assert_eq!(cells.available(&quotas, 200 * MS), 0);
        assert_eq!(cells.try_take(&quotas, 1, 1_000 * MS), Ok(()));
        // Queue predictions follow the window: tokens 1 and 2 more go when 100 ms and
        // 1,000 ms leave it.
        assert_eq!(cells.predict(&quotas, 1, 1_000 * MS), 1_100 * MS);
        assert_eq!(cells.predict(&quotas, 3, 1_000 * MS), 2_100 * MS);
        assert!(!cells.is_idle(1_999 * MS));
        assert!(cells.is_idle(2_000 * MS));
    }

    #[test]
    fn a_window_settles_by_debit_and_refund() {
        let quotas = [Quota::window(10, std::time::Duration::from_secs(1)).unwrap()];
        let cells = GcraCells::new(1);
        cells.try_take(&quotas, 5, 0).unwrap();
        cells.settle(&quotas, 7, 100 * MS);
        // 12 in the window: 3 must leave, the 5 at 0 (at 1 s) suffice for 1 more.
        assert_eq!(
            cells.earliest(&quotas, 1, 100 * MS),
            Refusal::Until(1_000 * MS)
        );
        assert_eq!(cells.available(&quotas, 100 * MS), 0);
        cells.settle(&quotas, -9, 100 * MS);
        assert_eq!(cells.available(&quotas, 100 * MS), 7);
        assert_eq!(
            cells.earliest(&quotas, 7, 100 * MS),
            Refusal::Until(100 * MS)
        );
        assert_eq!(cells.earliest(&quotas, 11, 100 * MS), Refusal::Oversize);
    }

    proptest! {
        /// Over any arrivals and costs, no interval of length `period` admits more than `n`
        /// tokens, alone or beside a GCRA quota; and every refusal names an instant when the
        /// same request would be admitted.
        #[test]
        fn no_interval_of_the_period_admits_more_than_n(
            n in 1u32..30,
            period_ms in 1u64..2_000,
            with_gcra in any::<bool>(),
            mut arrivals in proptest::collection::vec((0u64..10_000_000_000, 1u32..4), 1..300),
        ) {
            let window = Quota::window(n, std::time::Duration::from_millis(period_ms)).unwrap();
            let mut quotas = vec![window];
            if with_gcra {
                quotas.push(Quota::per_second(50).unwrap().burst(5).unwrap());
            }
            let cells = GcraCells::new(quotas.len());
            arrivals.sort_unstable();
            let mut admitted: Vec<(u64, u32)> = Vec::new();
            for (at, cost) in arrivals {
                match cells.try_take(&quotas, cost, at) {
                    Ok(()) => admitted.push((at, cost)),
                    Err(Refusal::Until(when)) => {
                        prop_assert!(when > at);
                        prop_assert!(when <= at + period_ms * MS + 1_000 * MS);
                    }
                    Err(Refusal::Oversize) => prop_assert!(cost > n || (with_gcra && cost > 5)),
                }
            }
            let period = period_ms * MS;
            for (i, &(start, _)) in admitted.iter().enumerate() {
                let in_window: u64 = admitted[i..]
                    .iter()
                    .take_while(|(at, _)| *at < start + period)
                    .map(|(_, cost)| u64::from(*cost))
                    .sum();
                prop_assert!(in_window <= u64::from(n), "{in_window} tokens from {start} within {period} ns");
            }
        }

        /// For a window alone, the predicted slot of a queue's last token is exactly when
        /// taking the tokens in turn admits it, whatever the window already holds.
        #[test]
        fn window_predict_matches_taking_the_tokens_in_turn(
            n in 1u32..20,
            period_ms in 1u64..1_000,
            spent in proptest::collection::vec(0u64..1_000_000_000, 0..40),
            tokens in 1u64..60,
        ) {
            let quotas = [Quota::window(n, std::time::Duration::from_millis(period_ms)).unwrap()];
            let cells = GcraCells::new(1);
            let mut spent = spent;
            spent.sort_unstable();
            for at in spent {
                let _ = cells.try_take(&quotas, 1, at);
            }
            let from = 1_000_000_000;
            let predicted = cells.predict(&quotas, tokens, from);
            prop_assert_eq!(predicted, admit_in_turn(&cells, &quotas, tokens, from));
        }

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
