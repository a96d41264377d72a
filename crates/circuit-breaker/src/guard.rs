//! Calls outside HTTP: [`CircuitBreakerLayer::guard`] lets the breaker judge any operation
//! (an SDK call, a database query) by its `Result`.

use std::fmt;
use std::time::Duration;

use seawall_core::admission::Readmission;
use seawall_core::{Classify, FailureKind, Held, KeyRef, Outcome};
use tokio::time::Instant;

use crate::breaker::{Admission, Breaker, Verdict};
use crate::error::CircuitOpen;
use crate::layer::CircuitBreakerLayer;
use seawall_core::KeyExtractor;

/// One operation the breaker admitted. Finish it with [`record`](Self::record) (its result
/// through a classifier) or [`record_outcome`](Self::record_outcome); dropped unfinished (the
/// operation was cancelled) it counts as ignored, and a half-open probe gives its permit back.
#[must_use = "a guard dropped at once records the operation as cancelled"]
pub struct BreakerGuard<K: fmt::Debug + Send + Sync + 'static> {
    breaker: Held<Breaker<K>>,
    admission: Admission,
    started: Option<Instant>,
    done: bool,
    held: Option<Readmission>,
}

impl<K: fmt::Debug + Send + Sync + 'static> fmt::Debug for BreakerGuard<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerGuard")
            .field("key", self.breaker.key())
            .field("admission", &self.admission)
            .finish_non_exhaustive()
    }
}

impl<C, X> CircuitBreakerLayer<C, X>
where
    X: KeyExtractor,
{
    /// Asks `key`'s breaker to admit an operation: a guard to record its result with, or the
    /// breaker's refusal (open, forced open, or half-open with no probe left). A breaker with
    /// a single key ignores `key`.
    ///
    /// ```
    /// use seawall_circuit_breaker::CircuitBreakerLayer;
    /// use seawall_core::{FailureKind, Outcome};
    ///
    /// let breaker = CircuitBreakerLayer::builder().consecutive_failures(2).build()?;
    /// let classify = |result: &Result<u32, &str>| match result {
    ///     Ok(_) => Outcome::Success,
    ///     Err(_) => Outcome::Failure(FailureKind::Other),
    /// };
    /// for _ in 0..2 {
    ///     let guard = breaker.guard(&())?;
    ///     let result: Result<u32, &str> = Err("down");
    ///     guard.record(&result, &classify);
    /// }
    /// assert!(breaker.guard(&()).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn guard(&self, key: &X::Key) -> Result<BreakerGuard<X::Key>, CircuitOpen> {
        let breaker = self.breakers.breaker(key);
        let admission = breaker.try_acquire()?;
        let started = breaker.needs_time().then(Instant::now);
        Ok(BreakerGuard::new(Held::new(breaker), admission, started))
    }
}

impl<K: fmt::Debug + Send + Sync + 'static> BreakerGuard<K> {
    /// A guard on an admission of `breaker`'s, timed from `started` if the breaker times
    /// calls.
    pub(crate) fn new(
        breaker: Held<Breaker<K>>,
        admission: Admission,
        started: Option<Instant>,
    ) -> Self {
        Self {
            breaker,
            admission,
            started,
            done: false,
            held: None,
        }
    }

    /// The breaker's settings.
    pub(crate) fn config(&self) -> &crate::config::Config {
        self.breaker.config()
    }

    /// The time now, read only if the breaker times calls, and whether the operation was
    /// slow: longer than the slow-call threshold, without the time it was held back below
    /// (which says nothing about the upstream): `waited` as its response says, or as the
    /// layer that held it recorded on its readmission, which an error carries no room for.
    pub(crate) fn timing(&self, waited: Duration) -> (Option<Instant>, bool) {
        let now = self.started.map(|_| Instant::now());
        let slow = match (self.started, now, self.breaker.slow_threshold()) {
            (Some(started), Some(now), Some(threshold)) => {
                let held = self
                    .held
                    .as_ref()
                    .map_or(Duration::ZERO, Readmission::waited);
                now.saturating_duration_since(started)
                    .saturating_sub(waited.max(held))
                    > threshold
            }
            _ => false,
        };
        (now, slow)
    }

    /// Records the operation's `verdict`, read at `now`: the guard is finished.
    pub(crate) fn finish(&mut self, verdict: Verdict, now: Option<Instant>) {
        self.done = true;
        self.breaker.record(self.admission, verdict, now);
    }

    /// Binds a readmission that a layer below (a rate limiter's queue) asked for while it
    /// holds the operation back: when the operation's turn comes, the breaker is asked again
    /// and, if it opened meanwhile, the operation is refused before it takes a token.
    pub fn hold(&mut self, held: Readmission) {
        held.bind(KeyRef::clone(&self.breaker), self.admission.ticket());
        self.held = Some(held);
    }

    /// The breaker's refusal, when a layer below asked again while holding the operation
    /// back and the breaker refused it: the operation is then recorded as withdrawn (it was
    /// counted as a refusal already), and the guard is finished.
    pub fn withdrawn(&mut self) -> Option<CircuitOpen> {
        let open = *self
            .held
            .as_ref()?
            .refusal()?
            .downcast_ref::<CircuitOpen>()?;
        self.done = true;
        self.breaker
            .record(self.admission, Verdict::Withdrawn, None);
        Some(open)
    }

    /// Records the operation's `result` as `classifier` judges it.
    pub fn record<T, E>(self, result: &Result<T, E>, classifier: &impl Classify<T, E>) {
        self.record_outcome(classifier.classify(result));
    }

    /// Records the operation's outcome. Throttling counts as a failure only if the breaker
    /// is configured so (`throttled_is_failure`); a refusal by another layer
    /// ([`FailureKind::Rejected`]) and [`Outcome::Ignored`] say nothing about the upstream.
    pub fn record_outcome(mut self, outcome: Outcome) {
        let (now, slow) = self.timing(Duration::ZERO);
        let verdict = match outcome {
            Outcome::Success => Verdict::Success { slow },
            Outcome::Ignored | Outcome::Failure(FailureKind::Rejected) => Verdict::Ignored,
            Outcome::Failure(FailureKind::Throttled)
                if !self.breaker.config().throttled_is_failure =>
            {
                Verdict::Ignored
            }
            Outcome::Failure(_) => Verdict::Failure {
                slow,
                open_for: None,
            },
        };
        self.finish(verdict, now);
    }
}

impl<K: fmt::Debug + Send + Sync + 'static> Drop for BreakerGuard<K> {
    fn drop(&mut self) {
        if !self.done {
            self.breaker.record(self.admission, Verdict::Ignored, None);
        }
    }
}
