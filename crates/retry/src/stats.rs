//! The figures a retry layer keeps for metrics, and the handle that reads them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use seawall_core::{FailureKind, ThreadCounter};
use tokio::time::Instant;

use crate::policy::StopReason;
use crate::service::Shared;

/// Counters shared by every clone of one retry layer.
#[derive(Default)]
pub(crate) struct Counters {
    /// Per thread, like the budget's deposits: every request adds one.
    requests: ThreadCounter,
    retries: [AtomicU64; FailureKind::ALL.len()],
    stops: [AtomicU64; StopReason::ALL.len()],
}

impl std::fmt::Debug for Counters {
    /// The figures as a snapshot reports them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.snapshot().fmt(f)
    }
}

impl Counters {
    #[inline]
    pub(crate) fn request(&self) {
        self.requests.add(1);
    }

    pub(crate) fn retry(&self, reason: FailureKind) {
        self.retries[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stop(&self, reason: StopReason) {
        self.stops[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> RetryStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        RetryStats {
            requests: self.requests.total(),
            retries: std::array::from_fn(|i| (FailureKind::ALL[i], load(&self.retries[i]))),
            stops: std::array::from_fn(|i| (StopReason::ALL[i], load(&self.stops[i]))),
        }
    }
}

/// A snapshot of a retry layer's figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryStats {
    /// Logical requests seen (first attempts).
    pub requests: u64,
    /// Retries made, by the failure that caused them.
    pub retries: [(FailureKind, u64); 7],
    /// Requests whose last attempt failed and that were not retried further, by reason.
    pub stops: [(StopReason, u64); 7],
}

impl RetryStats {
    /// All retries, whatever their cause.
    pub fn total_retries(&self) -> u64 {
        self.retries.iter().map(|(_, n)| n).sum()
    }

    /// Attempts sent: first attempts plus retries.
    pub fn attempts(&self) -> u64 {
        self.requests + self.total_retries()
    }

    /// Retries caused by `kind`.
    pub fn retries_for(&self, kind: FailureKind) -> u64 {
        self.retries
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, n)| *n)
    }

    /// Requests stopped for `reason`.
    pub fn stops_for(&self, reason: StopReason) -> u64 {
        self.stops[reason.index()].1
    }

    /// Requests not retried because the budget was empty.
    pub fn budget_exhausted(&self) -> u64 {
        self.stops_for(StopReason::BudgetExhausted)
    }

    /// Requests the layer gave up on (see [`StopReason::gave_up`]).
    pub fn gave_up(&self) -> u64 {
        self.stops
            .iter()
            .filter(|(reason, _)| reason.gave_up())
            .map(|(_, n)| n)
            .sum()
    }
}

/// A handle on a retry layer's figures and budget, shared with every service it built.
pub struct RetryHandle<C> {
    shared: Arc<Shared<C>>,
}

impl<C> Clone for RetryHandle<C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<C> std::fmt::Debug for RetryHandle<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryHandle")
            .field("stats", &self.stats())
            .finish()
    }
}

impl<C> RetryHandle<C> {
    pub(crate) fn new(shared: Arc<Shared<C>>) -> Self {
        Self { shared }
    }

    /// The figures so far.
    pub fn stats(&self) -> RetryStats {
        self.shared.counters.snapshot()
    }

    /// Whole retries the budget allows right now, or `None` when the layer has no budget.
    pub fn budget_available(&self) -> Option<u64> {
        self.shared
            .budget
            .as_ref()
            .map(|budget| budget.available(Instant::now()))
    }
}

impl<C: Send + Sync> seawall_core::FigureSource for RetryHandle<C> {
    fn figures(&self, visit: &mut dyn FnMut(seawall_core::Figure<'_>)) {
        use seawall_core::figures::{counter, gauge};
        let s = self.stats();
        visit(counter(
            "seawall_retry_requests",
            "Requests the retry layer saw (first attempts).",
            &[],
            s.requests,
        ));
        visit(counter(
            "seawall_retry_attempts",
            "Attempts sent: first attempts plus retries.",
            &[],
            s.attempts(),
        ));
        for (kind, n) in s.retries {
            visit(counter(
                "seawall_retry_retries",
                "Retries, by how the attempt before failed.",
                &[("reason", kind.as_str())],
                n,
            ));
        }
        for (reason, n) in s.stops {
            visit(counter(
                "seawall_retry_stops",
                "Failed requests not retried further, by reason.",
                &[("reason", reason.as_str())],
                n,
            ));
        }
        visit(counter(
            "seawall_retry_budget_exhausted",
            "Failed requests not retried because the retry budget was empty.",
            &[],
            s.budget_exhausted(),
        ));
        visit(counter(
            "seawall_retry_gave_up",
            "Requests the layer gave up on: attempts, budget, deadline or replay buffer ran out.",
            &[],
            s.gave_up(),
        ));
        if let Some(available) = self.budget_available() {
            visit(gauge(
                "seawall_retry_budget_available",
                "Retries the budget allows now.",
                &[],
                available as f64,
            ));
        }
    }
}
