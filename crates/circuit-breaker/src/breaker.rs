//! One breaker's state machine, lock-free.
//!
//! The state, the half-open permits left, the half-open successes and a generation number
//! share one atomic word, so taking a permit, counting a probe's success and every transition
//! are each a single compare-and-swap. A call remembers the generation it was admitted in;
//! an outcome that arrives after the breaker moved on is ignored, so a slow call from before
//! a trip cannot pollute the next closed period or a probe round.

use crate::sync::{AtomicU32, AtomicU64, Ordering};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::backoff::Jitter;
use crate::config::Config;
use crate::error::CircuitOpen;
use crate::event::{Reason, State, Transition};
use crate::window::{Sample, Window, WindowTotals};

mod gate;

const STATE_MASK: u64 = 0xFF;
const PERMITS_SHIFT: u32 = 8;
const SUCCESSES_SHIFT: u32 = 20;
const COUNT_MASK: u64 = 0xFFF;
const GENERATION_SHIFT: u32 = 32;
/// The phase word: `microseconds:52 | generation:12`, the generation's low bits beside its
/// phase instant, so that both are published by one compare-and-swap.
const PHASE_GENERATION_BITS: u32 = 12;
const PHASE_GENERATION_MASK: u64 = (1 << PHASE_GENERATION_BITS) - 1;
/// The largest instant the phase word holds (about 142 years after the breaker's creation);
/// it marks the word as holding no instant yet.
const PHASE_MICROS_NONE: u64 = u64::MAX >> PHASE_GENERATION_BITS;

/// The packed state word: `generation:32 | successes:12 | permits:12 | state:8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Word(u64);

impl Word {
    fn new(state: State, permits: u32, successes: u32, generation: u32) -> Self {
        Word(
            state.code()
                | (u64::from(permits) & COUNT_MASK) << PERMITS_SHIFT
                | (u64::from(successes) & COUNT_MASK) << SUCCESSES_SHIFT
                | u64::from(generation) << GENERATION_SHIFT,
        )
    }

    fn state(self) -> State {
        State::from_code(self.0 & STATE_MASK)
    }

    fn permits(self) -> u32 {
        ((self.0 >> PERMITS_SHIFT) & COUNT_MASK) as u32
    }

    fn successes(self) -> u32 {
        ((self.0 >> SUCCESSES_SHIFT) & COUNT_MASK) as u32
    }

    fn generation(self) -> u32 {
        (self.0 >> GENERATION_SHIFT) as u32
    }

    fn next(self, state: State, permits: u32) -> Self {
        Word::new(state, permits, 0, self.generation().wrapping_add(1))
    }
}

/// A call's ticket: the generation it was admitted in, whether it is a probe and whether the
/// breaker counts it, packed in one word as `tracked:1 | probe:1 | generation:32`.
///
/// One word, so that it is written and read whole: as three fields it was stored in pieces
/// and loaded as one word right after, which the processor cannot forward from its store
/// buffer (the stall was the costliest instruction of the closed path).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Admission(u64);

const ADMISSION_PROBE: u64 = 1 << 32;
const ADMISSION_TRACKED: u64 = 1 << 33;

impl Admission {
    #[inline]
    fn new(generation: u32, probe: bool, tracked: bool) -> Self {
        Self(
            u64::from(generation)
                | if probe { ADMISSION_PROBE } else { 0 }
                | if tracked { ADMISSION_TRACKED } else { 0 },
        )
    }

    /// The generation of the breaker's state the call was admitted in.
    #[inline]
    fn generation(self) -> u32 {
        self.0 as u32
    }

    /// Whether the call is a half-open probe.
    #[inline]
    fn probe(self) -> bool {
        self.0 & ADMISSION_PROBE != 0
    }

    /// Whether the breaker counts the call's outcome (not when disabled).
    #[inline]
    fn tracked(self) -> bool {
        self.0 & ADMISSION_TRACKED != 0
    }

    /// Whether the call is an ordinary counted call of the closed state (of the generation
    /// it was admitted in).
    #[inline]
    fn closed_tracked(self) -> bool {
        self.0 & (ADMISSION_PROBE | ADMISSION_TRACKED) == ADMISSION_TRACKED
    }
}

impl fmt::Debug for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admission")
            .field("generation", &self.generation())
            .field("probe", &self.probe())
            .field("tracked", &self.tracked())
            .finish()
    }
}

/// What a finished call tells the breaker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Verdict {
    Success {
        slow: bool,
    },
    Failure {
        slow: bool,
        open_for: Option<Duration>,
    },
    /// Says nothing about the upstream (cancelled, 429, refused by a layer below).
    Ignored,
    /// Refused by the breaker itself after it admitted the call, while a layer below held the
    /// call back: already counted as a refusal, otherwise as `Ignored`.
    Withdrawn,
}

/// Calls and transitions seen by one breaker, for the metrics layer. Successes of the
/// closed path are not counted here but derived from the window's lifetime count, so that a
/// successful call costs no counter update.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) failures: AtomicU64,
    /// Failures recorded into the window (part of its lifetime count).
    window_failures: AtomicU64,
    /// Successes outside the window: probes, and calls while disabled.
    other_successes: AtomicU64,
    pub(crate) slow: AtomicU64,
    pub(crate) ignored: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) transitions: AtomicU64,
    /// Transitions to open: counted with the transition, never on the closed path.
    pub(crate) trips: AtomicU64,
}

/// Counts summed over several breakers, for a keyed layer's aggregate figures: those of the
/// breakers that are gone (dropped for idleness or to stay within `max_keys`), and the
/// aggregate last reported.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    pub(crate) successes: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) slow: AtomicU64,
    pub(crate) ignored: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) transitions: AtomicU64,
    pub(crate) trips: AtomicU64,
}

pub(crate) struct Breaker<K> {
    key: K,
    config: Arc<Config>,
    word: AtomicU64,
    window: Window,
    consecutive: AtomicU32,
    /// Consecutive trips without closing, for open-duration growth.
    trips: AtomicU32,
    /// For `Open`, when it may probe; for `HalfOpen`, when probing began: microseconds since
    /// `origin` with the low bits of the generation they belong to (see `PHASE_*`).
    phase: AtomicU64,
    origin: Instant,
    jitter: Jitter,
    pub(crate) counters: Counters,
    /// Where this breaker's counts go when it is dropped, for a keyed layer.
    retired: Option<Arc<Totals>>,
}

impl<K> Drop for Breaker<K> {
    fn drop(&mut self) {
        let Some(retired) = &self.retired else {
            return;
        };
        let c = &self.counters;
        for (total, count) in [
            (&retired.successes, self.successes()),
            (&retired.failures, c.failures.load(Ordering::Relaxed)),
            (&retired.slow, c.slow.load(Ordering::Relaxed)),
            (&retired.ignored, c.ignored.load(Ordering::Relaxed)),
            (&retired.rejected, c.rejected.load(Ordering::Relaxed)),
            (&retired.transitions, c.transitions.load(Ordering::Relaxed)),
            (&retired.trips, c.trips.load(Ordering::Relaxed)),
        ] {
            if count > 0 {
                total.fetch_add(count, Ordering::Release);
            }
        }
    }
}

impl<K> Breaker<K> {
    /// Calls that succeeded, over the breaker's life.
    pub(crate) fn successes(&self) -> u64 {
        let c = &self.counters;
        (self.window.recorded())
            .saturating_sub(c.window_failures.load(Ordering::Relaxed))
            .saturating_add(c.other_successes.load(Ordering::Relaxed))
    }
}

impl<K: fmt::Debug> fmt::Debug for Breaker<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("key", &self.key)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl<K: fmt::Debug> Breaker<K> {
    pub(crate) fn new(key: K, config: Arc<Config>, seed: u64) -> Self {
        let origin = Instant::now();
        Self {
            window: Window::new(config.window, origin),
            key,
            config,
            word: AtomicU64::new(Word::new(State::Closed, 0, 0, 0).0),
            consecutive: AtomicU32::new(0),
            trips: AtomicU32::new(0),
            phase: AtomicU64::new(u64::MAX),
            origin,
            jitter: Jitter::new(seed),
            counters: Counters::default(),
            retired: None,
        }
    }

    /// Adds this breaker's counts to `retired` when it is dropped.
    pub(crate) fn retiring_into(mut self, retired: Arc<Totals>) -> Self {
        self.retired = Some(retired);
        self
    }

    pub(crate) fn key(&self) -> &K {
        &self.key
    }

    /// The state now. A half-open breaker whose probes have not decided within the max wait
    /// reopened at that deadline, whether or not a call has come since: reading the state
    /// makes that transition if nothing has yet.
    pub(crate) fn state(&self) -> State {
        self.current().state()
    }

    /// The state word, with a half-open phase past its max wait ended (see [`state`]).
    ///
    /// [`state`]: Self::state
    fn current(&self) -> Word {
        let word = Word(self.word.load(Ordering::Acquire));
        if word.state() == State::HalfOpen {
            self.settle(word, Instant::now())
        } else {
            word
        }
    }

    /// When the half-open phase of `generation` ends if its probes have not decided
    /// (nanoseconds since `origin`), if its start has been published.
    fn half_open_deadline(&self, generation: u32) -> Option<u64> {
        let max_wait = u64::try_from(self.config.half_open_max_wait.as_nanos()).unwrap_or(u64::MAX);
        self.phase(generation)
            .map(|since| since.saturating_add(max_wait))
    }

    /// When a half-open breaker whose phase ends at `deadline` next admits a call that is not
    /// a probe: once the max wait has reopened it and the open time that follows is over (at
    /// the latest: jitter only shortens it), unless the probes decide first.
    fn half_open_retry_at(&self, deadline: Option<u64>) -> Option<Instant> {
        deadline.and_then(|deadline| {
            let trip = self.trips.load(Ordering::Relaxed).saturating_add(1);
            self.instant(deadline)
                .checked_add(self.config.open.ceiling(trip))
        })
    }

    /// Ends the half-open phase of `word` if `now` is at or past its deadline: the breaker
    /// reopens as of the deadline (its open time counts from then), as if a timer had fired
    /// there. Only one caller makes the transition. Returns the state word after.
    fn settle(&self, word: Word, now: Instant) -> Word {
        if word.state() != State::HalfOpen {
            return word;
        }
        match self.half_open_deadline(word.generation()) {
            Some(deadline) if self.nanos(now) >= deadline => {
                self.trip(word, self.instant(deadline), Reason::HalfOpenTimedOut, None);
                Word(self.word.load(Ordering::Acquire))
            }
            _ => word,
        }
    }

    /// Whether outcomes need the time (slow calls or a time window).
    pub(crate) fn needs_time(&self) -> bool {
        self.config.slow_call.is_some() || self.window.needs_time()
    }

    pub(crate) fn slow_threshold(&self) -> Option<Duration> {
        self.config.slow_call.map(|(threshold, _)| threshold)
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn totals(&self) -> WindowTotals {
        self.window.totals(Instant::now())
    }

    /// Half-open probe permits not yet handed out (0 outside half-open).
    pub(crate) fn permits_left(&self) -> u32 {
        let word = self.current();
        if word.state() == State::HalfOpen {
            word.permits()
        } else {
            0
        }
    }

    fn nanos(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    fn instant(&self, nanos: u64) -> Instant {
        self.origin + Duration::from_nanos(nanos)
    }

    /// The phase instant of `generation` in nanoseconds since `origin`, if it has been
    /// published.
    ///
    /// Only the generation's low 12 bits are compared: an instant 4,096 generations old is
    /// taken for this one's only if this one has not been published yet and none of the
    /// 4,095 transitions between published anything.
    fn phase(&self, generation: u32) -> Option<u64> {
        let entry = self.phase.load(Ordering::Acquire);
        let micros = entry >> PHASE_GENERATION_BITS;
        (entry & PHASE_GENERATION_MASK == u64::from(generation) & PHASE_GENERATION_MASK
            && micros != PHASE_MICROS_NONE)
            .then(|| micros * 1_000)
    }

    /// Publishes the phase instant `at` (nanoseconds since `origin`, rounded up to the
    /// microsecond) of `generation`, which the caller has just moved the state word to.
    ///
    /// Publication is monotonic: a transition that came later may have published its own
    /// phase already, and this one must not overwrite it (that would leave the breaker open
    /// with no readable instant, refusing for good; the model test
    /// `loom_probes_racing_out_of_open_leave_the_newest_phase_readable` found it). So the
    /// word is swapped only from a value read before checking that `generation` is still
    /// the state word's: a newer publication in between makes the swap fail, and one read
    /// before the check means the state word has moved on, so this one gives up.
    fn publish_phase(&self, generation: u32, at: u64) {
        let micros = at.div_ceil(1_000).min(PHASE_MICROS_NONE - 1);
        let entry =
            micros << PHASE_GENERATION_BITS | (u64::from(generation) & PHASE_GENERATION_MASK);
        let mut current = self.phase.load(Ordering::Acquire);
        while Word(self.word.load(Ordering::Acquire)).generation() == generation {
            match self
                .phase
                .compare_exchange(current, entry, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(seen) => current = seen,
            }
        }
    }

    fn reject(&self, state: State, retry_at: Option<Instant>) -> CircuitOpen {
        self.counters.rejected.fetch_add(1, Ordering::Relaxed);
        CircuitOpen { state, retry_at }
    }

    /// Admits a call or refuses it.
    #[inline]
    pub(crate) fn try_acquire(&self) -> Result<Admission, CircuitOpen> {
        let word = Word(self.word.load(Ordering::Acquire));
        if matches!(word.state(), State::Closed | State::MetricsOnly) {
            return Ok(Admission::new(word.generation(), false, true));
        }
        self.try_acquire_otherwise(word)
    }

    /// [`try_acquire`](Self::try_acquire) in every state but closed and metrics-only, out of
    /// line so that the closed path stays small. Starts from the word `try_acquire` read, so
    /// that admitting costs no more atomic operations than before the split (each is a step
    /// the loom models explore).
    #[inline(never)]
    fn try_acquire_otherwise(&self, first: Word) -> Result<Admission, CircuitOpen> {
        let mut word = first;
        loop {
            let generation = word.generation();
            match word.state() {
                State::Closed | State::MetricsOnly => {
                    return Ok(Admission::new(generation, false, true));
                }
                State::Disabled => {
                    return Ok(Admission::new(generation, false, false));
                }
                State::ForcedOpen => return Err(self.reject(State::ForcedOpen, None)),
                State::Open => {
                    let Some(until) = self.phase(generation) else {
                        return Err(self.reject(State::Open, None));
                    };
                    let now = Instant::now();
                    if self.nanos(now) < until {
                        return Err(self.reject(State::Open, Some(self.instant(until))));
                    }
                    // The open time is over: this call becomes the first probe.
                    let permits = self.config.half_open_permits - 1;
                    let next = word.next(State::HalfOpen, permits);
                    if self.cas(word, next) {
                        self.publish_phase(next.generation(), self.nanos(now));
                        self.emit(State::Open, State::HalfOpen, Reason::OpenElapsed, None);
                        return Ok(Admission::new(next.generation(), true, true));
                    }
                }
                State::HalfOpen => {
                    let now = Instant::now();
                    let deadline = self.half_open_deadline(generation);
                    if deadline.is_some_and(|deadline| self.nanos(now) >= deadline) {
                        // The probes did not decide within the max wait: the breaker
                        // reopened at the deadline.
                        self.settle(word, now);
                    } else if word.permits() > 0 {
                        let next = Word(word.0 - (1 << PERMITS_SHIFT));
                        if self.cas(word, next) {
                            return Ok(Admission::new(generation, true, true));
                        }
                    } else {
                        // Unless the probes decide first, the breaker next admits once the
                        // max wait has reopened it and the open time that follows is over
                        // (at the latest: jitter only shortens it).
                        let retry_at = self.half_open_retry_at(deadline);
                        return Err(self.reject(State::HalfOpen, retry_at));
                    }
                }
            }
            // Another call changed the state first: look again.
            word = Word(self.word.load(Ordering::Acquire));
        }
    }

    /// Records a finished (or abandoned) call.
    #[inline]
    pub(crate) fn record(&self, admission: Admission, verdict: Verdict, now: Option<Instant>) {
        if verdict == (Verdict::Success { slow: false }) && admission.closed_tracked() {
            self.record_closed_success(admission.generation(), now);
        } else {
            self.record_other(admission, verdict, now);
        }
    }

    /// Everything but a plain closed-state success: out of line, so that the hot path does
    /// not save and restore the registers this needs.
    #[cold]
    #[inline(never)]
    fn record_other(&self, admission: Admission, verdict: Verdict, now: Option<Instant>) {
        let counters = &self.counters;
        match verdict {
            Verdict::Success { slow: true } | Verdict::Failure { slow: true, .. } => {
                counters.slow.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        match verdict {
            Verdict::Ignored => {
                counters.ignored.fetch_add(1, Ordering::Relaxed);
            }
            Verdict::Withdrawn => {}
            Verdict::Failure { .. } => {
                counters.failures.fetch_add(1, Ordering::Relaxed);
            }
            // Closed-path successes are counted by the window itself.
            Verdict::Success { .. } if !admission.tracked() || admission.probe() => {
                counters.other_successes.fetch_add(1, Ordering::Relaxed);
            }
            Verdict::Success { .. } => {}
        }
        match (admission.tracked(), admission.probe()) {
            (false, _) => {}
            (true, true) => self.record_probe(admission.generation(), verdict, now),
            (true, false) => self.record_closed(admission.generation(), verdict, now),
        }
    }

    /// The hot path: a closed-state call succeeded, not slowly. While the window holds no
    /// failure and no slow call no rate can trip, and the success is counted without a write
    /// to memory other threads share (see `CountWindow`). Otherwise, in a count window a
    /// success cannot raise a rate, so the rates are evaluated only when the calls since the
    /// last reset reach the minimum (when a rate trip first becomes possible); in a time
    /// window old successes expiring can raise the failure rate, so there it evaluates on
    /// every success.
    fn record_closed_success(&self, generation: u32, now: Option<Instant>) {
        let word = Word(self.word.load(Ordering::Acquire));
        if word.generation() != generation
            || !matches!(word.state(), State::Closed | State::MetricsOnly)
        {
            self.counters
                .other_successes
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.consecutive.load(Ordering::Relaxed) != 0 {
            self.consecutive.store(0, Ordering::Relaxed);
        }
        if let Some(totals) = self.window.record_success(now, self.config.minimum_calls)
            && word.state() == State::Closed
        {
            self.trip_if_over(word, now, totals);
        }
    }

    /// Trips the closed breaker if the window's `totals` call for it. Out of line: a count
    /// window gets here once per reset, a time window on the successes while it holds a
    /// failure or a slow call.
    #[inline(never)]
    fn trip_if_over(&self, word: Word, now: Option<Instant>, totals: WindowTotals) {
        if let Some(reason) = self.trip_reason(0, totals) {
            self.trip(word, now.unwrap_or_else(Instant::now), reason, None);
        }
    }

    fn record_closed(&self, generation: u32, verdict: Verdict, now: Option<Instant>) {
        let word = Word(self.word.load(Ordering::Acquire));
        if word.generation() != generation
            || !matches!(word.state(), State::Closed | State::MetricsOnly)
        {
            // A late outcome from before a transition: it says nothing about the present.
            if let Verdict::Success { .. } = verdict {
                self.counters
                    .other_successes
                    .fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        let (sample, consecutive, open_for) = match verdict {
            Verdict::Ignored | Verdict::Withdrawn => return,
            Verdict::Success { slow } => {
                if self.consecutive.load(Ordering::Relaxed) != 0 {
                    self.consecutive.store(0, Ordering::Relaxed);
                }
                (
                    Sample {
                        failure: false,
                        slow,
                    },
                    0,
                    None,
                )
            }
            Verdict::Failure { slow, open_for } => {
                self.counters
                    .window_failures
                    .fetch_add(1, Ordering::Relaxed);
                let consecutive = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
                (
                    Sample {
                        failure: true,
                        slow,
                    },
                    consecutive,
                    open_for,
                )
            }
        };
        let totals = self.window.record(sample, now);
        if word.state() == State::MetricsOnly {
            return;
        }
        if let Some(reason) = self.trip_reason(consecutive, totals) {
            self.trip(word, now.unwrap_or_else(Instant::now), reason, open_for);
        }
    }

    fn trip_reason(&self, consecutive: u32, totals: WindowTotals) -> Option<Reason> {
        let config = &self.config;
        if config
            .consecutive_failures
            .is_some_and(|threshold| consecutive >= threshold)
        {
            return Some(Reason::ConsecutiveFailures(consecutive));
        }
        if totals.calls < config.minimum_calls {
            return None;
        }
        if let (Some(threshold), Some(rate)) = (config.failure_rate, totals.failure_rate())
            && rate >= threshold
        {
            return Some(Reason::FailureRate(rate));
        }
        if let (Some((_, threshold)), Some(rate)) = (config.slow_call, totals.slow_rate())
            && rate >= threshold
        {
            return Some(Reason::SlowCallRate(rate));
        }
        None
    }

    fn record_probe(&self, generation: u32, verdict: Verdict, now: Option<Instant>) {
        let now = now.unwrap_or_else(Instant::now);
        loop {
            // A probe that answers after the max wait belongs to a round that has ended.
            let word = self.settle(Word(self.word.load(Ordering::Acquire)), now);
            if word.state() != State::HalfOpen || word.generation() != generation {
                return;
            }
            match verdict {
                Verdict::Ignored | Verdict::Withdrawn => {
                    // The probe proved nothing: its permit goes back.
                    if self.cas(word, Word(word.0 + (1 << PERMITS_SHIFT))) {
                        return;
                    }
                }
                // Slow only when the breaker counts slow calls: an upstream as slow as the
                // one the breaker may have opened on is not recovered.
                Verdict::Success { slow: true } => {
                    if self.trip(word, now, Reason::ProbeSlow, None) {
                        return;
                    }
                }
                Verdict::Success { slow: false } => {
                    let successes = word.successes() + 1;
                    if successes >= self.config.half_open_successes {
                        let next = word.next(State::Closed, 0);
                        if self.cas(word, next) {
                            self.clear();
                            self.emit(
                                State::HalfOpen,
                                State::Closed,
                                Reason::ProbesSucceeded,
                                None,
                            );
                            return;
                        }
                    } else if self.cas(word, Word(word.0 + (1 << SUCCESSES_SHIFT))) {
                        return;
                    }
                }
                Verdict::Failure { open_for, .. } => {
                    if self.trip(word, now, Reason::ProbeFailed, open_for) {
                        return;
                    }
                }
            }
        }
    }

    /// Moves from `word` to open. Returns whether this call made the transition.
    fn trip(&self, word: Word, now: Instant, reason: Reason, hinted: Option<Duration>) -> bool {
        let trip = self.trips.load(Ordering::Relaxed).saturating_add(1);
        let open_for = match hinted {
            Some(hint) if self.config.retry_after_sets_open => hint.min(self.config.open.max()),
            _ => self.config.open.duration(trip, self.jitter.unit()),
        };
        let next = word.next(State::Open, 0);
        if !self.cas(word, next) {
            return false;
        }
        self.trips.store(trip, Ordering::Relaxed);
        let open_nanos = u64::try_from(open_for.as_nanos()).unwrap_or(u64::MAX);
        self.publish_phase(
            next.generation(),
            self.nanos(now).saturating_add(open_nanos),
        );
        self.consecutive.store(0, Ordering::Relaxed);
        self.window.reset();
        self.emit(word.state(), State::Open, reason, Some(open_for));
        true
    }

    /// Sets the state through the handle. Closing clears the window and the trip count.
    pub(crate) fn force(&self, state: State) {
        loop {
            let word = Word(self.word.load(Ordering::Acquire));
            if word.state() == state && state != State::Open {
                // No transition, but a reset still means a fresh start.
                if state == State::Closed {
                    self.clear();
                }
                return;
            }
            if state == State::Open {
                if self.trip(word, Instant::now(), Reason::Manual, None) {
                    return;
                }
                continue;
            }
            let next = word.next(state, 0);
            if self.cas(word, next) {
                if state == State::Closed {
                    self.clear();
                }
                self.emit(word.state(), state, Reason::Manual, None);
                return;
            }
        }
    }

    /// Forgets the window, the failure streak and the trip count.
    fn clear(&self) {
        self.trips.store(0, Ordering::Relaxed);
        self.consecutive.store(0, Ordering::Relaxed);
        self.window.reset();
    }

    fn cas(&self, current: Word, next: Word) -> bool {
        self.word
            .compare_exchange(current.0, next.0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn emit(&self, from: State, to: State, reason: Reason, open_for: Option<Duration>) {
        self.counters.transitions.fetch_add(1, Ordering::Relaxed);
        if to == State::Open {
            self.counters.trips.fetch_add(1, Ordering::Relaxed);
        }
        tracing::info!(
            key = ?self.key,
            from = from.as_str(),
            to = to.as_str(),
            reason = ?reason,
            open_for_s = open_for.map(|d| d.as_secs_f64()),
            "circuit breaker transition"
        );
        let transition = Transition {
            key: &self.key,
            from,
            to,
            reason,
            open_for,
        };
        for listener in &self.config.listeners {
            listener(&transition);
        }
    }
}

#[cfg(seawall_loom)]
impl<K: fmt::Debug> Breaker<K> {
    /// Puts the breaker straight into half-open with its full permits, for the model tests.
    fn enter_half_open(&self) {
        let word = Word::new(State::HalfOpen, self.config.half_open_permits, 0, 1);
        self.word.store(word.0, Ordering::SeqCst);
        self.publish_phase(1, 0);
    }

    /// Puts the breaker straight into open, its open time already over, for the model tests.
    fn enter_open_elapsed(&self) {
        let word = Word::new(State::Open, 0, 0, 1);
        self.word.store(word.0, Ordering::SeqCst);
        self.publish_phase(1, 0);
    }
}

#[cfg(all(test, not(seawall_loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_breaker_adds_its_counts_to_the_retired_totals() {
        let retired = Arc::new(Totals::default());
        let breaker =
            Breaker::new("a", Arc::new(Config::default()), 1).retiring_into(Arc::clone(&retired));
        let failure = Verdict::Failure {
            slow: true,
            open_for: None,
        };
        for verdict in [
            Verdict::Success { slow: false },
            Verdict::Success { slow: false },
            failure,
            Verdict::Ignored,
        ] {
            let admission = breaker.try_acquire().expect("closed");
            breaker.record(admission, verdict, None);
        }
        breaker.force(State::ForcedOpen);
        assert!(breaker.try_acquire().is_err());
        drop(breaker);
        let read = |total: &AtomicU64| total.load(Ordering::Relaxed);
        assert_eq!(
            [
                read(&retired.successes),
                read(&retired.failures),
                read(&retired.slow),
                read(&retired.ignored),
                read(&retired.rejected),
                read(&retired.transitions),
                read(&retired.trips),
            ],
            [2, 1, 1, 1, 1, 1, 0]
        );
    }
}

/// Model checks with loom: every interleaving of 2–3 threads over the state word.
/// Run with `RUSTFLAGS="--cfg seawall_loom" cargo test -p seawall-circuit-breaker --lib --release loom`.
#[cfg(all(test, seawall_loom))]
mod loom_tests {
    use super::*;
    use loom::thread;

    /// A breaker for the models: `permits` probes, `successes` to close, a window of two.
    fn model_breaker(permits: u32, successes: u32) -> Arc<Breaker<()>> {
        let config = Config {
            half_open_permits: permits,
            half_open_successes: successes,
            window: crate::config::Window::Count(2),
            ..Config::default()
        };
        Arc::new(Breaker::new((), Arc::new(config), 1))
    }

    fn half_open(permits: u32, successes: u32) -> Arc<Breaker<()>> {
        let breaker = model_breaker(permits, successes);
        breaker.enter_half_open();
        breaker
    }

    fn open_elapsed(permits: u32, successes: u32) -> Arc<Breaker<()>> {
        let breaker = model_breaker(permits, successes);
        breaker.enter_open_elapsed();
        breaker
    }

    /// Explores the interleavings of `model` with at most three preemptions each: the
    /// failure path takes enough steps that an unbounded search does not finish.
    fn model_bounded(model: impl Fn() + Sync + Send + 'static) {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(model);
    }

    /// A closed breaker that trips only on the failure rate: `percent` of a count window of
    /// `size`, from `minimum` calls.
    fn rate_breaker(size: u32, minimum: u32, percent: f64) -> Arc<Breaker<()>> {
        let config = Config {
            consecutive_failures: None,
            failure_rate: Some(percent),
            window: crate::config::Window::Count(size),
            minimum_calls: minimum,
            ..Config::default()
        };
        Arc::new(Breaker::new((), Arc::new(config), 1))
    }

    fn call(breaker: &Breaker<()>, verdict: Verdict) {
        let admission = breaker.try_acquire().expect("closed");
        breaker.record(admission, verdict, None);
    }

    const FAILED: Verdict = Verdict::Failure {
        slow: false,
        open_for: None,
    };
    const SUCCEEDED: Verdict = Verdict::Success { slow: false };

    /// Each of `verdicts` recorded on a thread of its own (unless the breaker has opened by
    /// then), the threads joined.
    fn race(breaker: &Arc<Breaker<()>>, verdicts: &[Verdict]) {
        let threads: Vec<_> = verdicts
            .iter()
            .map(|&verdict| {
                let breaker = Arc::clone(breaker);
                thread::spawn(move || {
                    if let Ok(admission) = breaker.try_acquire() {
                        breaker.record(admission, verdict, None);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
    }

    /// A success on the clean window's path (counted in its thread's cell) races a failure
    /// on another thread. The successes recorded before both count in the failure's
    /// judgment whatever the interleaving, so the breaker never trips (25 % or 33 %, under
    /// 50 %); and once both are done, no success is lost or counted twice.
    #[test]
    fn loom_a_clean_window_success_racing_a_failure_is_never_lost() {
        model_bounded(|| {
            let breaker = rate_breaker(4, 2, 50.0);
            call(&breaker, SUCCEEDED);
            call(&breaker, SUCCEEDED);
            race(&breaker, &[SUCCEEDED, FAILED]);
            assert_eq!(breaker.state(), State::Closed);
            assert_eq!(
                breaker.window.totals(Instant::now()),
                WindowTotals {
                    calls: 4,
                    failures: 1,
                    slow: 0
                }
            );
            assert_eq!(breaker.window.recorded(), 4);
            assert_eq!(breaker.successes(), 3);
        });
    }

    /// Two failures race to fold the clean window's success: whichever is judged with it
    /// trips the breaker (1 of 2 calls failed, 50 %), exactly once.
    #[test]
    fn loom_failures_racing_to_fold_the_clean_window_trip_exactly_once() {
        model_bounded(|| {
            let breaker = rate_breaker(4, 2, 50.0);
            call(&breaker, SUCCEEDED);
            race(&breaker, &[FAILED, FAILED]);
            assert_eq!(breaker.state(), State::Open);
            assert_eq!(breaker.counters.trips.load(Ordering::SeqCst), 1);
            assert_eq!(breaker.counters.transitions.load(Ordering::SeqCst), 1);
            assert_eq!(breaker.successes(), 1);
        });
    }

    /// A success that slides the window's last failure out (the window turns clean) races a
    /// new failure (it turns dirty again): in every interleaving the window ends holding the
    /// new failure and the successes, and the successes that follow stay on the ring until
    /// that failure has slid out. (At most 2 of the 3 calls fail, under the 100 % rate.)
    #[test]
    fn loom_the_window_turning_clean_races_a_failure() {
        model_bounded(|| {
            let breaker = rate_breaker(3, 3, 100.0);
            call(&breaker, FAILED);
            call(&breaker, SUCCEEDED);
            race(&breaker, &[SUCCEEDED, FAILED]);
            let totals = |breaker: &Breaker<()>| breaker.window.totals(Instant::now());
            let (calls, failures) = (3, 1);
            assert_eq!(
                totals(&breaker),
                WindowTotals {
                    calls,
                    failures,
                    slow: 0
                }
            );
            for _ in 0..3 {
                call(&breaker, SUCCEEDED);
            }
            assert_eq!(
                totals(&breaker),
                WindowTotals {
                    calls,
                    failures: 0,
                    slow: 0
                }
            );
            assert_eq!(breaker.state(), State::Closed);
            assert_eq!(breaker.successes(), 5);
        });
    }

    /// Two probes race the open-to-half-open transition and both fail: the trip's phase (when
    /// the breaker may probe again) must stay readable, or the breaker refuses forever. The
    /// first probe's half-open phase, published late, must not overwrite the newer one.
    #[test]
    fn loom_probes_racing_out_of_open_leave_the_newest_phase_readable() {
        loom::model(|| {
            let breaker = open_elapsed(2, 2);
            let probes: Vec<_> = (0..2)
                .map(|_| {
                    let breaker = Arc::clone(&breaker);
                    thread::spawn(move || {
                        if let Ok(admission) = breaker.try_acquire() {
                            let failure = Verdict::Failure {
                                slow: false,
                                open_for: Some(Duration::from_secs(1)),
                            };
                            breaker.record(admission, failure, None);
                        }
                    })
                })
                .collect();
            for probe in probes {
                probe.join().unwrap();
            }
            let word = Word(breaker.word.load(Ordering::SeqCst));
            assert_eq!(word.state(), State::Open);
            let until = breaker
                .phase(word.generation())
                .map(|at| breaker.instant(at));
            assert!(
                until.is_some_and(|until| until >= breaker.origin + Duration::from_secs(1)),
                "generation {} open until {until:?}: the trip's phase was lost",
                word.generation()
            );
        });
    }

    /// Three callers race for two permits while one of them cancels its probe: permits are
    /// never over-granted, and held probes plus free permits always add up to two.
    #[test]
    fn loom_permits_are_conserved_under_cancellation() {
        loom::model(|| {
            let breaker = half_open(2, 2);
            let callers: Vec<_> = (0..3)
                .map(|caller| {
                    let breaker = Arc::clone(&breaker);
                    thread::spawn(move || match breaker.try_acquire() {
                        Ok(admission) if caller == 0 => {
                            // This caller's request is dropped: its permit goes back.
                            breaker.record(admission, Verdict::Ignored, None);
                            None
                        }
                        Ok(admission) => Some(admission),
                        Err(_) => None,
                    })
                })
                .collect();
            let held = callers
                .into_iter()
                .filter_map(|caller| caller.join().unwrap())
                .count() as u32;
            assert!(held <= 2);
            assert_eq!(held + breaker.permits_left(), 2);
            assert_eq!(breaker.state(), State::HalfOpen);
        });
    }

    /// Two probes succeed at once: the breaker closes exactly once.
    #[test]
    fn loom_concurrent_successes_close_exactly_once() {
        loom::model(|| {
            let breaker = half_open(2, 2);
            let probes: Vec<_> = (0..2)
                .map(|_| {
                    let breaker = Arc::clone(&breaker);
                    thread::spawn(move || {
                        let admission = breaker.try_acquire().expect("two permits for two probes");
                        breaker.record(admission, Verdict::Success { slow: false }, None);
                    })
                })
                .collect();
            for probe in probes {
                probe.join().unwrap();
            }
            assert_eq!(breaker.state(), State::Closed);
            assert_eq!(breaker.counters.transitions.load(Ordering::SeqCst), 1);
        });
    }

    /// A success and a failure race: exactly one transition wins, and the loser's outcome
    /// is dropped rather than applied to the next generation.
    #[test]
    fn loom_success_and_failure_race_to_one_transition() {
        loom::model(|| {
            let breaker = half_open(2, 1);
            let outcomes = [
                Verdict::Success { slow: false },
                Verdict::Failure {
                    slow: false,
                    open_for: Some(Duration::from_secs(1)),
                },
            ];
            let probes: Vec<_> = outcomes
                .into_iter()
                .map(|verdict| {
                    let breaker = Arc::clone(&breaker);
                    thread::spawn(move || {
                        if let Ok(admission) = breaker.try_acquire() {
                            breaker.record(admission, verdict, None);
                        }
                    })
                })
                .collect();
            for probe in probes {
                probe.join().unwrap();
            }
            assert!(matches!(breaker.state(), State::Closed | State::Open));
            assert_eq!(breaker.counters.transitions.load(Ordering::SeqCst), 1);
        });
    }
}
