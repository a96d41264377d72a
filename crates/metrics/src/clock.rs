//! What times requests: the CPU's time-stamp counter by default, or tokio's clock.
//!
//! A request and its first attempt usually start in one `call` and end in one poll, so on the
//! counter they share readings: an attempt called inside its request's `call` starts at the
//! request's reading, and a request that completes in the poll where its last attempt ended
//! ends at that attempt's reading. That saves two of a request's four counter reads; the
//! readings shared are at most the synchronous work of the layers in between apart from the
//! ones they stand for: an attempt's latency takes in what the layers above it do in the
//! request's `call` before calling it, and a request's leaves out what they do in the poll
//! after its attempt answered. Every counter clock in the process counts from one origin, so
//! that any two layers' readings compare. tokio's clock shares nothing (it is for tests,
//! where each reading is what it is).

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::OnceLock;

use tokio::time::Instant;

/// The first counter reading in the process: every counter clock's origin.
static COUNTER_ORIGIN: OnceLock<u64> = OnceLock::new();

thread_local! {
    /// The start of the request whose `call` is running on this thread (on the counter).
    static CALL_START: Cell<Option<u64>> = const { Cell::new(None) };
    /// While a request's future is polled on this thread: `Some` of the end of the last
    /// attempt that ended inside that poll (`Some(None)` until one does).
    static POLL_END: Cell<Option<Option<u64>>> = const { Cell::new(None) };
}

/// What times the latency histograms and the requests-per-minute figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LatencyClock {
    /// The CPU's time-stamp counter, read through `quanta` and calibrated against the
    /// system's monotonic clock (which it falls back to where the counter is unreliable).
    /// Reading it costs about half a `clock_gettime`. A request reads it twice; an attempt
    /// called inside its request's `call` starts at the request's reading, and a request that
    /// completes in the poll where its last attempt ended ends at that attempt's reading.
    /// It keeps real time even while tokio's clock is paused.
    #[default]
    Tsc,
    /// tokio's clock, which follows `tokio::time::pause` and `advance`: for tests that time
    /// requests on the paused clock.
    Tokio,
}

/// A [`LatencyClock`] ready to read, as nanoseconds since its origin: the process's first
/// counter reading on the counter, the clock's making on tokio's clock.
#[derive(Debug)]
pub(crate) enum Clock {
    Tsc { clock: quanta::Clock, origin: u64 },
    Tokio { origin: Instant },
}

impl Clock {
    pub(crate) fn new(kind: LatencyClock) -> Self {
        match kind {
            LatencyClock::Tsc => {
                let clock = quanta::Clock::new();
                let origin = *COUNTER_ORIGIN.get_or_init(|| clock.raw());
                Self::Tsc { clock, origin }
            }
            LatencyClock::Tokio => Self::Tokio {
                origin: Instant::now(),
            },
        }
    }

    /// Nanoseconds since the clock's origin.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        match self {
            Self::Tsc { clock, origin } => clock.delta_as_nanos(*origin, clock.raw()),
            Self::Tokio { origin } => {
                let since = Instant::now().saturating_duration_since(*origin);
                u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
            }
        }
    }
}

impl Clock {
    fn is_counter(&self) -> bool {
        matches!(self, Self::Tsc { .. })
    }

    /// Lends `started`, a request's start, to the attempts called while the guard lives (the
    /// request's `call` of the layers below).
    #[inline]
    pub(crate) fn lend_start(&self, started: u64) -> LentStart {
        LentStart {
            previous: self.is_counter().then(|| CALL_START.replace(Some(started))),
            _not_send: PhantomData,
        }
    }

    /// An attempt's start: its request's, when the attempt is called inside the request's
    /// `call`; else now.
    #[inline]
    pub(crate) fn attempt_start(&self) -> u64 {
        match self.is_counter().then(|| CALL_START.get()).flatten() {
            Some(started) => started,
            None => self.now(),
        }
    }

    /// An attempt's end: now, offered to the request being polled, if any.
    #[inline]
    pub(crate) fn attempt_end(&self) -> u64 {
        let now = self.now();
        if self.is_counter() && POLL_END.get().is_some() {
            POLL_END.set(Some(Some(now)));
        }
        now
    }

    /// Listens, while the guard lives, for the end of an attempt that ends in this poll of a
    /// request's future.
    #[inline]
    pub(crate) fn listen_for_end(&self) -> EndListener {
        EndListener {
            previous: self.is_counter().then(|| POLL_END.replace(Some(None))),
            _not_send: PhantomData,
        }
    }
}

/// What [`Clock::lend_start`] returns: gives the thread's previous lent start back on drop.
/// Not `Send`: it lives in one `call`, never across an `.await`.
#[must_use = "the start is lent only while this lives"]
pub(crate) struct LentStart {
    /// `Some` of the thread's lent start before, if this lent one.
    previous: Option<Option<u64>>,
    _not_send: PhantomData<*const ()>,
}

impl Drop for LentStart {
    #[inline]
    fn drop(&mut self) {
        if let Some(previous) = self.previous {
            CALL_START.set(previous);
        }
    }
}

/// What [`Clock::listen_for_end`] returns: gives the thread's previous listener back on drop.
/// Not `Send`: it lives in one poll, never across an `.await`.
#[must_use = "an attempt's end is heard only while this lives"]
pub(crate) struct EndListener {
    /// `Some` of the thread's listener before, if this one listens.
    previous: Option<Option<Option<u64>>>,
    _not_send: PhantomData<*const ()>,
}

impl EndListener {
    /// The end of the last attempt that ended since the listener was made; else now.
    #[inline]
    pub(crate) fn end_or_now(&self, clock: &Clock) -> u64 {
        match self.previous.and(POLL_END.get().flatten()) {
            Some(end) => end,
            None => clock.now(),
        }
    }
}

impl Drop for EndListener {
    #[inline]
    fn drop(&mut self) {
        if let Some(previous) = self.previous {
            // A listener around this one (a request whose poll reached this request's) also
            // heard the end this one heard.
            let heard = POLL_END.get().flatten();
            POLL_END.set(match (previous, heard) {
                (Some(_), Some(end)) => Some(Some(end)),
                _ => previous,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Far from any reading the counter gives in a test run.
    const LENT: u64 = u64::MAX / 2;

    #[test]
    fn an_attempt_inside_a_requests_call_starts_at_the_requests_reading() {
        let clock = Clock::new(LatencyClock::Tsc);
        assert_ne!(clock.attempt_start(), LENT);
        {
            let _outer = clock.lend_start(LENT);
            assert_eq!(clock.attempt_start(), LENT);
            {
                let _inner = clock.lend_start(LENT + 1);
                assert_eq!(clock.attempt_start(), LENT + 1);
            }
            assert_eq!(
                clock.attempt_start(),
                LENT,
                "the outer request's start is back"
            );
        }
        assert_ne!(
            clock.attempt_start(),
            LENT,
            "nothing is lent after the call"
        );
    }

    #[test]
    fn a_request_polled_as_its_attempt_ends_ends_at_the_attempts_reading() {
        let clock = Clock::new(LatencyClock::Tsc);
        // Another layer's clock: readings compare because every counter clock shares an origin.
        let attempts = Clock::new(LatencyClock::Tsc);
        let listener = clock.listen_for_end();
        let ended = attempts.attempt_end();
        let later = clock.now();
        assert_eq!(listener.end_or_now(&clock), ended);
        assert!(ended <= later);
        drop(listener);
        // Outside a poll an attempt's end is lent to nobody, and a listener hears only what
        // ends after it was made.
        attempts.attempt_end();
        assert_eq!(POLL_END.get(), None);
        let listener = clock.listen_for_end();
        assert_eq!(POLL_END.get(), Some(None));
        drop(listener);
        assert_eq!(POLL_END.get(), None);
    }

    #[test]
    fn a_request_around_another_hears_the_end_the_inner_one_heard() {
        let clock = Clock::new(LatencyClock::Tsc);
        let outer = clock.listen_for_end();
        let ended = {
            let inner = clock.listen_for_end();
            let ended = clock.attempt_end();
            assert_eq!(inner.end_or_now(&clock), ended);
            ended
        };
        assert_eq!(outer.end_or_now(&clock), ended);
        drop(outer);
        assert_eq!(POLL_END.get(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn tokios_clock_shares_no_reading() {
        let clock = Clock::new(LatencyClock::Tokio);
        let lent = clock.lend_start(LENT);
        assert_eq!(clock.attempt_start(), 0);
        drop(lent);
        let listener = clock.listen_for_end();
        tokio::time::advance(std::time::Duration::from_millis(5)).await;
        assert_eq!(clock.attempt_end(), 5_000_000);
        assert_eq!(POLL_END.get(), None);
        tokio::time::advance(std::time::Duration::from_millis(1)).await;
        assert_eq!(listener.end_or_now(&clock), 6_000_000);
    }
}
