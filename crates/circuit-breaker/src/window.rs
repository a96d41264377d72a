//! Sliding windows of recent call outcomes, O(1) per call and lock-free.
//!
//! The count window is a ring of the last `n` outcomes with running totals: each call swaps
//! its outcome into the next slot and adjusts the totals by the difference from the outcome
//! it displaced, so the window truly slides one call at a time. The time window keeps one
//! bucket per slice of time; the first call of a new slice expires the slices that fell out
//! of the window (at most once per slice, so amortised O(1)).

use crate::sync::{AtomicU8, AtomicU32, AtomicU64, Ordering, ThreadCounter};
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

/// A plain success: neither failed nor slow.
const SUCCESS: Sample = Sample {
    failure: false,
    slow: false,
};

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

    /// Records a plain success; the hot path. Returns the totals if the breaker must
    /// evaluate its rates: only a window holding a failure or a slow call can trip (the
    /// thresholds are above zero), and in a count window a success cannot raise a rate, so
    /// there only the success that brings the calls since the last reset up to
    /// `minimum_calls` (making a trip possible for the first time) does; in a time window
    /// old calls expiring can raise a rate, so there every success in a window holding a
    /// failure or a slow call does.
    #[inline]
    pub(crate) fn record_success(
        &self,
        now: Option<Instant>,
        minimum_calls: u32,
    ) -> Option<WindowTotals> {
        match self {
            Window::Count(window) => {
                let since_reset = window.record_success()?;
                (since_reset == u64::from(minimum_calls)).then(|| window.totals())
            }
            Window::Time(window) => {
                let totals = window.record(SUCCESS, now.unwrap_or_else(Instant::now));
                (totals.failures > 0 || totals.slow > 0).then_some(totals)
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

/// Failures and slow calls are counted in one word, `failures:32 | slow:32`.
const FAILURE_UNIT: u64 = 1 << 32;
const SLOW_UNIT: u64 = 1;
const SLOW_MASK: u64 = FAILURE_UNIT - 1;

/// What an outcome adds to the word of failures and slow calls.
fn flag_units(bits: u8) -> u64 {
    (if bits & Sample::FAILURE != 0 {
        FAILURE_UNIT
    } else {
        0
    }) + if bits & Sample::SLOW != 0 {
        SLOW_UNIT
    } else {
        0
    }
}

/// The last `n` calls.
///
/// While the window holds no failure and no slow call (it is *clean*), a plain success is
/// counted only in its thread's own cell of `quiet`: it reads the shared word of failures and
/// slow calls and writes nothing another thread reads or writes. Which slots the clean
/// window's successes took does not matter, since all of them are successes; what matters is
/// how many there were. So the first failure or slow call after them *folds* them into the
/// ring (advances it by their count, placing a success in each slot it passes) before it
/// takes its own slot, and the window then slides one call at a time as before, until the
/// last failure or slow call slides out and it is clean again.
///
/// A success that another thread is recording as the failure arrives (it saw the window
/// clean, and has not yet added to its cell) may be missed by that fold: it is folded in by
/// the next one (or discarded by a reset), so the rates that failure is judged by may count
/// at most one call fewer per other thread recording at that instant. Of two failures racing,
/// the one that takes the earlier index may also miss the successes the other is folding;
/// the one that takes the later index is judged on both failures and on every success
/// folded before (see the loom models). Nothing is lost from the lifetime count.
#[derive(Debug)]
pub(crate) struct CountWindow {
    slots: Box<[AtomicU8]>,
    /// The window's size, as a divisor that finds a call's slot without a division.
    slot_of: Divisor,
    /// Calls ever placed in the ring (the clean window's successes when they are folded);
    /// the next call's slot is `next % len`.
    next: AtomicU64,
    /// `next` at the last reset: the window holds the calls since.
    base: AtomicU64,
    /// The failed and the slow calls in the slots (`FAILURE_UNIT`, `SLOW_UNIT`); zero when
    /// the window is clean. One word, so a success reads both with one load.
    flagged: AtomicU64,
    /// Successes recorded while the window was clean, ever; each thread counts its own.
    /// Boxed: its table of threads is larger than the rest of the window.
    quiet: Box<ThreadCounter>,
    /// How many of `quiet` have been folded into `next` (or discarded by a reset).
    folded: AtomicU64,
}

impl CountWindow {
    fn new(size: u32) -> Self {
        let size = size.max(1);
        Self {
            slots: (0..size).map(|_| AtomicU8::new(0)).collect(),
            slot_of: Divisor::new(u64::from(size)),
            next: AtomicU64::new(0),
            base: AtomicU64::new(0),
            flagged: AtomicU64::new(0),
            quiet: Box::default(),
            folded: AtomicU64::new(0),
        }
    }

    /// Records a plain success. Returns the calls since the last reset if the window is not
    /// clean, `None` if it is (and the success was counted in the thread's own cell).
    #[inline]
    fn record_success(&self) -> Option<u64> {
        if self.flagged.load(Ordering::Relaxed) == 0 {
            self.quiet.add(1);
            return None;
        }
        Some(self.record(SUCCESS))
    }

    /// Records one call in the ring and returns the calls since the last reset, which keeps
    /// counting once the window is full (the window's own count of calls is in its totals).
    fn record(&self, sample: Sample) -> u64 {
        let bits = sample.bits();
        // Each call takes its index with release and acquire, so that the call that takes
        // the later index is judged on the outcome of the one before it (its failure is
        // counted before it takes its index) as well as on its own.
        let index = if bits == SUCCESS.bits() {
            let index = self.next.fetch_add(1, Ordering::AcqRel);
            self.place(index, bits);
            index
        } else {
            // Counted before anything else: from here on the window is not clean, so
            // successes come through the ring and the clean window's ones can be folded in
            // ahead of this call. Counted before it enters its slot, too, so that whoever
            // swaps it out again (a later call or a reset) takes away a count already made:
            // the totals never go below zero, where they would read as `u32::MAX`.
            self.flagged.fetch_add(flag_units(bits), Ordering::Relaxed);
            self.fold();
            let index = self.next.fetch_add(1, Ordering::AcqRel);
            self.swap_in(index, bits);
            index
        };
        (index + 1).saturating_sub(self.base.load(Ordering::Relaxed))
    }

    /// Puts the outcome `bits` in the slot of call `index`.
    fn place(&self, index: u64, bits: u8) {
        // The remainder is below the size, a u32, so it fits every usize this builds for.
        let slot = &self.slots[self.slot_of.remainder(index) as usize];
        // In the steady state the displaced outcome is the same as the new one; skipping the
        // write then saves an atomic read-modify-write. A writer racing for the same slot
        // leaves its own outcome there, and the totals still match the slots, since every
        // change goes through the swap below.
        if slot.load(Ordering::Acquire) != bits {
            let units = flag_units(bits);
            if units != 0 {
                self.flagged.fetch_add(units, Ordering::Relaxed);
            }
            self.swap_in(index, bits);
        }
    }

    /// Swaps `bits`, already counted, into the slot of call `index`, and takes away the
    /// count of the outcome it displaces. The swap that stores an outcome releases its count,
    /// so the swap that later takes it out sees it.
    fn swap_in(&self, index: u64, bits: u8) {
        let slot = &self.slots[self.slot_of.remainder(index) as usize];
        let units = flag_units(slot.swap(bits, Ordering::AcqRel));
        if units != 0 {
            self.flagged.fetch_sub(units, Ordering::Relaxed);
        }
    }

    /// Claims the quiet successes not yet folded: each is claimed by one caller only.
    /// Returns how many.
    fn claim_quiet(&self) -> u64 {
        let quiet = self.quiet.total();
        let folded = self.folded.fetch_max(quiet, Ordering::AcqRel);
        quiet.saturating_sub(folded)
    }

    /// Places the clean window's successes in the ring, ahead of the call that follows.
    fn fold(&self) {
        let count = self.claim_quiet();
        if count == 0 {
            return;
        }
        let start = self.next.fetch_add(count, Ordering::AcqRel);
        let end = start + count;
        // Only the last `len` of them are still in the window.
        let len = self.slots.len() as u64;
        for index in start.max(end.saturating_sub(len))..end {
            self.fill(index);
        }
    }

    /// Puts a folded success in the slot of call `index` unless the slot holds a failure or
    /// a slow call. A fold that falls behind (its thread preempted) reaches slots that later
    /// calls, with later indices, have written since: displacing their failures would erase
    /// them, just as an outage begins. A failure from an earlier lap is left as well, so it
    /// stays in the window one lap longer than it should: that errs towards tripping.
    fn fill(&self, index: u64) {
        let slot = &self.slots[self.slot_of.remainder(index) as usize];
        let success = SUCCESS.bits();
        let current = slot.load(Ordering::Acquire);
        if current != success && flag_units(current) == 0 {
            // Lost to a writer that got there first: its outcome is the newer one.
            let _ = slot.compare_exchange(current, success, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    fn totals(&self) -> WindowTotals {
        let len = self.slots.len() as u64;
        // The quiet successes not folded yet are in the window too (they are the newest
        // calls only if no failure came since, which would have folded them).
        let quiet = self
            .quiet
            .total()
            .saturating_sub(self.folded.load(Ordering::Acquire));
        let since_reset = self
            .next
            .load(Ordering::Relaxed)
            .saturating_sub(self.base.load(Ordering::Relaxed))
            .saturating_add(quiet);
        let calls = u32::try_from(since_reset.min(len)).unwrap_or(u32::MAX);
        let flagged = self.flagged.load(Ordering::Relaxed);
        // Calls in flight through a reset can be counted on one side of it and their outcome
        // on the other; a rate never reads above 100 % for it.
        WindowTotals {
            calls,
            failures: u32::try_from(flagged >> 32).unwrap_or(u32::MAX).min(calls),
            slow: u32::try_from(flagged & SLOW_MASK)
                .unwrap_or(u32::MAX)
                .min(calls),
        }
    }

    /// Calls ever recorded, across resets.
    fn recorded(&self) -> u64 {
        // In this order a fold in between is missed rather than counted twice.
        let next = self.next.load(Ordering::Relaxed);
        let folded = self.folded.load(Ordering::Acquire);
        next.saturating_add(self.quiet.total().saturating_sub(folded))
    }

    fn reset(&self) {
        // The quiet successes so far leave the window with the rest: they are counted as
        // placed, in no slot.
        let discarded = self.claim_quiet();
        self.next.fetch_add(discarded, Ordering::Relaxed);
        for slot in self.slots.iter() {
            let units = flag_units(slot.swap(0, Ordering::AcqRel));
            if units != 0 {
                self.flagged.fetch_sub(units, Ordering::Relaxed);
            }
        }
        self.base
            .store(self.next.load(Ordering::Relaxed), Ordering::Relaxed);
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

    /// While the window holds no failure and no slow call, successes go to their threads'
    /// cells and the ring stands still; the first failure folds them in ahead of itself, the
    /// successes that follow take the ring until it has slid out, and then the window is
    /// clean again. A slow success dirties it as a failure does; a reset discards the quiet
    /// successes from the window, not from the lifetime count.
    #[test]
    fn a_clean_count_window_counts_successes_per_thread_until_a_failure_folds_them_in() {
        let window = CountWindow::new(4);
        let totals = |calls, failures, slow| WindowTotals {
            calls,
            failures,
            slow,
        };
        for _ in 0..3 {
            assert_eq!(window.record_success(), None);
        }
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for _ in 0..2 {
                    assert_eq!(window.record_success(), None);
                }
            });
        });
        assert_eq!(
            window.next.load(Ordering::Relaxed),
            0,
            "the ring stood still"
        );
        assert_eq!(window.totals(), totals(4, 0, 0));
        assert_eq!(window.recorded(), 5);

        // The five successes are folded in first: the failure is the sixth call.
        assert_eq!(window.record(FAIL), 6);
        assert_eq!(window.totals(), totals(4, 1, 0));
        for since_reset in 7..=9 {
            assert_eq!(window.record_success(), Some(since_reset));
            assert_eq!(window.totals(), totals(4, 1, 0));
        }
        // The fourth success after it slides it out.
        assert_eq!(window.record_success(), Some(10));
        assert_eq!(window.totals(), totals(4, 0, 0));
        assert_eq!(window.record_success(), None);
        assert_eq!(window.next.load(Ordering::Relaxed), 10);
        assert_eq!(window.recorded(), 11);

        const SLOW_OK: Sample = Sample {
            failure: false,
            slow: true,
        };
        assert_eq!(window.record(SLOW_OK), 12);
        assert_eq!(window.totals(), totals(4, 0, 1));
        assert_eq!(window.record_success(), Some(13));

        assert_eq!(window.record_success(), Some(14));
        assert_eq!(window.record_success(), Some(15));
        assert_eq!(
            window.record_success(),
            Some(16),
            "slides the slow call out"
        );
        assert_eq!(window.record_success(), None);
        assert_eq!(window.totals(), totals(4, 0, 0));
        window.reset();
        assert_eq!(window.totals(), WindowTotals::default());
        assert_eq!(window.recorded(), 17);
        assert_eq!(
            window.record(FAIL),
            1,
            "the discarded successes are not folded"
        );
    }

    /// A fold of more successes than the window holds leaves exactly the window's size of
    /// them, and takes out the failures they slide past.
    #[test]
    fn a_fold_longer_than_the_window_slides_every_older_outcome_out() {
        let window = CountWindow::new(3);
        window.record(FAIL);
        window.record(OK);
        window.record(OK);
        window.record(OK);
        assert_eq!(window.totals().failures, 0);
        for _ in 0..5 {
            assert_eq!(window.record_success(), None);
        }
        // A failure already in a slot the fold reaches (as a call racing ahead of a fold
        // that fell behind leaves): the fold keeps it, and the call whose own slot it is
        // takes it out.
        window.flagged.fetch_add(FAILURE_UNIT, Ordering::Relaxed);
        window.slots[0].store(FAIL.bits(), Ordering::Relaxed);
        assert_eq!(window.record(FAIL), 10);
        assert_eq!(
            window.totals(),
            WindowTotals {
                calls: 3,
                failures: 1,
                slow: 0
            }
        );
    }

    /// A failure's fold of the clean window's successes falls behind (its thread preempted)
    /// while two later calls fail in the slots it has yet to fill: the fold must not erase
    /// their failures, which come just as an outage begins.
    #[test]
    fn a_fold_that_falls_behind_keeps_the_failures_of_later_calls() {
        let window = CountWindow::new(2);
        for _ in 0..4 {
            assert_eq!(window.record_success(), None);
        }
        // The first failure: counted, claims the four quiet successes and their indices...
        window.flagged.fetch_add(FAILURE_UNIT, Ordering::Relaxed);
        assert_eq!(window.claim_quiet(), 4);
        let start = window.next.fetch_add(4, Ordering::AcqRel);
        // ...and falls behind. Two later calls fail, in the slots of its last two indices.
        window.record(FAIL);
        window.record(FAIL);
        // It catches up: fills its indices, then takes its own.
        for index in start + 2..start + 4 {
            window.fill(index);
        }
        let own = window.next.fetch_add(1, Ordering::AcqRel);
        window.swap_in(own, FAIL.bits());
        // The window of two holds the last two calls: the second later failure and its own.
        assert_eq!(
            window.totals(),
            WindowTotals {
                calls: 2,
                failures: 2,
                slow: 0
            }
        );
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
