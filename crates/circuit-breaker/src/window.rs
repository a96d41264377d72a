//! Sliding windows of recent call outcomes, O(1) per call and lock-free.
//!
//! The count window is a ring of the last `n` outcomes with running totals: each call swaps
//! its outcome into the next slot and adjusts the totals by the difference from the outcome
//! it displaced, so the window truly slides one call at a time. The time window keeps one
//! bucket per slice of time; the first call of a new slice expires the slices that fell out
//! of the window (at most once per slice, so amortised O(1)).

use crate::sync::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use seawall_core::Divisor;
use tokio::time::Instant;

use crate::config::Window as WindowConfig;

/// What one call contributes to a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sample {
    pub(crate) failure: bool,
    pub(crate) slow: bool,
}

impl Sample {
    const RECORDED: u8 = 1;
    const FAILURE: u8 = 2;
    const SLOW: u8 = 4;

    fn bits(self) -> u8 {
        Self::RECORDED
            | if self.failure { Self::FAILURE } else { 0 }
            | if self.slow { Self::SLOW } else { 0 }
    }
}

/// The totals over the window after a call was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WindowTotals {
    /// Calls in the window.
    pub calls: u32,
    /// Failed calls in the window.
    pub failures: u32,
    /// Slow calls in the window (failed or not).
    pub slow: u32,
}

impl WindowTotals {
    /// The failure rate in percent, or `None` with no calls.
    pub fn failure_rate(&self) -> Option<f64> {
        percent(self.failures, self.calls)
    }

    /// The slow-call rate in percent, or `None` with no calls.
    pub fn slow_rate(&self) -> Option<f64> {
        percent(self.slow, self.calls)
    }
}

fn percent(part: u32, whole: u32) -> Option<f64> {
    (whole > 0).then(|| f64::from(part) * 100.0 / f64::from(whole))
}

#[derive(Debug)]
pub(crate) enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

impl Window {
    pub(crate) fn new(config: WindowConfig, origin: Instant) -> Self {
        match config {
            WindowConfig::Count(n) => Window::Count(CountWindow::new(n)),
            WindowConfig::Time { duration, buckets } => {
                Window::Time(TimeWindow::new(duration, buckets, origin))
            }
        }
    }

    /// Whether recording needs the current time.
    pub(crate) fn needs_time(&self) -> bool {
        matches!(self, Window::Time(_))
    }

    pub(crate) fn record(&self, sample: Sample, now: Option<Instant>) -> WindowTotals {
        match self {
            Window::Count(window) => {
                window.record(sample);
                window.totals()
            }
            Window::Time(window) => window.record(sample, now.unwrap_or_else(Instant::now)),
        }
    }

    /// Records a plain success; the hot path, which reads no totals it does not need.
    /// Returns whether the breaker must evaluate its rates: in a count window a success
    /// cannot raise a rate, so only the one that brings the calls since the last reset up to
    /// `minimum_calls` (making a trip possible for the first time) does; in a time window
    /// old calls expiring can raise a rate, so every one does.
    pub(crate) fn record_success(&self, now: Option<Instant>, minimum_calls: u32) -> bool {
        const SUCCESS: Sample = Sample {
            failure: false,
            slow: false,
        };
        match self {
            Window::Count(window) => window.record(SUCCESS) == u64::from(minimum_calls),
            Window::Time(window) => {
                window.record(SUCCESS, now.unwrap_or_else(Instant::now));
                true
            }
        }
    }

    pub(crate) fn totals(&self, now: Instant) -> WindowTotals {
        match self {
            Window::Count(window) => window.totals(),
            Window::Time(window) => {
                window.advance(window.epoch_of(now));
                window.totals()
            }
        }
    }

    pub(crate) fn reset(&self) {
        match self {
            Window::Count(window) => window.reset(),
            Window::Time(window) => window.reset(),
        }
    }

    /// Calls ever recorded, across resets.
    pub(crate) fn recorded(&self) -> u64 {
        match self {
            Window::Count(window) => window.recorded(),
            Window::Time(window) => window.recorded.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug)]
pub(crate) struct CountWindow {
    slots: Box<[AtomicU8]>,
    /// The window's size, as a divisor that finds a call's slot without a division.
    slot_of: Divisor,
    /// Calls ever recorded; the next call's slot is `next % len`.
    next: AtomicU64,
    /// `next` at the last reset: the window holds the calls since.
    base: AtomicU64,
    failures: AtomicU32,
    slow: AtomicU32,
}

impl CountWindow {
    fn new(size: u32) -> Self {
        let size = size.max(1);
        Self {
            slots: (0..size).map(|_| AtomicU8::new(0)).collect(),
            slot_of: Divisor::new(u64::from(size)),
            next: AtomicU64::new(0),
            base: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            slow: AtomicU32::new(0),
        }
    }

    /// Records one call and returns the calls since the last reset, which keeps counting
    /// once the window is full (the window's own count of calls is in its totals).
    fn record(&self, sample: Sample) -> u64 {
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        let bits = sample.bits();
        // The remainder is below the size, a u32, so it fits every usize this builds for.
        let slot = &self.slots[self.slot_of.remainder(index) as usize];
        // In the steady state the displaced outcome is the same as the new one; skipping the
        // write then saves an atomic read-modify-write on the hot path. A writer racing for
        // the same slot leaves its own outcome there, and the totals still match the slots,
        // since every change goes through the swap below.
        if slot.load(Ordering::Acquire) != bits {
            // Counted before it enters the slot, so that whoever swaps it out again (a later
            // call or a reset) takes away a count already made: the totals never go below
            // zero, where they would read as `u32::MAX`.
            raise(&self.failures, bits, Sample::FAILURE);
            raise(&self.slow, bits, Sample::SLOW);
            let old = slot.swap(bits, Ordering::AcqRel);
            lower(&self.failures, old, Sample::FAILURE);
            lower(&self.slow, old, Sample::SLOW);
        }
        (index + 1).saturating_sub(self.base.load(Ordering::Relaxed))
    }

    fn totals(&self) -> WindowTotals {
        let len = self.slots.len() as u64;
        let since_reset = self
            .next
            .load(Ordering::Relaxed)
            .saturating_sub(self.base.load(Ordering::Relaxed));
        let calls = u32::try_from(since_reset.min(len)).unwrap_or(u32::MAX);
        // Calls in flight through a reset can be counted on one side of it and their outcome
        // on the other; a rate never reads above 100 % for it.
        WindowTotals {
            calls,
            failures: self.failures.load(Ordering::Relaxed).min(calls),
            slow: self.slow.load(Ordering::Relaxed).min(calls),
        }
    }

    fn recorded(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }

    fn reset(&self) {
        for slot in self.slots.iter() {
            let old = slot.swap(0, Ordering::AcqRel);
            lower(&self.failures, old, Sample::FAILURE);
            lower(&self.slow, old, Sample::SLOW);
        }
        self.base
            .store(self.next.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

/// Counts `flag` of an outcome about to be swapped into a slot. The swap that stores the
/// outcome releases this count, so the swap that later takes the outcome out sees it.
fn raise(counter: &AtomicU32, new: u8, flag: u8) {
    if new & flag != 0 {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Takes away the count of `flag` of an outcome just swapped out of a slot. Each stored
/// value is swapped out exactly once, so at rest the totals equal the slots.
fn lower(counter: &AtomicU32, old: u8, flag: u8) {
    if old & flag != 0 {
        counter.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct Bucket {
    calls: AtomicU32,
    failures: AtomicU32,
    slow: AtomicU32,
}

#[derive(Debug)]
pub(crate) struct TimeWindow {
    buckets: Box<[Bucket]>,
    /// The number of buckets, as a divisor (see [`Divisor`]).
    bucket_of: Divisor,
    /// A bucket's length in nanoseconds, as a divisor.
    bucket_nanos: Divisor,
    origin: Instant,
    /// The newest slice that has been expired into; slices are numbered from `origin`.
    current: AtomicU64,
    /// Calls ever recorded.
    recorded: AtomicU64,
    calls: AtomicU32,
    failures: AtomicU32,
    slow: AtomicU32,
}

impl TimeWindow {
    fn new(duration: Duration, buckets: u32, origin: Instant) -> Self {
        let count = buckets.max(1);
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        Self {
            buckets: (0..count)
                .map(|_| Bucket {
                    calls: AtomicU32::new(0),
                    failures: AtomicU32::new(0),
                    slow: AtomicU32::new(0),
                })
                .collect(),
            bucket_of: Divisor::new(u64::from(count)),
            bucket_nanos: Divisor::new(nanos / u64::from(count)),
            origin,
            current: AtomicU64::new(0),
            recorded: AtomicU64::new(0),
            calls: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            slow: AtomicU32::new(0),
        }
    }

    fn epoch_of(&self, now: Instant) -> u64 {
        let nanos = now.saturating_duration_since(self.origin).as_nanos();
        self.bucket_nanos
            .quotient(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Expires the slices that left the window on the way to `epoch`. One caller wins the
    /// move; the others go on recording at once.
    fn advance(&self, epoch: u64) {
        let current = self.current.load(Ordering::Acquire);
        if epoch <= current
            || self
                .current
                .compare_exchange(current, epoch, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return;
        }
        let len = self.buckets.len() as u64;
        let first = current + 1;
        let first = first.max(epoch.saturating_sub(len - 1));
        for slice in first..=epoch {
            self.expire(&self.buckets[self.bucket_of.remainder(slice) as usize]);
        }
    }

    /// Empties `bucket` and takes what it held out of the totals. A call is counted in the
    /// totals before its bucket, and the bucket's add releases that count to this swap, so
    /// what is taken away was always added first: the totals never go below zero.
    fn expire(&self, bucket: &Bucket) {
        self.calls
            .fetch_sub(bucket.calls.swap(0, Ordering::AcqRel), Ordering::Relaxed);
        self.failures
            .fetch_sub(bucket.failures.swap(0, Ordering::AcqRel), Ordering::Relaxed);
        self.slow
            .fetch_sub(bucket.slow.swap(0, Ordering::AcqRel), Ordering::Relaxed);
    }

    fn record(&self, sample: Sample, now: Instant) -> WindowTotals {
        let epoch = self.epoch_of(now);
        self.advance(epoch);
        let bucket = &self.buckets[self.bucket_of.remainder(epoch) as usize];
        // The totals first, the bucket after (see `expire`).
        self.calls.fetch_add(1, Ordering::Relaxed);
        bucket.calls.fetch_add(1, Ordering::AcqRel);
        self.recorded.fetch_add(1, Ordering::Relaxed);
        if sample.failure {
            self.failures.fetch_add(1, Ordering::Relaxed);
            bucket.failures.fetch_add(1, Ordering::AcqRel);
        }
        if sample.slow {
            self.slow.fetch_add(1, Ordering::Relaxed);
            bucket.slow.fetch_add(1, Ordering::AcqRel);
        }
        self.totals()
    }

    fn totals(&self) -> WindowTotals {
        let calls = self.calls.load(Ordering::Relaxed);
        // The three are read one after another while calls come and go; a rate never reads
        // above 100 % for it.
        WindowTotals {
            calls,
            failures: self.failures.load(Ordering::Relaxed).min(calls),
            slow: self.slow.load(Ordering::Relaxed).min(calls),
        }
    }

    fn reset(&self) {
        for bucket in self.buckets.iter() {
            self.expire(bucket);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: Sample = Sample {
        failure: false,
        slow: false,
    };
    const FAIL: Sample = Sample {
        failure: true,
        slow: false,
    };

    #[test]
    fn count_window_slides_one_call_at_a_time() {
        let window = CountWindow::new(4);
        let expected_failures = [1, 2, 2, 2, 1, 0, 1];
        let samples = [FAIL, FAIL, OK, OK, OK, OK, FAIL];
        for (i, (sample, failures)) in samples.iter().zip(expected_failures).enumerate() {
            assert_eq!(window.record(*sample), i as u64 + 1);
            let totals = window.totals();
            assert_eq!(totals.calls, (i as u32 + 1).min(4), "after call {}", i + 1);
            assert_eq!(totals.failures, failures, "after call {}", i + 1);
        }
        window.reset();
        assert_eq!(window.totals(), WindowTotals::default());
    }

    const SLOW_FAIL: Sample = Sample {
        failure: true,
        slow: true,
    };

    /// Checks totals a breaker could act on: never more calls than were ever recorded, never
    /// more failures or slow calls than calls (a count that wrapped below zero reads as
    /// `u32::MAX` and would trip a healthy breaker).
    fn assert_sane(totals: WindowTotals, most_calls: u32, when: &str) {
        assert!(
            totals.calls <= most_calls
                && totals.failures <= totals.calls
                && totals.slow <= totals.calls,
            "{when}: {totals:?} (at most {most_calls} calls)"
        );
    }

    /// Runs `threads` closures, each given its index, released together by a barrier.
    fn race(threads: usize, work: impl Fn(usize) + Send + Sync + 'static) {
        let work = std::sync::Arc::new(work);
        let start = std::sync::Arc::new(std::sync::Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|index| {
                let (work, start) = (std::sync::Arc::clone(&work), std::sync::Arc::clone(&start));
                std::thread::spawn(move || {
                    start.wait();
                    work(index);
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
    }

    const RACE_CALLS: u32 = 200_000;

    #[test]
    fn time_window_totals_never_wrap_under_concurrent_record_advance_and_reset() {
        let origin = Instant::now();
        let bucket = Duration::from_millis(250);
        let window = std::sync::Arc::new(TimeWindow::new(bucket * 4, 4, origin));
        let shared = std::sync::Arc::clone(&window);
        let most_calls = 2 * RACE_CALLS;
        race(3, move |thread| {
            let window = &shared;
            for i in 0..RACE_CALLS {
                // Every 64 calls the recorders move to the next slice, expiring the oldest.
                let at = origin + bucket * (i / 64);
                match thread {
                    0 | 1 => {
                        let sample = [OK, FAIL, SLOW_FAIL][(i % 3) as usize];
                        assert_sane(window.record(sample, at), most_calls, "record");
                    }
                    _ => {
                        if i % 8 == 0 {
                            window.reset();
                        } else {
                            window.advance(window.epoch_of(at));
                        }
                        assert_sane(window.totals(), most_calls, "read");
                    }
                }
            }
        });
        // At rest the totals add up to the buckets, and a reset empties both.
        let sum = |field: fn(&Bucket) -> &AtomicU32| {
            window
                .buckets
                .iter()
                .map(|b| field(b).load(Ordering::Relaxed))
                .sum::<u32>()
        };
        let totals = window.totals();
        assert_eq!(
            (totals.calls, totals.failures, totals.slow),
            (sum(|b| &b.calls), sum(|b| &b.failures), sum(|b| &b.slow))
        );
        window.reset();
        assert_eq!(window.totals(), WindowTotals::default());
    }

    #[test]
    fn count_window_totals_never_wrap_under_concurrent_record_and_reset() {
        let window = std::sync::Arc::new(CountWindow::new(8));
        let shared = std::sync::Arc::clone(&window);
        race(3, move |thread| {
            let window = &shared;
            for i in 0..RACE_CALLS {
                match thread {
                    0 | 1 => {
                        window.record([OK, FAIL, SLOW_FAIL][(i % 3) as usize]);
                    }
                    _ => {
                        if i % 8 == 0 {
                            window.reset();
                        }
                    }
                }
                assert_sane(window.totals(), 8, "read");
            }
        });
        // At rest the totals add up to the slots, and a reset empties both.
        let flagged = |flag: u8| {
            window
                .slots
                .iter()
                .filter(|slot| slot.load(Ordering::Relaxed) & flag != 0)
                .count() as u32
        };
        let totals = window.totals();
        assert_eq!(
            (totals.failures, totals.slow),
            (flagged(Sample::FAILURE), flagged(Sample::SLOW))
        );
        window.reset();
        assert_eq!(window.totals(), WindowTotals::default());
    }

    #[tokio::test(start_paused = true)]
    async fn time_window_expires_old_slices() {
        let origin = Instant::now();
        let window = TimeWindow::new(Duration::from_secs(10), 10, origin);
        let at = |s: u64| origin + Duration::from_secs(s);
        window.record(FAIL, at(0));
        window.record(OK, at(5));
        assert_eq!(window.record(FAIL, at(9)).calls, 3);
        // At 10 s the slice of second 0 leaves the window.
        let totals = window.record(OK, at(10));
        assert_eq!((totals.calls, totals.failures), (3, 1));
        // A long silence empties it.
        let totals = window.record(OK, at(100));
        assert_eq!((totals.calls, totals.failures), (1, 0));
    }
}

/// Model checks with loom: a call recorded while a reset empties the window, each thread
/// reading the totals a breaker would act on.
#[cfg(all(test, seawall_loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    const FAIL: Sample = Sample {
        failure: true,
        slow: false,
    };

    fn assert_at_most_one_call(totals: WindowTotals) {
        assert!(
            totals.calls <= 1 && totals.failures <= 1 && totals.slow == 0,
            "one failed call recorded, but the totals read {totals:?}"
        );
    }

    #[test]
    fn loom_time_window_totals_never_wrap_when_a_reset_races_a_call() {
        loom::model(|| {
            let origin = Instant::now();
            let window = Arc::new(TimeWindow::new(Duration::from_secs(1), 1, origin));
            let recorder = {
                let window = Arc::clone(&window);
                thread::spawn(move || assert_at_most_one_call(window.record(FAIL, origin)))
            };
            window.reset();
            assert_at_most_one_call(window.totals());
            recorder.join().unwrap();
        });
    }

    #[test]
    fn loom_count_window_totals_never_wrap_when_a_reset_races_a_call() {
        loom::model(|| {
            let window = Arc::new(CountWindow::new(1));
            let recorder = {
                let window = Arc::clone(&window);
                thread::spawn(move || {
                    window.record(FAIL);
                    assert_at_most_one_call(window.totals());
                })
            };
            window.reset();
            assert_at_most_one_call(window.totals());
            recorder.join().unwrap();
        });
    }
}
