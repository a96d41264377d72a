//! The figures a coalescing layer keeps for metrics, and the handle that reads them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use seawall_core::ThreadCounter;
use seawall_core::figures::{counter, gauge};
use seawall_core::{Figure, FigureSource};

/// Counters shared by every service one layer built, and by their clones.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Per thread: every request that finds no identical one in flight adds one here and one
    /// to `landed`, and these are the only writes on that path.
    leaders: ThreadCounter,
    landed: ThreadCounter,
    /// Followers are answered after waiting for an upstream call; one shared atomic is cheap
    /// beside that.
    coalesced: AtomicU64,
    not_shared: AtomicU64,
    takeovers: AtomicU64,
}

impl Counters {
    #[inline]
    pub(crate) fn leader(&self) {
        self.leaders.add(1);
    }

    #[inline]
    pub(crate) fn landed(&self) {
        self.landed.add(1);
    }

    pub(crate) fn coalesced(&self) {
        self.coalesced.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn not_shared(&self) {
        self.not_shared.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn takeover(&self) {
        self.takeovers.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> CoalesceStats {
        let leaders = self.leaders.total();
        CoalesceStats {
            leaders,
            coalesced: self.coalesced.load(Ordering::Relaxed),
            not_shared: self.not_shared.load(Ordering::Relaxed),
            takeovers: self.takeovers.load(Ordering::Relaxed),
            // Each counter is read once; a leader that lands between the two reads can make
            // the difference briefly one too low, never below zero for long.
            in_flight: leaders.saturating_sub(self.landed.total()),
        }
    }
}

/// A snapshot of a coalescing layer's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CoalesceStats {
    /// Upstream calls made for coalescible requests: each found no identical call in flight
    /// (or took over from a leader that went away) and led its own.
    pub leaders: u64,
    /// Requests answered from another request's call, without a call of their own.
    pub coalesced: u64,
    /// Followers whose leader's answer could not be shared (streamed, above the body bound,
    /// or its body failed), which then made their own call.
    pub not_shared: u64,
    /// Followers that led a new call because their leader's caller went away.
    pub takeovers: u64,
    /// Keys with a call in flight now.
    pub in_flight: u64,
}

/// A handle on a coalescing layer's figures, shared with every service it built.
#[derive(Debug, Clone)]
pub struct CoalesceHandle {
    counters: Arc<Counters>,
}

impl CoalesceHandle {
    pub(crate) fn new(counters: Arc<Counters>) -> Self {
        Self { counters }
    }

    /// The figures so far.
    pub fn stats(&self) -> CoalesceStats {
        self.counters.snapshot()
    }
}

impl FigureSource for CoalesceHandle {
    fn figures(&self, visit: &mut dyn FnMut(Figure<'_>)) {
        let s = self.stats();
        visit(counter(
            "seawall_coalesce_leaders",
            "Upstream calls led for coalescible requests.",
            &[],
            s.leaders,
        ));
        visit(counter(
            "seawall_coalesce_coalesced",
            "Requests answered from an identical request's call, with no call of their own.",
            &[],
            s.coalesced,
        ));
        visit(counter(
            "seawall_coalesce_not_shared",
            "Followers that made their own call because the answer could not be shared.",
            &[],
            s.not_shared,
        ));
        visit(counter(
            "seawall_coalesce_takeovers",
            "Followers that led a new call because their leader's caller went away.",
            &[],
            s.takeovers,
        ));
        visit(gauge(
            "seawall_coalesce_in_flight",
            "Keys with a call in flight.",
            &[],
            s.in_flight as f64,
        ));
    }
}
