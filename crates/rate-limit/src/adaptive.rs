//! The adaptive rate of a key: CUBIC congestion control over the request rate, after the
//! AWS SDKs' adaptive retry mode. Until the server first throttles, the key goes at its
//! quotas' pace and this gate is open. A throttling answer with no usable reset (a 429, or
//! quota-exhausted headers, without `Retry-After` or a reset the pause could use) cuts the
//! rate to a fraction of the rate that was being achieved; each answer after it moves the
//! rate along a cubic curve of the time since the cut, which climbs back, flattens as it
//! nears that rate, reaching it `K` seconds after the cut, then probes beyond; never above
//! the quotas' own rate nor above twice the measured rate.
//!
//! How deep the cut goes depends on where the throttle finds the curve. Before it is back
//! at its plateau, the server's limit is lower than the rate that last worked: the cut is
//! the SDKs' (`BETA`, 0.7). Once it has passed the plateau and is probing beyond, the
//! throttle says the probe went too far and the rate that last worked still holds: the cut
//! is shallower (`PROBE_BETA`, 0.85). A fixed quota, the common case, is met by a probe every
//! few seconds; with the SDKs' cut each of them would give up 30 % of the rate for the
//! seconds the curve takes to climb back, and the key would get about 0.88 of the quota
//! (0.92 with the shallower cut and the gate's tolerance below). A limit that drops is still
//! met by the deep cut from the next throttle on, which comes before the plateau.
//!
//! The rate is the curve's at the latest answer, as the SDKs work it out again at each
//! answer: a rate worked out only now and then would climb in steps, each held below the
//! curve until the next, and give away part of the recovery. The steady state touches
//! atomics only: an answer is counted and its time kept, the measured rate is worked out
//! again once per `BUCKET` by whichever answer ends it, and the curve changes only on a
//! throttle.
//!
//! The gate is GCRA with a burst of one. A slot taken at most `LATE_WAKE_NANOS` (and half a
//! request's interval) after it is charged from the slot, not from when it was taken: a
//! waiter woken a little late (tokio's timer rounds up to the next millisecond, and the
//! thread may be busy) does not push every later slot back, which would pile up into a
//! slower rate than the one in force. A slot taken later than that, after a pause, is
//! charged from when it was taken: a pause earns no burst.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The multiplicative decrease: the rate after a throttle that finds the curve below its
/// plateau (or the first), as a fraction of the rate achieved.
const BETA: f64 = 0.7;
/// The decrease after a throttle that finds the curve past its plateau, probing beyond.
const PROBE_BETA: f64 = 0.85;
/// How late a waiter may take its slot and still be charged from the slot.
const LATE_WAKE_NANOS: u64 = 2_000_000;
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
    /// The last throttle's decrease (`f64` bits): with the plateau, the curve's `K`.
    decrease: AtomicU64,
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
            decrease: AtomicU64::new(BETA.to_bits()),
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
        let (plateau, t) = self.curve(now);
        let mut rate = SCALE * t * t * t + plateau;
        let measured = f64::from_bits(self.measured.load(Ordering::Relaxed));
        if measured > 0.0 {
            rate = rate.min(2.0 * measured);
        }
        rate.clamp(MIN_RATE.min(self.max_rate), self.max_rate)
    }

    /// The curve's plateau and where `now` is on it: seconds since the curve reached its
    /// plateau (negative while it climbs back), read at the latest answer up to `now`.
    fn curve(&self, now: u64) -> (f64, f64) {
        // A throttle stores the curve's start and decrease before its plateau, and the
        // plateau is read first: a reader that sees a throttle's plateau sees the rest too.
        // One racing the throttle may see some of its stores and not the others (the new
        // start or decrease with the old plateau): for that one reading, a curve mixed from
        // the two, which the next answer's reading puts right.
        let plateau = f64::from_bits(self.plateau.load(Ordering::Acquire));
        let since = self.throttled_at.load(Ordering::Relaxed);
        let decrease = f64::from_bits(self.decrease.load(Ordering::Relaxed));
        let k = (plateau * (1.0 - decrease) / SCALE).cbrt();
        let at = now.min(self.answered_at.load(Ordering::Relaxed));
        (plateau, at.saturating_sub(since) as f64 / NANOS_PER_SEC - k)
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
        let tolerance = LATE_WAKE_NANOS.min(interval / 2);
        loop {
            if current > now {
                return Err(current);
            }
            // Charged from the slot when it is taken a little late; from `now` after a
            // pause, which earns no credit.
            let from = if now - current <= tolerance {
                current
            } else {
                now
            };
            let next = from.saturating_add(increment);
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
        // Cut from the rate achieved (or, before any was measured, the one in force); the
        // shallower cut only when the rate in force had passed the plateau, probing beyond
        // it. Past `K` alone is not enough: a rate held below the curve (by twice the
        // measured rate, or the quotas') has not been tried beyond the plateau.
        let in_force = self.rate(now);
        let (plateau, since_plateau) = self.curve(now);
        let probing = self.is_enabled() && since_plateau >= 0.0 && in_force >= plateau;
        let decrease = if probing { PROBE_BETA } else { BETA };
        let measured = f64::from_bits(self.measured.load(Ordering::Relaxed));
        let achieved = if measured > 0.0 {
            measured.min(in_force)
        } else {
            in_force
        };
        self.throttled_at.store(now, Ordering::Relaxed);
        self.decrease.store(decrease.to_bits(), Ordering::Relaxed);
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
        curve_after(plateau, BETA, t)
    }

    /// A ceiling of 100 a second, answered at that rate for a second (measured 96 over its
    /// two buckets), then throttled at 1 s.
    fn throttled_at_one_second() -> AdaptiveRate {
        let adaptive = AdaptiveRate::new(SEC / 100);
        for i in 1..=100 {
            adaptive.answered(false, i * SEC / 100);
        }
        adaptive.answered(true, SEC);
        adaptive
    }

    /// The curve from a plateau of `plateau` after a cut to `decrease` of it.
    fn curve_after(plateau: f64, decrease: f64, t: f64) -> f64 {
        let k = (plateau * (1.0 - decrease) / SCALE).cbrt();
        plateau - SCALE * (k - t).powi(3)
    }

    #[test]
    fn a_throttle_past_the_plateau_cuts_less_than_one_before_it() {
        // A ceiling of 100 a second; throttled at 1 s after a second at 100 a second
        // (measured 96): the first cut is the deep one.
        let adaptive = throttled_at_one_second();
        assert!((adaptive.rate(SEC) - 0.7 * 96.0).abs() < 1e-9);
        // Answers every 10 ms until a second past `K`: the curve is probing beyond 96 when
        // the next throttle comes, so the cut is to 0.85 of the rate achieved (the curve's,
        // below the measured 100).
        let k = (96.0f64 * 0.3 / 0.4).cbrt();
        let probe = SEC + ((k + 1.0) * SEC as f64) as u64;
        let mut at = SEC;
        while at + SEC / 100 < probe {
            at += SEC / 100;
            adaptive.answered(false, at);
        }
        adaptive.answered(false, probe);
        let in_force = adaptive.rate(probe);
        assert!((in_force - curve(96.0, (probe - SEC) as f64 / 1e9)).abs() < 1e-9);
        assert!(in_force > 96.0, "{in_force}");
        adaptive.answered(true, probe);
        let rate = adaptive.rate(probe);
        assert!(
            (rate - 0.85 * in_force).abs() < 1e-9,
            "{rate} vs {in_force}"
        );
        // 100 ms later the curve is climbing back: a throttle now says the limit is lower
        // than the rate that last worked, and the cut is the deep one again.
        let climbing = probe + SEC / 10;
        adaptive.answered(false, climbing);
        let in_force = adaptive.rate(climbing);
        assert!((in_force - curve_after(rate / 0.85, 0.85, 0.1)).abs() < 1e-9);
        adaptive.answered(true, climbing);
        let cut = adaptive.rate(climbing);
        assert!((cut - 0.7 * in_force).abs() < 1e-9, "{cut} vs {in_force}");
    }

    #[test]
    fn a_throttle_past_k_with_the_rate_held_below_the_plateau_cuts_deep() {
        // Throttled at 1 s after a second at 100 a second: the plateau is 96.
        let adaptive = throttled_at_one_second();
        // Then an answer every 200 ms for 6 s, past `K` (4.16 s): the measured rate falls
        // to about 5 a second, and twice that holds the rate far below the plateau.
        let mut at = SEC;
        for _ in 0..30 {
            at += SEC / 5;
            adaptive.answered(false, at);
        }
        let in_force = adaptive.rate(at);
        let measured = f64::from_bits(adaptive.measured.load(Ordering::Relaxed));
        assert!(
            (in_force - 2.0 * measured).abs() < 1e-9,
            "{in_force} vs {measured}"
        );
        assert!(in_force < 20.0, "{in_force}");
        // The server's limit has dropped below that: the SDKs' deep cut, from the rate
        // achieved, not the probe's.
        adaptive.answered(true, at);
        let measured = f64::from_bits(adaptive.measured.load(Ordering::Relaxed));
        let rate = adaptive.rate(at);
        assert!((rate - 0.7 * measured.min(in_force)).abs() < 1e-9, "{rate}");
    }

    #[test]
    fn a_slot_taken_a_little_late_keeps_the_pace() {
        let adaptive = AdaptiveRate::new(SEC / 100);
        adaptive.answered(true, 0);
        // 70 a second: a slot every 14,285,715 ns.
        let interval = adaptive.interval_at(0);
        assert_eq!(interval, 14_285_715);
        assert_eq!(adaptive.try_take(1, 0), Ok(()));
        // Taken 1.5 ms after its slot, the next is charged from the slot: no time is lost.
        assert_eq!(adaptive.try_take(1, interval + 1_500_000), Ok(()));
        assert_eq!(adaptive.try_take(1, 2 * interval), Ok(()));
        assert_eq!(adaptive.try_take(1, 2 * interval), Err(3 * interval));
        // Taken 2 ms late it still is; later than that, it is charged from when it came.
        assert_eq!(adaptive.try_take(1, 3 * interval + 2_000_000), Ok(()));
        assert_eq!(adaptive.try_take(1, 4 * interval), Ok(()));
        assert_eq!(adaptive.try_take(1, 5 * interval + 2_000_001), Ok(()));
        assert_eq!(
            adaptive.try_take(1, 5 * interval + 2_000_001),
            Err(6 * interval + 2_000_001)
        );
        // A pause earns no credit.
        let later = 10 * SEC;
        assert_eq!(adaptive.try_take(1, later), Ok(()));
        assert_eq!(adaptive.try_take(1, later), Err(later + interval));
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
        let adaptive = throttled_at_one_second();
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
