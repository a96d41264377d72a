//! What the store did, for tests, dashboards and the metrics layer.

use std::sync::atomic::{AtomicU64, Ordering};

use seawall_core::figures::{counter, gauge};
use seawall_core::{Figure, FigureSource};

use crate::store::RedisStore;

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) remote_calls: AtomicU64,
    pub(crate) answered: AtomicU64,
    pub(crate) remote_admitted: AtomicU64,
    pub(crate) remote_waits: AtomicU64,
    pub(crate) lease_admitted: AtomicU64,
    pub(crate) leased: AtomicU64,
    pub(crate) lease_dropped: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) outages: AtomicU64,
    pub(crate) skipped: AtomicU64,
    pub(crate) queue_full: AtomicU64,
    pub(crate) closed_refused: AtomicU64,
    pub(crate) open_admitted: AtomicU64,
    pub(crate) fallback_admitted: AtomicU64,
    pub(crate) fallback_refused: AtomicU64,
}

/// A [`RedisStore`]'s figures since it was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RedisStoreStats {
    /// Script calls sent to Redis (each carries one key's admissions queued together, and
    /// lease refills).
    pub remote_calls: u64,
    /// Of those, calls Redis answered.
    pub answered_calls: u64,
    /// Admissions Redis answered with an admission.
    pub remote_admitted: u64,
    /// Admissions Redis answered with a wait.
    pub remote_waits: u64,
    /// Admissions from leased tokens, without a round trip.
    pub lease_admitted: u64,
    /// Tokens leased beyond the requests that fetched them.
    pub leased_tokens: u64,
    /// Leased tokens dropped because the pool already held a full lease.
    pub lease_dropped: u64,
    /// Calls Redis answered with an error (connection refused, script error, …).
    pub errors: u64,
    /// Calls Redis did not answer within the timeout.
    pub timeouts: u64,
    /// Times Redis went from answering to failing (on a Cluster, each key's own).
    pub outages: u64,
    /// Attempts answered by the failure policy without asking Redis, in the pause after a
    /// failure.
    pub skipped: u64,
    /// Attempts answered by the failure policy at once because `max_pending` admissions of
    /// their key already waited for Redis.
    pub queue_full: u64,
    /// Requests refused by the fail-closed policy.
    pub closed_refused: u64,
    /// Requests admitted by the fail-open policy.
    pub open_admitted: u64,
    /// Requests the fallback policy's local limiter admitted.
    pub fallback_admitted: u64,
    /// Requests the fallback policy's local limiter told to wait or refused as oversize.
    pub fallback_refused: u64,
    /// Whether the failure policy is answering now instead of Redis (on a Cluster: for some
    /// key, the latest failure being less than `recheck_after` ago).
    pub unavailable: bool,
}

impl RedisStore {
    /// The store's figures now.
    pub fn stats(&self) -> RedisStoreStats {
        let c = &self.inner.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        RedisStoreStats {
            remote_calls: load(&c.remote_calls),
            answered_calls: load(&c.answered),
            remote_admitted: load(&c.remote_admitted),
            remote_waits: load(&c.remote_waits),
            lease_admitted: load(&c.lease_admitted),
            leased_tokens: load(&c.leased),
            lease_dropped: load(&c.lease_dropped),
            errors: load(&c.errors),
            timeouts: load(&c.timeouts),
            outages: load(&c.outages),
            skipped: load(&c.skipped),
            queue_full: load(&c.queue_full),
            closed_refused: load(&c.closed_refused),
            open_admitted: load(&c.open_admitted),
            fallback_admitted: load(&c.fallback_admitted),
            fallback_refused: load(&c.fallback_refused),
            unavailable: self.is_unavailable(),
        }
    }
}

impl FigureSource for RedisStore {
    fn figures(&self, visit: &mut dyn FnMut(Figure<'_>)) {
        let s = self.stats();
        for (outcome, n) in [
            ("answered", s.answered_calls),
            ("error", s.errors),
            ("timeout", s.timeouts),
        ] {
            visit(counter(
                "seawall_rate_limit_store_calls",
                "Round trips to the shared rate-limit store, by outcome.",
                &[("outcome", outcome)],
                n,
            ));
        }
        for (answer, n) in [("admitted", s.remote_admitted), ("wait", s.remote_waits)] {
            visit(counter(
                "seawall_rate_limit_store_admissions",
                "Admissions the shared rate-limit store answered, by answer.",
                &[("answer", answer)],
                n,
            ));
        }
        visit(counter(
            "seawall_rate_limit_store_lease_admitted",
            "Requests admitted from leased tokens without a round trip.",
            &[],
            s.lease_admitted,
        ));
        visit(counter(
            "seawall_rate_limit_store_outages",
            "Times the shared rate-limit store went from answering to failing.",
            &[],
            s.outages,
        ));
        visit(counter(
            "seawall_rate_limit_store_queue_full",
            "Admissions answered by the failure policy because their key's queue for the shared \
             rate-limit store was full.",
            &[],
            s.queue_full,
        ));
        for (answer, n) in [
            ("refused", s.closed_refused),
            ("admitted_open", s.open_admitted),
            ("admitted_fallback", s.fallback_admitted),
            ("refused_fallback", s.fallback_refused),
        ] {
            visit(counter(
                "seawall_rate_limit_store_policy_answers",
                "Admissions answered by the failure policy while the store was unavailable.",
                &[("answer", answer)],
                n,
            ));
        }
        visit(gauge(
            "seawall_rate_limit_store_unavailable",
            "1 while the failure policy answers instead of the shared store.",
            &[],
            if s.unavailable { 1.0 } else { 0.0 },
        ));
    }
}
