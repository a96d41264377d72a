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

/// The scope of one call's clock reading; see the [module docs](self). Dropping the guard
/// the outermost layer holds ends the scope.
#[derive(Debug)]
#[must_use = "the reading is shared only while the guard is held"]
pub struct CallTime {
    outermost: bool,
    /// The scope belongs to this thread's call.
    _not_send: PhantomData<*const ()>,
}

impl CallTime {
    /// The instant the call in progress began: the reading of an enclosing layer's `call` on
    /// this thread, or the clock read now if there is none. Hold the guard until `call`
    /// returns.
    pub fn enter() -> (Instant, CallTime) {
        CALL_INSTANT.with(|instant| {
            let (now, outermost) = match instant.get() {
                Some(now) => (now, false),
                None => {
                    let now = Instant::now();
                    instant.set(Some(now));
                    (now, true)
                }
            };
            (
                now,
                CallTime {
                    outermost,
                    _not_send: PhantomData,
                },
            )
        })
    }
}

impl Drop for CallTime {
    fn drop(&mut self) {
        if self.outermost {
            CALL_INSTANT.with(|instant| instant.set(None));
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
        assert_eq!(outer, start);
        tokio::time::advance(Duration::from_millis(5)).await;
        let (inner, inner_guard) = CallTime::enter();
        assert_eq!(inner, start, "inside the outer call, its reading");
        drop(inner_guard);
        let (still, _) = CallTime::enter();
        assert_eq!(still, start, "an inner guard does not end the scope");
        drop(guard);
        let (later, _) = CallTime::enter();
        assert_eq!(later, start + Duration::from_millis(5));
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
