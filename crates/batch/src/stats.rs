//! The figures a batching layer keeps for metrics, and the handle that reads them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use seawall_core::figures::counter;
use seawall_core::{Figure, FigureSource};

/// Counters shared by every service one layer built. Only the batching task writes them,
/// once per batch.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    batches: AtomicU64,
    items: AtomicU64,
    discarded: AtomicU64,
}

impl Counters {
    pub(crate) fn sent(&self, items: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.items.fetch_add(items as u64, Ordering::Relaxed);
    }

    pub(crate) fn discarded(&self, items: usize) {
        if items > 0 {
            self.discarded.fetch_add(items as u64, Ordering::Relaxed);
        }
    }
}

/// A snapshot of a batching layer's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchStats {
    /// Upstream calls made, one per batch.
    pub batches: u64,
    /// Items sent in those batches.
    pub items: u64,
    /// Items left out of their batch because their caller had gone away.
    pub discarded: u64,
}

/// A handle on a batching layer's figures, shared with every service it built.
#[derive(Debug, Clone)]
pub struct BatchHandle {
    counters: Arc<Counters>,
}

impl BatchHandle {
    pub(crate) fn new(counters: Arc<Counters>) -> Self {
        Self { counters }
    }

    /// The figures so far.
    pub fn stats(&self) -> BatchStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        BatchStats {
            batches: load(&self.counters.batches),
            items: load(&self.counters.items),
            discarded: load(&self.counters.discarded),
        }
    }
}

impl FigureSource for BatchHandle {
    fn figures(&self, visit: &mut dyn FnMut(Figure<'_>)) {
        let s = self.stats();
        visit(counter(
            "seawall_batch_batches",
            "Upstream calls made, one per batch.",
            &[],
            s.batches,
        ));
        visit(counter(
            "seawall_batch_items",
            "Items sent in batches.",
            &[],
            s.items,
        ));
        visit(counter(
            "seawall_batch_discarded",
            "Items left out of their batch because their caller had gone away.",
            &[],
            s.discarded,
        ));
    }
}
