//! The retry decision: whether a finished attempt is tried again, and after how long.

use std::fmt;
use std::time::Duration;

use seawall_core::{FailureKind, HintPolicy, Idempotency, Outcome};
use tokio::time::Instant;

use crate::backoff::{Backoff, Rng};
use crate::budget::RetryBudget;

/// Why the retry layer stopped trying a request whose last attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StopReason {
    /// The failure is not one this layer retries (a 4xx, a refusal by a layer below, an
    /// unknown error, or a kind left out of `retry_on`).
    NotRetryable,
    /// The request may have reached the upstream and its method is not idempotent (a POST or
    /// PATCH without `Idempotency-Key`).
    NotIdempotent,
    /// `max_attempts` attempts were made.
    AttemptsExhausted,
    /// The retry budget is empty: too many recent requests were already retried.
    BudgetExhausted,
    /// The next attempt could not start before the deadline (the server's hint, when there
    /// was one, is in the error).
    DeadlineExceeded,
    /// The request body outgrew the replay buffer, so it cannot be sent again.
    BodyNotReplayable,
    /// The service below failed while getting ready for a retry.
    NotReady,
}

impl StopReason {
    /// Every reason, in a fixed order (for metrics).
    pub const ALL: [StopReason; 7] = [
        StopReason::NotRetryable,
        StopReason::NotIdempotent,
        StopReason::AttemptsExhausted,
        StopReason::BudgetExhausted,
        StopReason::DeadlineExceeded,
        StopReason::BodyNotReplayable,
        StopReason::NotReady,
    ];

    /// A stable, low-cardinality label.
    pub const fn as_str(self) -> &'static str {
        match self {
            StopReason::NotRetryable => "not_retryable",
            StopReason::NotIdempotent => "not_idempotent",
            StopReason::AttemptsExhausted => "attempts_exhausted",
            StopReason::BudgetExhausted => "budget_exhausted",
            StopReason::DeadlineExceeded => "deadline_exceeded",
            StopReason::BodyNotReplayable => "body_not_replayable",
            StopReason::NotReady => "not_ready",
        }
    }

    /// `true` when the request would have been retried but something ran out: attempts,
    /// budget, time or replay buffer. These are the requests the layer "gave up" on.
    pub const fn gave_up(self) -> bool {
        matches!(
            self,
            StopReason::AttemptsExhausted
                | StopReason::BudgetExhausted
                | StopReason::DeadlineExceeded
                | StopReason::BodyNotReplayable
                | StopReason::NotReady
        )
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }

    fn describe(self) -> &'static str {
        match self {
            StopReason::NotRetryable => "the failure is not retryable",
            StopReason::NotIdempotent => {
                "the request is not idempotent; add an `Idempotency-Key` header to allow retries"
            }
            StopReason::AttemptsExhausted => "no attempts left",
            StopReason::BudgetExhausted => {
                "the retry budget is exhausted; the upstream is failing for many requests"
            }
            StopReason::DeadlineExceeded => "the next attempt could not start before the deadline",
            StopReason::BodyNotReplayable => "the request body is too large to send again",
            StopReason::NotReady => "the service below failed while getting ready",
        }
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// What the layer does after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The attempt succeeded, or says nothing about the upstream: its result is returned.
    Done,
    /// Try again after `delay`, because the attempt failed with `reason`.
    Retry {
        /// How long to wait first: the backoff, or the server's hint when that is longer.
        delay: Duration,
        /// How the attempt failed.
        reason: FailureKind,
    },
    /// The attempt failed and is not tried again.
    Stop {
        /// Why.
        reason: StopReason,
        /// The server's requested delay, when it was what made the layer stop.
        hint: Option<Duration>,
    },
}

/// What the decision needs to know about a finished attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptInfo {
    /// Attempts made so far, this one included (1 after the first).
    pub attempts: u32,
    /// How the attempt was classified.
    pub outcome: Outcome,
    /// Whether the request may be resent after it may have reached the upstream (see
    /// [`Idempotency::allows`]).
    pub may_resend: bool,
    /// Whether the request body can be sent again.
    pub replayable: bool,
    /// How long the server asked us to wait, if it did (already bounded by the hint policy).
    pub hint: Option<Duration>,
    /// Time since the request was first sent.
    pub elapsed: Duration,
}

/// The per-request state of retries: the previous delay and the jitter generator.
#[derive(Debug, Clone)]
pub struct RetryState {
    previous_delay: Duration,
    rng: Rng,
    /// What the earlier attempts waited in a rate limiter below, added to the last answer's.
    pub(crate) earlier_waits: Duration,
}

impl RetryState {
    /// A fresh state whose jitter draws from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            previous_delay: Duration::ZERO,
            rng: Rng::new(seed),
            earlier_waits: Duration::ZERO,
        }
    }
}

/// The set of failure kinds that are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryOn(u8);

impl RetryOn {
    /// Connect errors, timeouts, broken connections, 5xx and throttling answers.
    pub const DEFAULT: RetryOn = RetryOn::none()
        .with(FailureKind::Connect)
        .with(FailureKind::Timeout)
        .with(FailureKind::Transport)
        .with(FailureKind::ServerError)
        .with(FailureKind::Throttled);

    /// No failure kind.
    pub const fn none() -> Self {
        RetryOn(0)
    }

    /// This set plus `kind`.
    pub const fn with(self, kind: FailureKind) -> Self {
        RetryOn(self.0 | 1 << kind.index())
    }

    /// This set without `kind`.
    pub const fn without(self, kind: FailureKind) -> Self {
        RetryOn(self.0 & !(1 << kind.index()))
    }

    /// Whether `kind` is in the set.
    pub const fn contains(self, kind: FailureKind) -> bool {
        self.0 & 1 << kind.index() != 0
    }
}

impl Default for RetryOn {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A validated retry policy. Built by [`RetryLayer::builder`](crate::RetryLayer::builder).
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) deadline: Option<Duration>,
    pub(crate) retry_on: RetryOn,
    pub(crate) idempotency: Idempotency,
    pub(crate) hints: Option<HintPolicy>,
    pub(crate) max_replay_bytes: usize,
}

impl RetryPolicy {
    /// Attempts per request, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The backoff between attempts.
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// The overall deadline across attempts, if any.
    pub fn deadline(&self) -> Option<Duration> {
        self.deadline
    }

    /// The failure kinds retried.
    pub fn retry_on(&self) -> RetryOn {
        self.retry_on
    }

    /// Which requests may be resent.
    pub fn idempotency(&self) -> Idempotency {
        self.idempotency
    }

    /// How server hints are read, or `None` when they are ignored.
    pub fn hints(&self) -> Option<&HintPolicy> {
        self.hints.as_ref()
    }

    /// The most request-body bytes kept for replays.
    pub fn max_replay_bytes(&self) -> usize {
        self.max_replay_bytes
    }

    /// Decides what follows `attempt`. A retry takes one retry from `budget` (when there is
    /// one) as of `now`; nothing else is changed but `state`.
    ///
    /// The checks run in this order: the outcome, the failure kind, idempotency, attempts
    /// left, the body, the delay against the deadline, and last the budget, so that a
    /// request stopped for any other reason does not spend it.
    pub fn decide(
        &self,
        attempt: &AttemptInfo,
        state: &mut RetryState,
        budget: Option<&RetryBudget>,
        now: Instant,
    ) -> Decision {
        let kind = match attempt.outcome {
            Outcome::Success | Outcome::Ignored => return Decision::Done,
            Outcome::Failure(kind) => kind,
        };
        let stop = |reason| Decision::Stop { reason, hint: None };
        if !self.retry_on.contains(kind) {
            return stop(StopReason::NotRetryable);
        }
        if !Idempotency::allows_after(attempt.may_resend, kind) {
            return stop(StopReason::NotIdempotent);
        }
        if attempt.attempts >= self.max_attempts {
            return stop(StopReason::AttemptsExhausted);
        }
        if !attempt.replayable {
            return stop(StopReason::BodyNotReplayable);
        }
        let backoff = self
            .backoff
            .delay(attempt.attempts, state.previous_delay, &mut state.rng);
        state.previous_delay = backoff;
        let delay = attempt.hint.map_or(backoff, |hint| hint.max(backoff));
        if let Some(deadline) = self.deadline
            && attempt.elapsed.saturating_add(delay) > deadline
        {
            return Decision::Stop {
                reason: StopReason::DeadlineExceeded,
                hint: attempt.hint,
            };
        }
        if let Some(budget) = budget
            && !budget.try_withdraw(now)
        {
            return stop(StopReason::BudgetExhausted);
        }
        Decision::Retry {
            delay,
            reason: kind,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_on_sets() {
        let set = RetryOn::DEFAULT;
        for kind in FailureKind::ALL {
            let expected = !matches!(kind, FailureKind::Rejected | FailureKind::Other);
            assert_eq!(set.contains(kind), expected, "{kind}");
        }
        let set = set.without(FailureKind::Throttled).with(FailureKind::Other);
        assert!(!set.contains(FailureKind::Throttled));
        assert!(set.contains(FailureKind::Other));
        assert!(!RetryOn::none().contains(FailureKind::Connect));
    }

    #[test]
    fn stop_reason_labels_are_distinct_and_indexed_in_order() {
        for (i, reason) in StopReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i);
        }
        let mut labels: Vec<_> = StopReason::ALL.iter().map(|r| r.as_str()).collect();
        labels.dedup();
        assert_eq!(labels.len(), StopReason::ALL.len());
        assert!(!StopReason::NotRetryable.gave_up());
        assert!(!StopReason::NotIdempotent.gave_up());
        assert!(StopReason::BudgetExhausted.gave_up());
    }
}
