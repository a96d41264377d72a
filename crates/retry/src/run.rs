//! Retries outside HTTP: [`RetryLayer::run`] retries any async operation (an SDK call, a
//! database query) with the layer's policy, budget and figures.

use std::future::Future;

use seawall_core::Classify;
use tokio::time::Instant;

use crate::error::RetryError;
use crate::layer::RetryLayer;
use crate::policy::{AttemptInfo, Decision};

impl<C> RetryLayer<C> {
    /// Runs `operation` (called once per attempt), judging each result with the layer's
    /// classifier; see [`run_with`](Self::run_with).
    pub async fn run<T, E, F, Fut>(&self, operation: F) -> Result<T, RetryError<E>>
    where
        C: Classify<T, E>,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.run_with(&self.shared.classifier, operation).await
    }

    /// Runs `operation` (called once per attempt) and retries it while `classifier` calls
    /// its result a failure of a kind the policy retries, with the layer's backoff, attempts,
    /// deadline and budget, as for a request. The operation is taken to be safe to repeat
    /// (running it here says so). The last result is returned: a value as it is (even one the
    /// classifier called a failure), an error wrapped with the attempts made and why the
    /// layer stopped. Dropping the future cancels the attempt in progress or the wait.
    ///
    /// ```
    /// use std::time::Duration;
    /// use seawall_core::{FailureKind, Outcome};
    /// use seawall_retry::RetryLayer;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let retry = RetryLayer::builder()
    ///     .max_attempts(3)
    ///     .jitter(seawall_retry::Jitter::None)
    ///     .build()?;
    /// let transient = |result: &Result<u32, &str>| match result {
    ///     Ok(_) => Outcome::Success,
    ///     Err(_) => Outcome::Failure(FailureKind::Transport),
    /// };
    /// let mut calls = 0;
    /// let answer = retry
    ///     .run_with(&transient, || {
    ///         calls += 1;
    ///         let result = if calls < 3 { Err("reset") } else { Ok(7) };
    ///         async move { result }
    ///     })
    ///     .await;
    /// assert_eq!((answer.ok(), calls), (Some(7), 3));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn run_with<T, E, K, F, Fut>(
        &self,
        classifier: &K,
        mut operation: F,
    ) -> Result<T, RetryError<E>>
    where
        K: Classify<T, E>,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let shared = &*self.shared;
        let started = Instant::now();
        shared.counters.request();
        if let Some(budget) = &shared.budget {
            budget.deposit(started);
        }
        let mut attempts = 1;
        let mut state = None;
        loop {
            let result = operation().await;
            let outcome = classifier.classify(&result);
            let (stop, hint) = if outcome.is_failure() {
                let now = Instant::now();
                let attempt = AttemptInfo {
                    attempts,
                    outcome,
                    may_resend: true,
                    replayable: true,
                    hint: None,
                    elapsed: now.saturating_duration_since(started),
                };
                let state = state.get_or_insert_with(|| shared.retry_state());
                match shared
                    .policy
                    .decide(&attempt, state, shared.budget.as_ref(), now)
                {
                    Decision::Done => (None, None),
                    Decision::Stop { reason, hint } => {
                        shared.stopped(reason);
                        (Some(reason), hint)
                    }
                    Decision::Retry { delay, reason } => {
                        if let Some(on_retry) = &shared.on_retry {
                            on_retry(attempts, delay, reason);
                        }
                        drop(result);
                        // Given back if this future is dropped during the wait, as a
                        // request's is.
                        let unsent = shared.budget.as_ref().map(|budget| budget.unsent(now));
                        tokio::time::sleep(delay).await;
                        if let Some(unsent) = unsent {
                            unsent.sent();
                        }
                        // Counted when made: a retry cancelled during its backoff was not.
                        shared.counters.retry(reason);
                        attempts += 1;
                        continue;
                    }
                }
            } else {
                (None, None)
            };
            return result.map_err(|error| {
                RetryError::new(
                    attempts,
                    stop.unwrap_or(crate::StopReason::NotRetryable),
                    hint,
                    error,
                )
            });
        }
    }
}

impl<E> RetryError<E> {
    /// The same report with the last attempt's error mapped by `map`.
    pub fn map_inner<F>(self, map: impl FnOnce(E) -> F) -> RetryError<F> {
        let (attempts, stop, hint) = (self.attempts(), self.stop_reason(), self.hint());
        RetryError::new(attempts, stop, hint, map(self.into_inner()))
    }
}
