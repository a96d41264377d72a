//! The adaptive rate of a key: CUBIC congestion control over the request rate, after the
//! AWS SDKs' adaptive retry mode. Until the server first throttles, the key goes at its
//! quotas' pace and this gate is open. A throttling answer with no usable reset (a 429, or
//! quota-exhausted headers, without `Retry-After` or a reset the pause could use) cuts the
//! rate to `BETA` of the rate that was being achieved; successes raise it again along a
//! cubic curve that flattens as it nears that rate, reaching it `K` seconds after the cut,
//! then probes beyond; never above the quotas' own rate.
//!
//! The steady state touches atomics only: responses are counted, and the rate is worked out
//! again once per `BUCKET` (by whichever response ends it), or at once on a throttle.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The multiplicative decrease: the rate after a throttle, as a fraction of the one before.
const BETA: f64 = 0.7;
/// The cubic's scale, in requests per second per second cubed.
const SCALE: f64 = 0.4;
/// The weight of the newest bucket in the measured rate.
const SMOOTHING: f64 = 0.8;
/// How often the measured rate, and the rate with it, is worked out again.
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
    /// The gate's pace, in nanoseconds a token (`1 / rate`).
    interval_nanos: AtomicU64,
    /// The gate's theoretical arrival time (GCRA with a burst of one).
    tat: AtomicU64,
    /// Responses in the current bucket.
    answered: AtomicU64,
    /// Where the current bucket starts (nanoseconds from the limiter's origin).
    bucket: AtomicU64,
    cubic: Mutex<Cubic>,
}

#[derive(Debug, Default)]
struct Cubic {
    /// The measured rate of answers, smoothed, in requests per second.
    measured: f64,
    /// The rate in force, in requests per second.
    rate: f64,
    /// The rate at the last throttle: the cubic's plateau.
    last_max: f64,
    /// When the last throttle came, in seconds from the limiter's origin.
    last_throttle: f64,
    /// How long after a throttle the cubic regains `last_max`, in seconds.
    k: f64,
}

impl AdaptiveRate {
    /// An adaptive rate whose ceiling is the quotas' rate, `interval_nanos` a request.
    pub(crate) fn new(interval_nanos: u64) -> Self {
        let max_rate = NANOS_PER_SEC / interval_nanos.max(1) as f64;
        Self {
            max_rate,
            enabled: AtomicBool::new(false),
            interval_nanos: AtomicU64::new(interval_nanos.max(1)),
            tat: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            bucket: AtomicU64::new(0),
            cubic: Mutex::new(Cubic {
                rate: max_rate,
                ..Cubic::default()
            }),
        }
    }

    /// The rate in force, in requests per second (the quotas' own until a throttle).
    pub(crate) fn rate(&self) -> f64 {
        NANOS_PER_SEC / self.interval_nanos.load(Ordering::Relaxed).max(1) as f64
    }

    fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    /// Takes `cost` from the gate at `now`, or says when it could (nanoseconds from origin).
    pub(crate) fn try_take(&self, cost: u32, now: u64) -> Result<(), u64> {
        if !self.is_enabled() {
            return Ok(());
        }
        let increment = self
            .interval_nanos
            .load(Ordering::Relaxed)
            .saturating_mul(u64::from(cost));
        let mut current = self.tat.load(Ordering::Acquire);
        loop {
            if current > now {
                return Err(current);
            }
            let next = now.saturating_add(increment);
            match self
                .tat
                .compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(()),
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
            .interval_nanos
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

    /// When the gate would have admitted `tokens` more tokens, none before `from`.
    pub(crate) fn predict(&self, tokens: u64, from: u64) -> u64 {
        if !self.is_enabled() {
            return from;
        }
        let interval = self.interval_nanos.load(Ordering::Relaxed);
        self.tat
            .load(Ordering::Acquire)
            .max(from)
            .saturating_add(interval.saturating_mul(tokens.saturating_sub(1)))
    }

    /// Counts an answer at `now`; `throttled` if the server refused it for the rate with no
    /// usable reset.
    pub(crate) fn answered(&self, throttled: bool, now: u64) {
        self.answered.fetch_add(1, Ordering::Relaxed);
        let bucket = self.bucket.load(Ordering::Acquire);
        let rolled = now >= bucket.saturating_add(BUCKET_NANOS)
            && self
                .bucket
                .compare_exchange(bucket, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
        if !throttled && !rolled {
            return;
        }
        let mut cubic = self
            .cubic
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let seconds = now as f64 / NANOS_PER_SEC;
        if rolled {
            let count = self.answered.swap(0, Ordering::AcqRel) as f64;
            let span = (now - bucket) as f64 / NANOS_PER_SEC;
            let rate = count / span;
            cubic.measured = rate * SMOOTHING + cubic.measured * (1.0 - SMOOTHING);
        }
        let rate = if throttled {
            // Cut from the rate achieved (or, before any was measured, the one in force).
            let achieved = if cubic.measured > 0.0 {
                cubic.measured.min(cubic.rate)
            } else {
                cubic.rate
            };
            cubic.last_max = achieved;
            cubic.last_throttle = seconds;
            cubic.k = (achieved * (1.0 - BETA) / SCALE).cbrt();
            self.enabled.store(true, Ordering::Release);
            achieved * BETA
        } else if self.is_enabled() {
            let t = seconds - cubic.last_throttle - cubic.k;
            let cubic_rate = SCALE * t * t * t + cubic.last_max;
            cubic_rate.min(2.0 * cubic.measured.max(MIN_RATE))
        } else {
            return;
        };
        let rate = rate.clamp(MIN_RATE.min(self.max_rate), self.max_rate);
        cubic.rate = rate;
        let interval = (NANOS_PER_SEC / rate).ceil() as u64;
        self.interval_nanos
            .store(interval.max(1), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn a_throttle_cuts_the_rate_and_successes_bring_it_back_along_the_cubic() {
        // A ceiling of 100 a second, achieved for a second before the server throttles.
        let adaptive = AdaptiveRate::new(SEC / 100);
        assert_eq!(adaptive.try_take(1, 0), Ok(()));
        for i in 1..=100 {
            adaptive.answered(false, i * SEC / 100);
        }
        assert!((adaptive.rate() - 100.0).abs() < 1e-6);
        adaptive.answered(true, SEC + 1);
        // 0.7 of the rate achieved: 100 a second over both buckets, smoothed from 0 (80, then
        // 96).
        assert!(
            (adaptive.rate() - 0.7 * 96.0).abs() < 0.01,
            "{}",
            adaptive.rate()
        );
        // K = cbrt(96 × 0.3 / 0.4) ≈ 4.16 s: the rate is back near 96 then, not before.
        let k = (96.0f64 * 0.3 / 0.4).cbrt();
        let mut at = SEC + 1;
        let mut last = adaptive.rate();
        while (at as f64) < (1.0 + k - 0.5) * SEC as f64 {
            at += SEC / 100;
            adaptive.answered(false, at);
            assert!(
                adaptive.rate() >= last - 1e-9,
                "the rate only rises between throttles"
            );
            last = adaptive.rate();
        }
        assert!(adaptive.rate() < 96.0);
        assert!(adaptive.rate() > 95.0, "{}", adaptive.rate());
        // Long after, it is capped at the ceiling.
        for i in 0..2_000 {
            adaptive.answered(false, 20 * SEC + i * SEC / 100);
        }
        assert!((adaptive.rate() - 100.0).abs() < 1e-6);
    }

    #[test]
    fn the_gate_paces_at_the_rate_once_enabled() {
        let adaptive = AdaptiveRate::new(SEC / 10);
        assert_eq!(adaptive.try_take(1, 0), Ok(()));
        assert_eq!(adaptive.try_take(1, 0), Ok(()), "open until a throttle");
        adaptive.answered(true, 0);
        // 7 a second from the rate in force (nothing measured yet).
        let interval = adaptive.interval_nanos.load(Ordering::Relaxed);
        assert_eq!(interval, (1e9f64 / 7.0).ceil() as u64);
        assert_eq!(adaptive.try_take(1, 0), Ok(()));
        assert_eq!(adaptive.try_take(1, 0), Err(interval));
        assert_eq!(adaptive.predict(3, 0), 3 * interval);
        adaptive.refund(1);
        assert_eq!(adaptive.try_take(1, 0), Ok(()));
    }
}
