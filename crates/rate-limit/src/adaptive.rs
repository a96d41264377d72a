//! The adaptive rate of a key: CUBIC congestion control over the request rate, after the
//! AWS SDKs' adaptive retry mode. Until the server first throttles, the key goes at its
//! quotas' pace and this gate is open. A throttling answer with no usable reset (a 429, or
//! quota-exhausted headers, without `Retry-After` or a reset the pause could use) cuts the
//! rate to `BETA` of the rate that was being achieved; each answer after it moves the rate
//! along a cubic curve of the time since the cut, which climbs back, flattens as it nears
//! that rate, reaching it `K` seconds after the cut, then probes beyond; never above the
//! quotas' own rate nor above twice the measured rate.
//!
//! The rate is the curve's at the latest answer, as the SDKs work it out again at each
//! answer: a rate worked out only now and then would climb in steps, each held below the
//! curve until the next, and give away part of the recovery. The steady state touches
//! atomics only: an answer is counted and its time kept, the measured rate is worked out
//! again once per `BUCKET` by whichever answer ends it, and the curve changes only on a
//! throttle.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The multiplicative decrease: the rate after a throttle, as a fraction of the one before.
const BETA: f64 = 0.7;
/// The cubic's scale, in requests per second per second cubed.
const SCALE: f64 = 0.4;
/// The weight of the newest bucket in the measured rate.
const SMOOTHING: f64 = 0.8;
/// How often the measured rate is worked out again.
const BUCKET_NANOS: u64 = 500_000_000;
/// The lowest rate, in requests per second.
const MIN_RATE: f64 = 0.5;

const NANOS_PER_SEC: f64 = 1e9;

/// One key's adaptive rate.
#[derive(Debug)]
pub(crate) struct AdaptiveRate {
    /// The quotas' own rate (the slowest), in requests per second: the ceiling.
    max_rate: f64,
    /// Whether the server has throttled this key yet: until then the gate is open.
    enabled: AtomicBool,
    /// The curve's plateau, the rate achieved at the last throttle (`f64` bits).
    plateau: AtomicU64,
    /// When the last throttle came (nanoseconds from the limiter's origin): the curve's start.
    throttled_at: AtomicU64,
    /// The measured rate of answers, smoothed, in requests per second (`f64` bits; 0 until
    /// a bucket has been measured).
    measured: AtomicU64,
    /// The latest answer's time (nanoseconds from origin): where the curve is read.
    answered_at: AtomicU64,
    /// The pace of the last take, in nanoseconds a token: what a refund gives back.
    charged_nanos: AtomicU64,
    /// The gate's theoretical arrival time (GCRA with a burst of one).
    tat: AtomicU64,
    /// Answers in the current bucket.
    answered: AtomicU64,
    /// Where the current bucket starts (nanoseconds from the limiter's origin).
    bucket: AtomicU64,
    /// Held while a throttle moves the curve, so that throttles answered together cut one
    /// after another, each from the rate the one before left (as the SDKs do).
    throttling: Mutex<()>,
}

impl AdaptiveRate {
    /// An adaptive rate whose ceiling is the quotas' rate, `interval_nanos` a request.
    pub(crate) fn new(interval_nanos: u64) -> Self {
        let max_rate = NANOS_PER_SEC / interval_nanos.max(1) as f64;
        Self {
            max_rate,
            enabled: AtomicBool::new(false),
            plateau: AtomicU64::new(max_rate.to_bits()),
            throttled_at: AtomicU64::new(0),
            measured: AtomicU64::new(0f64.to_bits()),
            answered_at: AtomicU64::new(0),
            charged_nanos: AtomicU64::new(interval_nanos.max(1)),
            tat: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            bucket: AtomicU64::new(0),
            throttling: Mutex::new(()),
        }
    }

    /// The rate in force at `now` (nanoseconds from origin), in requests per second: the
    /// quotas' own until a throttle, then the curve's at the latest answer up to `now`,
    /// capped at twice the measured rate.
    pub(crate) fn rate(&self, now: u64) -> f64 {
        if !self.is_enabled() {
            return self.max_rate;
        }
        // A throttle stores the curve's start before its plateau, and the plateau is read
        // first: a reader that sees a throttle's plateau sees its start too. One racing the
        // throttle may see the new start with the old plateau: a cut all the same, from the
        // plateau before.
        let plateau = f64::from_bits(self.plateau.load(Ordering::Acquire));
        let since = self.throttled_at.load(Ordering::Relaxed);
        let k = (plateau * (1.0 - BETA) / SCALE).cbrt();
        let at = now.min(self.answered_at.load(Ordering::Relaxed));
        let t = at.saturating_sub(since) as f64 / NANOS_PER_SEC - k;
        let mut rate = SCALE * t * t * t + plateau;
        let measured = f64::from_bits(self.measured.load(Ordering::Relaxed));
        if measured > 0.0 {
            rate = rate.min(2.0 * measured);
        }
        rate.clamp(MIN_RATE.min(self.max_rate), self.max_rate)
    }

    /// The gate's pace at `now`, in nanoseconds a token.
    fn interval_at(&self, now: u64) -> u64 {
        ((NANOS_PER_SEC / self.rate(now)).ceil() as u64).max(1)
    }

    fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    /// Takes `cost` from the gate at `now`, or says when it could (nanoseconds from origin).
    pub(crate) fn try_take(&self, cost: u32, now: u64) -> Result<(), u64> {
        if !self.is_enabled() {
            return Ok(());
        }
        let mut current = self.tat.load(Ordering::Acquire);
        if current > now {
            return Err(current);
        }
        let interval = self.interval_at(now);
        let increment = interval.saturating_mul(u64::from(cost));
        loop {
            if current > now {
                return Err(current);
            }
            let next = now.saturating_add(increment);
            match self
                .tat
                .compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    self.charged_nanos.store(interval, Ordering::Relaxed);
                    return Ok(());
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Gives back a take the store then refused.
    pub(crate) fn refund(&self, cost: u32) {
        if !self.is_enabled() {
            return;
        }
        let increment = self
            .charged_nanos
            .load(Ordering::Relaxed)
            .saturating_mul(u64::from(cost));
        let _ = self
            .tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                Some(tat.saturating_sub(increment))
            });
    }

    /// When the gate would admit at or after `now` (nanoseconds from origin).
    pub(crate) fn earliest(&self, now: u64) -> u64 {
        if !self.is_enabled() {
            return now;
        }
        self.tat.load(Ordering::Acquire).max(now)
    }

    /// When the gate would have admitted `tokens` more tokens, none before `from`, at the
    /// pace in force then.
    pub(crate) fn predict(&self, tokens: u64, from: u64) -> u64 {
        if !self.is_enabled() {
            return from;
        }
        let start = self.tat.load(Ordering::Acquire).max(from);
        start.saturating_add(
            self.interval_at(start)
                .saturating_mul(tokens.saturating_sub(1)),
        )
    }

    /// Counts an answer at `now`; `throttled` if the server refused it for the rate with no
    /// usable reset.
    pub(crate) fn answered(&self, throttled: bool, now: u64) {
        self.answered.fetch_add(1, Ordering::Relaxed);
        self.answered_at.fetch_max(now, Ordering::Relaxed);
        let bucket = self.bucket.load(Ordering::Acquire);
        // One answer ends each bucket (the one whose exchange succeeds): the only writer of
        // the measured rate.
        if now >= bucket.saturating_add(BUCKET_NANOS)
            && self
                .bucket
                .compare_exchange(bucket, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            let count = self.answered.swap(0, Ordering::AcqRel) as f64;
            let span = (now - bucket) as f64 / NANOS_PER_SEC;
            let previous = f64::from_bits(self.measured.load(Ordering::Relaxed));
            let measured = count / span * SMOOTHING + previous * (1.0 - SMOOTHING);
            self.measured.store(measured.to_bits(), Ordering::Relaxed);
        }
        if !throttled {
            return;
        }
        let _throttling = self
            .throttling
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Cut from the rate achieved (or, before any was measured, the one in force).
        let in_force = self.rate(now);
        let measured = f64::from_bits(self.measured.load(Ordering::Relaxed));
        let achieved = if measured > 0.0 {
            measured.min(in_force)
        } else {
            in_force
        };
        self.throttled_at.store(now, Ordering::Relaxed);
        self.plateau.store(achieved.to_bits(), Ordering::Release);
        self.enabled.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    /// The curve from a plateau of `plateau`, `t` seconds after the throttle.
    fn curve(plateau: f64, t: f64) -> f64 {
        let k = (plateau * (1.0 - BETA) / SCALE).cbrt();
        plateau - SCALE * (k - t).powi(3)
    }

    #[test]
    fn a_throttle_cuts_the_rate_and_successes_bring_it_back_along_the_cubic() {
        // A ceiling of 100 a second, achieved for a second before the server throttles.
        let adaptive = AdaptiveRate::new(SEC / 100);
        assert_eq!(adaptive.try_take(1, 0), Ok(()));
        for i in 1..=100 {
            adaptive.answered(false, i * SEC / 100);
        }
        assert!((adaptive.rate(SEC) - 100.0).abs() < 1e-6);
        adaptive.answered(true, SEC + 1);
        // 0.7 of the rate achieved: 100 a second over both buckets, smoothed from 0 (80, then
        // 96).
        let rate = adaptive.rate(SEC + 1);
        assert!((rate - 0.7 * 96.0).abs() < 1e-9, "{rate}");
        // K = cbrt(96 × 0.3 / 0.4) ≈ 4.16 s: the rate is back near 96 then, not before.
        let k = (96.0f64 * 0.3 / 0.4).cbrt();
        let mut at = SEC + 1;
        let mut last = rate;
        while (at as f64) < (1.0 + k - 0.5) * SEC as f64 {
            at += SEC / 100;
            adaptive.answered(false, at);
            let rate = adaptive.rate(at);
            assert!(rate >= last - 1e-9, "the rate only rises between throttles");
            last = rate;
        }
        assert!(last < 96.0);
        assert!(last > 95.0, "{last}");
        // Long after, it is capped at the ceiling.
        for i in 0..2_000 {
            adaptive.answered(false, 20 * SEC + i * SEC / 100);
        }
        assert!((adaptive.rate(40 * SEC) - 100.0).abs() < 1e-6);
    }

    #[test]
    fn each_answer_moves_the_rate_along_the_curve() {
        // Throttled at 1 s after a second at 100 a second (measured 96). Between answers the
        // rate holds; each answer, whenever it comes, moves it to the curve's value at that
        // instant (not to a step worked out at the bucket's end).
        let adaptive = AdaptiveRate::new(SEC / 100);
        for i in 1..=100 {
            adaptive.answered(false, i * SEC / 100);
        }
        adaptive.answered(true, SEC);
        let cut = adaptive.rate(SEC + 400_000_000);
        assert!((cut - curve(96.0, 0.0)).abs() < 1e-9, "{cut}");
        for millis in [1, 250, 499] {
            let at = SEC + millis * 1_000_000;
            adaptive.answered(false, at);
            let expected = curve(96.0, millis as f64 / 1e3);
            let later = at + 40_000_000;
            let rate = adaptive.rate(later);
            assert!(
                (rate - expected).abs() < 1e-9,
                "{millis} ms: {rate} vs {expected}"
            );
            assert_eq!(
                adaptive.interval_at(later),
                (1e9 / expected).ceil() as u64,
                "{millis} ms"
            );
        }
        // 600 ms after the cut the bucket ends with 5 answers in 0.6 s (the throttle's among
        // them): measured 0.8 × 5 / 0.6 + 0.2 × 96, and the rate is capped at twice that,
        // below the curve.
        let at = SEC + 600_000_000;
        adaptive.answered(false, at);
        let measured = 0.8 * 5.0 / 0.6 + 0.2 * 96.0;
        assert!(curve(96.0, 0.6) > 2.0 * measured);
        let rate = adaptive.rate(at);
        assert!((rate - 2.0 * measured).abs() < 1e-9, "{rate}");
    }
    #[test]
    fn a_second_throttle_cuts_from_the_rate_the_first_left() {
        let adaptive = AdaptiveRate::new(SEC / 10);
        adaptive.answered(true, 0);
        assert!((adaptive.rate(0) - 7.0).abs() < 1e-9);
        // 100 ms later, nothing measured yet: the cut is from the rate in force then.
        let in_force = curve(10.0, 0.1);
        adaptive.answered(true, SEC / 10);
        let rate = adaptive.rate(SEC / 10);
        assert!((rate - 0.7 * in_force).abs() < 1e-9, "{rate}");
    }

    #[test]
    fn the_gate_paces_at_the_rate_once_enabled() {
        let adaptive = AdaptiveRate::new(SEC / 10);
        assert_eq!(adaptive.try_take(1, 0), Ok(()));
        assert_eq!(adaptive.try_take(1, 0), Ok(()), "open until a throttle");
        adaptive.answered(true, 0);
        // 7 a second from the rate in force (nothing measured yet).
        let interval = adaptive.interval_at(0);
        assert_eq!(interval, (1e9f64 / 7.0).ceil() as u64);
        assert_eq!(adaptive.try_take(1, 0), Ok(()));
        assert_eq!(adaptive.try_take(1, 0), Err(interval));
        assert_eq!(adaptive.predict(3, 0), 3 * interval);
        adaptive.refund(1);
        assert_eq!(adaptive.try_take(1, 0), Ok(()));
        // An answer at the slot moves the rate up the curve: the next take is charged at the
        // pace in force then, and so are predictions.
        adaptive.answered(false, interval);
        let climbed = adaptive.interval_at(interval);
        assert!(climbed < interval, "the curve climbs");
        assert_eq!(adaptive.predict(3, 0), interval + 2 * climbed);
        assert_eq!(adaptive.try_take(1, interval), Ok(()));
        assert_eq!(adaptive.try_take(1, interval), Err(interval + climbed));
    }
}
