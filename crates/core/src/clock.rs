//! Where seawall's layers read the time, and one reading per call through a stack of layers.
//!
//! # Which clock
//!
//! [`Clock`] is tokio's clock by default, so that tests on paused time
//! (`tokio::time::pause`, `#[tokio::test(start_paused = true)]`) drive every layer. The rate
//! limiter and the retry budget can read the processor's time-stamp counter instead
//! ([`Clock::tsc`]), through the `quanta` crate: a cheaper reading, at the price of paused
//! time. See [`Clock`] for the trade-off.
//!
//! # One reading per call
//!
//! Several layers need the time when a request is called: the retry layer for its budget and
//! deadline, the breaker and the rate limiter for their per-key state, the attempt timeout for
//! its deadline. Each reading costs a system call's worth of time on some machines, and all
//! of them would read (almost) the same instant, because a layer's `call` runs the `call` of
//! the layer below it before it returns. [`CallTime::enter`] lets them share one: the
//! outermost layer that asks reads the clock, and every layer whose `call` runs inside its
//! `call`, on the same thread, gets that same reading.
//!
//! The reading is tokio's clock, so layers keep working on paused time; a scope never
//! outlives the outermost `call`, so a later poll (a retry's next attempt, say) reads the
//! clock afresh. A layer on the time-stamp counter neither opens nor reads a scope: its
//! readings are on another clock.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// Where a layer reads the time: tokio's clock (the default) or the processor's time-stamp
/// counter (TSC), read through the [`quanta`](https://docs.rs/quanta) crate.
///
/// The rate limiter's and the retry budget's builders take one (`.clock(Clock::tsc())`).
///
/// # The trade-off
///
/// - **What it saves.** A reading of tokio's clock is a `clock_gettime` call through the
///   vDSO, which orders the counter read; `quanta` reads the counter itself and scales it to
///   nanoseconds. In the benchmarks' `floor` group the tokio reading measured 23.2 ns and the
///   `quanta` one 9.5 ns on the same machine, in the same run; about 14 ns a request for a
///   layer that reads the clock once per call. Building a TSC clock calibrates the counter
///   once per process (usually 10 to 20 ms, at most 200 ms, on the first one built).
/// - **What it costs: paused time.** The counter does not follow tokio's paused clock:
///   `tokio::time::pause` and `advance` do not move it, so a layer on it sees real time in a
///   test on paused time. Tests on paused time must keep the default.
/// - **Timers still run on tokio's clock.** A layer on the counter that sleeps (a rate
///   limiter's waiting request) works out its deadline on the counter and hands tokio's timer
///   the same wait from tokio's own reading ([`timer_instant`](Clock::timer_instant)), so the
///   two clocks' slow drift apart (the counter's rate is calibrated once, against the
///   operating system's clock) never delays or hastens a wake-up by more than the wait's own
///   share of it.
/// - **Machines without an invariant TSC.** `quanta` uses the counter only on x86-64
///   processors that report a constant or invariant TSC; elsewhere (other architectures, or a
///   virtual machine that hides the flag) it falls back to the operating system's monotonic
///   clock, the one tokio reads: correct, and no cheaper. A constant but not invariant TSC
///   may stop in deep power states, and no counter counts while the machine is suspended: a
///   limiter then admits as if less time had passed than did.
/// - **Rate.** The counter's rate is calibrated once, against the operating system's clock;
///   the error is small (tens of parts per million have been reported), and a quota's pace
///   is off by as much, either way.
#[derive(Clone, Default)]
pub struct Clock {
    source: Source,
}

#[derive(Clone, Default)]
enum Source {
    #[default]
    Tokio,
    Counter(Counter),
}

/// The time-stamp counter, with one moment read on both clocks: a counter reading maps onto
/// tokio's timeline from there.
#[derive(Clone)]
struct Counter {
    clock: quanta::Clock,
    anchor: Instant,
    anchor_counter: quanta::Instant,
}

impl Counter {
    fn new(clock: quanta::Clock) -> Self {
        Self {
            anchor_counter: clock.now(),
            anchor: Instant::now(),
            clock,
        }
    }

    #[inline]
    fn now(&self) -> Instant {
        let elapsed = self
            .clock
            .now()
            .saturating_duration_since(self.anchor_counter);
        later(self.anchor, elapsed)
    }
}

impl Clock {
    /// tokio's clock, the default: it follows paused time.
    pub fn tokio() -> Self {
        Self::default()
    }

    /// The processor's time-stamp counter, through `quanta`; see the [trade-off](Clock).
    /// The first one built in a process calibrates the counter (usually 10 to 20 ms).
    pub fn tsc() -> Self {
        Self {
            source: Source::Counter(Counter::new(quanta::Clock::new())),
        }
    }

    /// Whether this is tokio's clock.
    pub fn is_tokio(&self) -> bool {
        matches!(self.source, Source::Tokio)
    }

    /// The time now, as an instant on tokio's timeline: tokio's reading, or the counter's
    /// mapped onto it from the moment this clock was built. Two readings of one clock compare
    /// and subtract as usual; for a timer, see [`timer_instant`](Self::timer_instant).
    #[inline]
    pub fn now(&self) -> Instant {
        match &self.source {
            Source::Tokio => Instant::now(),
            Source::Counter(counter) => counter.now(),
        }
    }

    /// The instant to give tokio's timer (`sleep_until`, `Sleep::reset`) for `at`, a
    /// deadline on this clock: `at` itself on tokio's clock; on the counter, tokio's reading
    /// now plus the time from this clock's reading now until `at` (a deadline already past
    /// stays as far past), so that the counter's drift from tokio's clock since this clock
    /// was built does not move the wake-up.
    pub fn timer_instant(&self, at: Instant) -> Instant {
        match &self.source {
            Source::Tokio => at,
            Source::Counter(counter) => carry_over(at, counter.now(), Instant::now()),
        }
    }
}

impl Clock {
    /// Points `timer` at `at`, a deadline on this clock ([`timer_instant`](Self::timer_instant)
    /// converts it), unless it points there already. On tokio's clock "already" is exact. On
    /// the counter each conversion reads two clocks, so the same deadline converts a little
    /// apart from one poll to the next, either way: a timer is moved to 50 µs after the
    /// converted deadline, and left as it is while it is due from the converted deadline to
    /// 100 µs after it (a tenth of tokio's timer's resolution), instead of being registered
    /// again at every poll. One due before the converted deadline is always moved: left, it
    /// would fire early, again and again.
    pub fn reset_timer(&self, timer: Pin<&mut Sleep>, at: Instant) {
        let at = self.timer_instant(at);
        let due = timer.deadline();
        match self.source {
            Source::Tokio if due != at => timer.reset(at),
            Source::Counter(_)
                if due
                    .checked_duration_since(at)
                    .is_none_or(|late| late > TIMER_SLACK) =>
            {
                timer.reset(later(at, TIMER_SLACK / 2));
            }
            _ => {}
        }
    }
}

/// How much later than asked a timer on the counter may stay due: below tokio's timer's own
/// resolution (a millisecond, to which it rounds deadlines up).
const TIMER_SLACK: Duration = Duration::from_micros(100);

/// `at`, a deadline on a clock that reads `now`, as a deadline on a clock that reads
/// `other_now` at the same moment: as far ahead of (or behind) `other_now` as `at` is of
/// `now`. Never panics: a result past what an `Instant` holds is clamped (see [`later`]).
fn carry_over(at: Instant, now: Instant, other_now: Instant) -> Instant {
    match at.checked_duration_since(now) {
        Some(ahead) => later(other_now, ahead),
        None => other_now
            .checked_sub(now.saturating_duration_since(at))
            .unwrap_or(other_now),
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.source {
            Source::Tokio => "Clock::tokio",
            Source::Counter(_) => "Clock::tsc",
        })
    }
}

thread_local! {
    /// The instant of the call in progress on this thread, if a layer opened one.
    static CALL_INSTANT: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Shares one clock reading among the layers a call reaches; see the [module docs](self).
///
/// Internal to seawall's layer crates: hidden from the docs, no stability promise.
///
/// Hold the guard [`enter`](CallTime::enter) returns until `call` returns, and no longer:
/// never across an `.await` (it is not `Send`, so a spawned task cannot hold it). A `call`
/// that blocks its thread on other requests (an anti-pattern in async code) would hand them
/// its reading; a retry's later attempts take a [fresh](CallTime::enter_fresh) one.
///
/// A guard rather than a closure: a layer's future returned through a closure's frame is
/// copied once more per layer, which measurably slowed a whole stack.
#[doc(hidden)]
#[derive(Debug)]
#[must_use = "the reading is shared only while the guard is held"]
pub struct CallTime {
    /// What the thread's scope was before this guard opened one, restored when it drops
    /// (even by a panic); `None` when it opened none.
    restore: Option<Option<Instant>>,
    _not_send: PhantomData<*const ()>,
}

impl CallTime {
    /// The instant of the call in progress on this thread: an enclosing layer's reading, or
    /// the clock read now if there is none (shared, while the guard is held, with the layers
    /// this call reaches).
    #[inline]
    pub fn enter() -> (Instant, CallTime) {
        match CALL_INSTANT.get() {
            Some(now) => (
                now,
                CallTime {
                    restore: None,
                    _not_send: PhantomData,
                },
            ),
            None => Self::enter_fresh(),
        }
    }

    /// A fresh reading of the clock, shared while the guard is held with the layers this
    /// call reaches, whatever scope encloses it: for work that starts later than the call it
    /// runs in.
    #[inline]
    pub fn enter_fresh() -> (Instant, CallTime) {
        let now = Instant::now();
        let previous = CALL_INSTANT.replace(Some(now));
        (
            now,
            CallTime {
                restore: Some(previous),
                _not_send: PhantomData,
            },
        )
    }
}

impl Drop for CallTime {
    fn drop(&mut self) {
        if let Some(previous) = self.restore {
            CALL_INSTANT.set(previous);
        }
    }
}

/// `at + by`, or a century on when that is past what an `Instant` holds: a duration from a
/// user or a server never panics a layer.
#[doc(hidden)]
pub fn later(at: Instant, by: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 86_400);
    at.checked_add(by)
        .or_else(|| at.checked_add(CENTURY))
        .unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A counter clock on `quanta`'s mock source, which moves only when told to.
    fn mock_counter() -> (Clock, std::sync::Arc<quanta::Mock>) {
        let (clock, mock) = quanta::Clock::mock();
        let clock = Clock {
            source: Source::Counter(Counter::new(clock)),
        };
        (clock, mock)
    }

    #[test]
    fn a_deadline_carries_over_as_the_same_wait_from_the_other_clocks_reading() {
        let now = Instant::now();
        let other = now + Duration::from_secs(3_600);
        let ahead = Duration::from_millis(250);
        assert_eq!(carry_over(now + ahead, now, other), other + ahead);
        assert_eq!(carry_over(now, now, other), other);
        // A deadline already past stays as far past.
        let past = now + Duration::from_secs(1);
        let reading = past + Duration::from_millis(40);
        assert_eq!(
            carry_over(past, reading, other),
            other - Duration::from_millis(40)
        );
        // Past what an `Instant` holds: clamped, never a panic.
        let far = later(now, Duration::MAX);
        assert_eq!(carry_over(far, now, other), later(other, far - now));
    }

    #[tokio::test(start_paused = true)]
    async fn the_counter_clock_moves_with_the_counter_not_with_paused_time() {
        let start = Instant::now();
        let (clock, counter) = mock_counter();
        assert!(!clock.is_tokio());
        assert_eq!(clock.now(), start);
        // Paused time moves on; the counter does not.
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(clock.now(), start);
        counter.increment(Duration::from_millis(1_500));
        assert_eq!(clock.now(), start + Duration::from_millis(1_500));
    }

    #[tokio::test(start_paused = true)]
    async fn a_counter_deadline_becomes_the_same_wait_on_tokios_timer() {
        let (clock, counter) = mock_counter();
        counter.increment(Duration::from_secs(10));
        // The two clocks have drifted apart by 7 s: tokio's timer must still be handed
        // the wait the counter clock asked for, 300 ms from now.
        tokio::time::advance(Duration::from_secs(3)).await;
        let deadline = clock.now() + Duration::from_millis(300);
        assert_eq!(
            clock.timer_instant(deadline),
            Instant::now() + Duration::from_millis(300)
        );
        // A deadline the counter has passed is due on tokio's timer too.
        let passed = clock.now() - Duration::from_millis(5);
        assert!(clock.timer_instant(passed) <= Instant::now());
    }

    #[tokio::test(start_paused = true)]
    async fn a_counter_timer_is_moved_only_when_it_would_fire_early_or_well_late() {
        let micros = Duration::from_micros;
        let (clock, counter) = mock_counter();
        let deadline = clock.now() + Duration::from_millis(300);
        let mut timer = std::pin::pin!(tokio::time::sleep_until(clock.timer_instant(deadline)));
        let first = timer.deadline();
        // The counter runs 50 µs ahead of tokio's clock: the same deadline converts 50 µs
        // earlier, and the timer, 50 µs late for it, is kept.
        counter.increment(micros(50));
        clock.reset_timer(timer.as_mut(), deadline);
        assert_eq!(timer.deadline(), first);
        // 200 µs ahead: moved, to 50 µs after the converted deadline.
        counter.increment(micros(150));
        clock.reset_timer(timer.as_mut(), deadline);
        assert_eq!(timer.deadline(), first - micros(150));
        // From there the conversion may move 50 µs either way and the timer stays.
        counter.increment(micros(50));
        clock.reset_timer(timer.as_mut(), deadline);
        tokio::time::advance(micros(100)).await;
        clock.reset_timer(timer.as_mut(), deadline);
        assert_eq!(timer.deadline(), first - micros(150));
        // Tokio's clock moves another 100 µs on its own: the deadline converts 100 µs after
        // the timer, which would fire early, and is moved to 50 µs after the conversion.
        tokio::time::advance(micros(100)).await;
        clock.reset_timer(timer.as_mut(), deadline);
        assert_eq!(timer.deadline(), first);
    }

    #[tokio::test(start_paused = true)]
    async fn tokios_clock_moves_a_timer_to_any_other_deadline() {
        let clock = Clock::default();
        let deadline = Instant::now() + Duration::from_millis(300);
        let mut timer = std::pin::pin!(tokio::time::sleep_until(deadline));
        clock.reset_timer(timer.as_mut(), deadline);
        assert_eq!(timer.deadline(), deadline);
        let later = deadline + Duration::from_nanos(1);
        clock.reset_timer(timer.as_mut(), later);
        assert_eq!(timer.deadline(), later);
    }

    #[tokio::test(start_paused = true)]
    async fn tokios_clock_is_the_default_and_its_deadlines_go_to_the_timer_as_they_are() {
        let clock = Clock::default();
        assert!(clock.is_tokio());
        assert_eq!(format!("{clock:?}"), "Clock::tokio");
        let start = Instant::now();
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(clock.now(), start + Duration::from_secs(2));
        let deadline = start + Duration::from_secs(5);
        assert_eq!(clock.timer_instant(deadline), deadline);
    }

    #[test]
    fn a_tsc_clock_starts_on_tokios_timeline_and_never_goes_back() {
        let before = Instant::now();
        let clock = Clock::tsc();
        assert_eq!(format!("{clock:?}"), "Clock::tsc");
        let first = clock.now();
        let second = clock.now();
        assert!(before <= first && first <= second);
    }

    #[tokio::test(start_paused = true)]
    async fn calls_inside_a_call_share_its_reading_and_a_later_call_reads_again() {
        let start = Instant::now();
        let (outer, guard) = CallTime::enter();
        tokio::time::advance(Duration::from_millis(5)).await;
        let (inner, inner_guard) = CallTime::enter();
        drop(inner_guard);
        let (after_inner, _) = CallTime::enter();
        assert_eq!((outer, inner, after_inner), (start, start, start));
        drop(guard);
        let (later, _) = CallTime::enter();
        assert_eq!(later, start + Duration::from_millis(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_fresh_reading_replaces_a_stale_one_while_it_is_held() {
        let start = Instant::now();
        let (stale, outer) = CallTime::enter();
        // The outer scope stays open while the clock moves on, as in a call that blocked.
        tokio::time::advance(Duration::from_secs(2)).await;
        let (fresh, fresh_guard) = CallTime::enter_fresh();
        let (inner, _) = CallTime::enter();
        assert_eq!(
            (stale, fresh, inner),
            (start, start + Duration::from_secs(2), fresh)
        );
        drop(fresh_guard);
        let (back, _) = CallTime::enter();
        assert_eq!(back, stale, "the enclosing reading is back");
        drop(outer);
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_call_ends_its_scope() {
        let result = std::panic::catch_unwind(|| {
            let (_, _guard) = CallTime::enter();
            panic!("a layer's call panics");
        });
        assert!(result.is_err());
        tokio::time::advance(Duration::from_millis(1)).await;
        let (now, _guard) = CallTime::enter();
        assert_eq!(now, Instant::now());
    }
}
