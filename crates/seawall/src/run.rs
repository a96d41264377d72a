//! The stack around any async operation: [`Stack::run`] and [`Stack::run_with`].

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::hash::Hash;

use seawall_circuit_breaker::CircuitOpen;
use seawall_core::admission::AdmissionScope;
use seawall_core::{Classify, ClassifyError, FailureKind, KeyExtractor, Outcome, classify_error};
use seawall_rate_limit::{RateStore, Rejected};
use seawall_retry::RetryError;

use crate::Stack;

/// Judges an operation's result by its error alone: a value is a success, an error the
/// failure its [`ClassifyError`] names (connect, timeout, transport ... or other).
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorClassifier;

impl<T, E: ClassifyError> Classify<T, E> for ErrorClassifier {
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(error) => Outcome::Failure(classify_error(error)),
        }
    }

    fn error_attempts(&self, error: &E) -> Option<u32> {
        error.attempts()
    }
}

/// Why one attempt of an operation run through the stack did not give a value.
#[derive(Debug)]
pub enum RunError<E> {
    /// The circuit breaker refused the attempt (or withdrew its admission while the attempt
    /// waited in the rate limiter); the operation was not called.
    CircuitOpen(CircuitOpen),
    /// The rate limiter refused the attempt; the operation was not called.
    RateLimited(Rejected),
    /// The operation failed.
    Failed(E),
}

impl<E> RunError<E> {
    /// The operation's own error, if it was called and failed.
    pub fn failed(&self) -> Option<&E> {
        match self {
            RunError::Failed(error) => Some(error),
            _ => None,
        }
    }
}

impl<E: fmt::Display> fmt::Display for RunError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::CircuitOpen(open) => open.fmt(f),
            RunError::RateLimited(rejected) => rejected.fmt(f),
            RunError::Failed(error) => error.fmt(f),
        }
    }
}

impl<E: Error + 'static> Error for RunError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            RunError::CircuitOpen(open) => Some(open),
            RunError::RateLimited(rejected) => Some(rejected),
            RunError::Failed(error) => Some(error),
        }
    }
}

impl<E: ClassifyError> ClassifyError for RunError<E> {
    fn failure_kind(&self) -> FailureKind {
        match self {
            RunError::CircuitOpen(_) | RunError::RateLimited(_) => FailureKind::Rejected,
            RunError::Failed(error) => error.failure_kind(),
        }
    }

    fn attempts(&self) -> Option<u32> {
        match self {
            RunError::CircuitOpen(_) | RunError::RateLimited(_) => None,
            RunError::Failed(error) => error.attempts(),
        }
    }
}

/// An attempt's value or error with the outcome the caller's classifier gave it, so that the
/// retry layer judges the attempt as the breaker did.
struct Judged<V> {
    value: V,
    outcome: Outcome,
}

fn judged<T, E>(result: &Result<Judged<T>, Judged<RunError<E>>>) -> Outcome {
    match result {
        Ok(judged) => judged.outcome,
        Err(judged) => judged.outcome,
    }
}

impl<K, St, C> Stack<K, St, C>
where
    K: KeyExtractor + Clone,
    K::Key: Clone + Eq + Hash + fmt::Debug + Send + Sync + 'static,
    St: RateStore,
    St::Future: Unpin,
{
    /// Runs `operation` (an SDK call, a database query: anything async) through the stack's
    /// retry layer, circuit breaker and rate limiter for `key`, each attempt costing `cost`
    /// tokens; results are judged by [`ErrorClassifier`]. See [`run_with`](Self::run_with).
    pub async fn run<T, E, F, Fut>(
        &self,
        key: &K::Key,
        cost: u32,
        operation: F,
    ) -> Result<T, RetryError<RunError<E>>>
    where
        E: ClassifyError,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.run_with(key, cost, &ErrorClassifier, operation).await
    }

    /// Runs `operation` through the stack in its standard order: the retry layer outside
    /// (its policy, backoff, deadline and budget), then `key`'s circuit breaker (an open one
    /// refuses the attempt without calling the operation), then `key`'s rate limiter (the
    /// attempt waits its turn in the same fair queue as the stack's requests, within
    /// `max_wait`). `classifier` judges each result for the breaker and the retry layer alike.
    ///
    /// `operation` is called once per attempt, before the attempt is admitted; its work
    /// belongs in the future it returns, which is polled only once admitted. Dropping the
    /// returned future cancels cleanly: a waiting attempt leaves the queue, and an admitted
    /// one counts as neither success nor failure (a half-open probe gives its permit back).
    pub async fn run_with<T, E, Cl, F, Fut>(
        &self,
        key: &K::Key,
        cost: u32,
        classifier: &Cl,
        mut operation: F,
    ) -> Result<T, RetryError<RunError<E>>>
    where
        Cl: Classify<T, E>,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let result = self
            .retry
            .run_with(&judged, || {
                let attempt = operation();
                self.attempt(key, cost, classifier, attempt)
            })
            .await;
        match result {
            Ok(judged) => Ok(judged.value),
            Err(error) => Err(error.map_inner(|judged| judged.value)),
        }
    }

    async fn attempt<T, E, Cl, Fut>(
        &self,
        key: &K::Key,
        cost: u32,
        classifier: &Cl,
        operation: Fut,
    ) -> Result<Judged<T>, Judged<RunError<E>>>
    where
        Cl: Classify<T, E>,
        Fut: Future<Output = Result<T, E>>,
    {
        let refused = |error| {
            Err(Judged {
                value: error,
                outcome: Outcome::Failure(FailureKind::Rejected),
            })
        };
        let mut guard = match self.circuit_breaker.guard(key) {
            Ok(guard) => guard,
            Err(open) => return refused(RunError::CircuitOpen(open)),
        };
        // An attempt that waits in the limiter is asked about again when its turn comes: if
        // the breaker opened meanwhile, it is refused then, without taking a token.
        let scope = AdmissionScope::open();
        let admission = self.rate_limit.default_limit().acquire(key, cost);
        if let Some(held) = scope.close() {
            guard.hold(held);
        }
        if let Err(rejected) = admission.await {
            if let Some(open) = guard.withdrawn() {
                return refused(RunError::CircuitOpen(open));
            }
            // The guard, dropped unfinished, records nothing against the upstream.
            return refused(RunError::RateLimited(rejected));
        }
        let result = operation.await;
        let outcome = classifier.classify(&result);
        guard.record_outcome(outcome);
        match result {
            Ok(value) => Ok(Judged { value, outcome }),
            Err(error) => Err(Judged {
                value: RunError::Failed(error),
                outcome,
            }),
        }
    }
}
