//! One reading of the clock per call through a stack of layers.
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
//! clock afresh.

use std::cell::Cell;
use std::marker::PhantomData;
use std::time::Duration;

use tokio::time::Instant;

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
