//! [`RetryLayer`] and its builder.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use seawall_core::{
    Clock, ConfigError, FailureKind, HintPolicy, HttpClassifier, Idempotency, check_range,
};
use tower::Layer;

use crate::backoff::{Backoff, Growth, Jitter};
use crate::budget::{BudgetConfig, RetryBudget};
use crate::policy::{RetryOn, RetryPolicy};
use crate::service::{OnRetry, Retry, Shared};
use crate::stats::RetryHandle;

/// The overall deadline a [`RetryBuilder`] starts with (see [`RetryBuilder::deadline`]).
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

/// Retries failed requests through the service it wraps. Clones of the layer, and every
/// service it builds (and their clones), share one budget and one set of figures.
pub struct RetryLayer<C = HttpClassifier> {
    pub(crate) shared: Arc<Shared<C>>,
}

impl<C> Clone for RetryLayer<C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<C> std::fmt::Debug for RetryLayer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryLayer")
            .field("policy", &self.shared.policy)
            .finish_non_exhaustive()
    }
}

impl RetryLayer {
    /// Starts a configuration with the defaults: 3 attempts, exponential backoff from 1 s
    /// capped at 60 s with full jitter, an overall [deadline](RetryBuilder::deadline) of
    /// 30 s, a budget of 20 % of the last 10 s of requests plus 10
    /// retries per second, idempotent requests only, server hints obeyed, and request bodies
    /// replayed up to 64 KiB.
    pub fn builder() -> RetryBuilder {
        RetryBuilder {
            max_attempts: 3,
            growth: Growth::Exponential,
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
            jitter: Jitter::Full,
            factor: 2.0,
            deadline: Some(DEFAULT_DEADLINE),
            budget: Some((Duration::from_secs(10), 10, 20.0)),
            budget_clock: Clock::default(),
            retry_on: RetryOn::DEFAULT,
            idempotency: Idempotency::Standard,
            hints: Some(HintPolicy::default()),
            max_replay_bytes: 64 * 1024,
            seed: None,
            on_retry: None,
            classifier: HttpClassifier,
        }
    }
}

impl<C> RetryLayer<C> {
    /// A handle on the layer's figures and budget.
    pub fn handle(&self) -> RetryHandle<C> {
        RetryHandle::new(Arc::clone(&self.shared))
    }

    /// The validated policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.shared.policy
    }
}

impl<S: Clone, C> Layer<S> for RetryLayer<C> {
    type Service = Retry<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::new(inner, Arc::clone(&self.shared))
    }
}

/// Configures a [`RetryLayer`]; [`build`](Self::build) validates every field.
pub struct RetryBuilder<C = HttpClassifier> {
    max_attempts: u32,
    growth: Growth,
    base: Duration,
    cap: Duration,
    jitter: Jitter,
    factor: f64,
    deadline: Option<Duration>,
    budget: Option<(Duration, u32, f64)>,
    budget_clock: Clock,
    retry_on: RetryOn,
    idempotency: Idempotency,
    hints: Option<HintPolicy>,
    max_replay_bytes: usize,
    seed: Option<u64>,
    on_retry: Option<OnRetry>,
    classifier: C,
}

impl<C> std::fmt::Debug for RetryBuilder<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryBuilder")
            .field("max_attempts", &self.max_attempts)
            .field("base", &self.base)
            .field("cap", &self.cap)
            .finish_non_exhaustive()
    }
}

impl<C> RetryBuilder<C> {
    /// Attempts per request, the first included: 1 (never retry) to 100. Default 3.
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// Exponential backoff: `base`, `2 × base`, `4 × base`, ... never above `cap` (the
    /// factor 2 can be changed with [`backoff_factor`](Self::backoff_factor)).
    pub fn exponential_backoff(self, base: Duration, cap: Duration) -> Self {
        self.curve(Growth::Exponential, base, cap)
    }

    /// The growth factor of exponential backoff: `base`, `factor × base`,
    /// `factor² × base`, ... never above the cap. A finite number above 1; default 2.
    /// Linear and fixed backoffs do not use it.
    pub fn backoff_factor(mut self, factor: f64) -> Self {
        self.factor = factor;
        self
    }

    /// Linear backoff: `base`, `2 × base`, `3 × base`, ... never above `cap`.
    pub fn linear_backoff(self, base: Duration, cap: Duration) -> Self {
        self.curve(Growth::Linear, base, cap)
    }

    /// The same delay before every retry.
    pub fn fixed_backoff(self, delay: Duration) -> Self {
        self.curve(Growth::Fixed, delay, delay)
    }

    fn curve(mut self, growth: Growth, base: Duration, cap: Duration) -> Self {
        self.growth = growth;
        self.base = base;
        self.cap = cap;
        self
    }

    /// How delays are randomised. Default [`Jitter::Full`]. A [`Jitter::Proportional`]
    /// percentage must be above 0 and at most 100 (field `jitter_percent`).
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// An overall deadline from the first attempt: no attempt starts after it (1 ms to
    /// 1 day). A retry whose delay (the backoff, or the server's hint when that is longer)
    /// would start it after the deadline is not made: the last attempt's result is returned
    /// at once, with [`StopReason::DeadlineExceeded`](crate::StopReason::DeadlineExceeded) and
    /// the server's hint. An attempt already started is not cut short: bound attempts with a
    /// timeout below this layer.
    ///
    /// Default [`DEFAULT_DEADLINE`], 30 s. Without one, a throttling upstream answering
    /// `Retry-After: 300` (the most the default [`HintPolicy`] obeys) would hold a request for
    /// `(max_attempts - 1) × 300 s`. 30 s is the total request timeout of the standard
    /// resilience pipeline of .NET's `Microsoft.Extensions.Http.Resilience` (built on Polly),
    /// the closest peer that bounds retries by time out of the box; the AWS SDKs and
    /// Resilience4j bound retries by attempts only and leave an overall timeout to the user,
    /// and gRPC recommends that every call carry a deadline. A batch job that would rather
    /// wait out long throttling sets a longer deadline, or [`no_deadline`](Self::no_deadline).
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// No overall deadline: retries are bounded by `max_attempts` and the budget alone, and
    /// each may wait as long as the server asks (up to the [`HintPolicy`]'s maximum).
    pub fn no_deadline(mut self) -> Self {
        self.deadline = None;
        self
    }

    /// The retry budget: `percent` % of the requests of the last `ttl`, plus `min_per_sec`
    /// retries per second always allowed. Default 20 %, 10 s, 10/s.
    pub fn budget(mut self, ttl: Duration, min_per_sec: u32, percent: f64) -> Self {
        self.budget = Some((ttl, min_per_sec, percent));
        self
    }

    /// Where the budget reads the time: tokio's clock (the default), whose reading the layer
    /// already shares with the layers it wraps, or the processor's time-stamp counter with
    /// [`Clock::tsc`], which the budget then reads itself for each deposit and withdrawal
    /// (about 9.5 ns a reading where tokio's costs 23 ns, on the machine the benchmarks ran
    /// on). The counter does not follow tokio's paused time: tests on paused time keep the
    /// default. See [`Clock`] for the trade-off.
    pub fn budget_clock(mut self, clock: Clock) -> Self {
        self.budget_clock = clock;
        self
    }

    /// Retries without a budget: every failing request is retried up to `max_attempts`,
    /// multiplying the load on a failing upstream. Prefer a budget.
    pub fn no_budget(mut self) -> Self {
        self.budget = None;
        self
    }

    /// The failure kinds retried. Default [`RetryOn::DEFAULT`].
    pub fn retry_on(mut self, retry_on: RetryOn) -> Self {
        self.retry_on = retry_on;
        self
    }

    /// Whether 429 and 503-with-`Retry-After` answers are retried (after the delay they ask
    /// for). Default `true`.
    pub fn retry_throttled(mut self, retry: bool) -> Self {
        self.retry_on = if retry {
            self.retry_on.with(FailureKind::Throttled)
        } else {
            self.retry_on.without(FailureKind::Throttled)
        };
        self
    }

    /// Which requests may be resent. Default [`Idempotency::Standard`]: idempotent methods
    /// and requests with an `Idempotency-Key` header.
    pub fn idempotency(mut self, idempotency: Idempotency) -> Self {
        self.idempotency = idempotency;
        self
    }

    /// How server hints (`Retry-After`, `RateLimit`, `X-RateLimit-Reset`) are bounded.
    pub fn hint_policy(mut self, hints: HintPolicy) -> Self {
        self.hints = Some(hints);
        self
    }

    /// Ignores server hints: delays come from the backoff alone.
    pub fn ignore_server_hints(mut self) -> Self {
        self.hints = None;
        self
    }

    /// The most request-body bytes kept to replay a body that is streamed (0 to 1 GiB);
    /// a longer body is sent once and not retried. Default 64 KiB.
    pub fn max_replay_bytes(mut self, bytes: usize) -> Self {
        self.max_replay_bytes = bytes;
        self
    }

    /// Seeds the jitter, so that the delays of a run can be reproduced.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Calls `on_retry(attempt, delay, reason)` when a retry is decided, before its backoff:
    /// the attempt that failed (1 for the first), the wait before the next, and how it
    /// failed. A retry whose request is dropped during the backoff was told here and is never
    /// sent, so it is not among the retries the figures count.
    pub fn on_retry<F>(mut self, on_retry: F) -> Self
    where
        F: Fn(u32, Duration, FailureKind) + Send + Sync + 'static,
    {
        self.on_retry = Some(Arc::new(on_retry));
        self
    }

    /// Classifies attempts with `classifier` instead of the default HTTP rules.
    pub fn classifier<C2>(self, classifier: C2) -> RetryBuilder<C2> {
        RetryBuilder {
            max_attempts: self.max_attempts,
            growth: self.growth,
            base: self.base,
            cap: self.cap,
            jitter: self.jitter,
            factor: self.factor,
            deadline: self.deadline,
            budget: self.budget,
            budget_clock: self.budget_clock,
            retry_on: self.retry_on,
            idempotency: self.idempotency,
            hints: self.hints,
            max_replay_bytes: self.max_replay_bytes,
            seed: self.seed,
            on_retry: self.on_retry,
            classifier,
        }
    }

    /// Validates the configuration and builds the layer.
    pub fn build(self) -> Result<RetryLayer<C>, ConfigError> {
        check_range(
            "max_attempts",
            self.max_attempts,
            1,
            100,
            "an integer from 1 to 100",
        )?;
        let backoff = Backoff::new(self.growth, self.base, self.cap, self.jitter)?
            .with_factor(self.factor)?;
        if let Some(deadline) = self.deadline {
            check_range(
                "deadline",
                deadline,
                Duration::from_millis(1),
                Duration::from_secs(86_400),
                "a duration from 1 ms to 1 day",
            )?;
        }
        check_range(
            "max_replay_bytes",
            self.max_replay_bytes,
            0,
            1 << 30,
            "a size from 0 to 1 GiB",
        )?;
        let budget = match self.budget {
            Some((ttl, min_per_sec, percent)) => Some(RetryBudget::with_clock(
                BudgetConfig::new(ttl, min_per_sec, percent)?,
                self.budget_clock,
            )),
            None => None,
        };
        let policy = RetryPolicy {
            max_attempts: self.max_attempts,
            backoff,
            deadline: self.deadline,
            retry_on: self.retry_on,
            idempotency: self.idempotency,
            hints: self.hints,
            max_replay_bytes: self.max_replay_bytes,
        };
        let seed = self
            .seed
            .unwrap_or_else(|| std::collections::hash_map::RandomState::new().hash_one(0u8));
        Ok(RetryLayer {
            shared: Arc::new(Shared::new(
                policy,
                self.classifier,
                budget,
                self.on_retry,
                seed,
            )),
        })
    }
}
