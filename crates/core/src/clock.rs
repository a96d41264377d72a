//! One reading of the clock per call through a stack of layers.
//!
//! Several layers need the time when a request is called: the retry layer for its budget and
//! deadline, the breaker and the rate limiter for their per-key state, the attempt timeout for
//! its deadline. Each reading costs a system call's worth of time on some machines, and all
//! of them would read (almost) the same instant, because a layer's `call` runs the `call` of
//! the layer below it before it returns. [`CallTime::scope`] lets them share one: the
//! outermost layer that asks reads the clock, and every layer whose `call` runs inside its
//! `call`, on the same thread, gets that same reading.
//!
//! The reading is tokio's clock, so layers keep working on paused time; a scope never
//! outlives the outermost `call`, so a later poll (a retry's next attempt, say) reads the
//! clock afresh.

use std::cell::Cell;
use std::time::Duration;

use tokio::time::Instant;

thread_local! {
    /// The instant of the call in progress on this thread, if a layer opened one.
    static CALL_INSTANT: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Shares one clock reading among the layers a call reaches; see the [module docs](self).
///
/// The reading is scoped to a closure, so that it can never be held across an `.await`. A
/// `call` that blocks the thread on other requests (an anti-pattern in async code) would hand
/// them its reading; a retry's later attempts take a [fresh](CallTime::fresh) one.
#[derive(Debug)]
pub struct CallTime {
    /// What the thread's scope was before this one: restored when this one ends, even by a
    /// panic.
    previous: Option<Instant>,
}

impl CallTime {
    /// Runs `call` with the instant of the call in progress on this thread: an enclosing
    /// scope's reading, or the clock read now if there is none (and shared, for as long as
    /// `call` runs, with the scopes it opens).
    pub fn scope<R>(call: impl FnOnce(Instant) -> R) -> R {
        match CALL_INSTANT.get() {
            Some(now) => call(now),
            None => Self::fresh(call),
        }
    }

    /// Runs `call` with a fresh reading of the clock, shared with the scopes it opens,
    /// whatever scope encloses it: for work that starts later than the call it runs in.
    pub fn fresh<R>(call: impl FnOnce(Instant) -> R) -> R {
        let now = Instant::now();
        let _restore = CallTime {
            previous: CALL_INSTANT.replace(Some(now)),
        };
        call(now)
    }
}

impl Drop for CallTime {
    fn drop(&mut self) {
        CALL_INSTANT.set(self.previous);
    }
}

/// `at + by`, or a century on when that is past what an `Instant` holds: a duration from a
/// user or a server never panics a layer.
pub fn later(at: Instant, by: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 86_400);
    at.checked_add(by)
        .or_else(|| at.checked_add(CENTURY))
        .unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn calls_inside_a_call_share_its_reading_and_a_later_call_reads_again() {
        let start = Instant::now();
        let seen = CallTime::scope(|outer| {
            let inner = CallTime::scope(|inner| inner);
            let after_inner = CallTime::scope(|again| again);
            (outer, inner, after_inner)
        });
        assert_eq!(seen, (start, start, start));
        tokio::time::advance(Duration::from_millis(5)).await;
        assert_eq!(CallTime::scope(|now| now), start + Duration::from_millis(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_fresh_reading_replaces_a_stale_one_inside_it_only() {
        tokio::time::advance(Duration::from_secs(5)).await;
        let now = Instant::now();
        let stale = now - Duration::from_secs(2);
        // A scope opened two seconds ago, as by a call that blocked its thread.
        let _outer = CallTime {
            previous: CALL_INSTANT.replace(Some(stale)),
        };
        assert_eq!(CallTime::scope(|reading| reading), stale);
        let inside = CallTime::fresh(|fresh| (fresh, CallTime::scope(|inner| inner)));
        assert_eq!(inside, (now, now), "scopes inside a fresh one share it");
        assert_eq!(
            CallTime::scope(|reading| reading),
            stale,
            "the enclosing one is back"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_call_ends_its_scope() {
        let result = std::panic::catch_unwind(|| {
            CallTime::scope(|_| panic!("a layer's call panics"));
        });
        assert!(result.is_err());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(CallTime::scope(|now| now), Instant::now());
    }
}
