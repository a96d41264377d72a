//! The figures of a cache layer, through a handle.

use std::sync::Arc;

use seawall_core::ThreadCounter;
use seawall_core::figures::{Figure, FigureSource, counter, gauge};

use crate::service::Shared;
use crate::store::CacheStore;

/// The layer's counters, added to on each request (per-thread cells, no contention).
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) hits: ThreadCounter,
    pub(crate) misses: ThreadCounter,
    pub(crate) revalidations: ThreadCounter,
    pub(crate) stale: ThreadCounter,
    pub(crate) bypassed: ThreadCounter,
    pub(crate) stored: ThreadCounter,
    pub(crate) store_errors: ThreadCounter,
}

/// The figures of a cache layer at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CacheStats {
    /// Requests answered by a fresh stored answer, without calling the upstream.
    pub hits: u64,
    /// Requests the upstream answered (no usable entry, or a stale one it replaced).
    pub misses: u64,
    /// Stale entries the upstream confirmed with `304 Not Modified`.
    pub revalidations: u64,
    /// Stale entries served because the upstream failed (`stale-if-error`).
    pub stale_served: u64,
    /// Requests the cache does not handle (other methods, conditional, range, `no-store`).
    pub bypassed: u64,
    /// Answers written to the store.
    pub stored: u64,
    /// Store failures, each treated as a miss or as not storing.
    pub store_errors: u64,
    /// The bytes the store holds, when the store knows (the in-process store does).
    pub bytes_held: Option<u64>,
}

impl CacheStats {
    /// Upstream calls the cache saved: hits, and stale answers given in place of a failure
    /// (a revalidation still calls the upstream, though its `304` carries no body).
    pub fn requests_saved(&self) -> u64 {
        self.hits + self.stale_served
    }
}

trait Source: Send + Sync {
    fn stats(&self) -> CacheStats;
}

impl<St: CacheStore> Source for Shared<St> {
    fn stats(&self) -> CacheStats {
        let s = &self.stats;
        CacheStats {
            hits: s.hits.total(),
            misses: s.misses.total(),
            revalidations: s.revalidations.total(),
            stale_served: s.stale.total(),
            bypassed: s.bypassed.total(),
            stored: s.stored.total(),
            store_errors: s.store_errors.total(),
            bytes_held: self.store.bytes_held(),
        }
    }
}

/// Reads a cache layer's figures; cheap to clone, shared by every service the layer built.
#[derive(Clone)]
pub struct CacheHandle {
    source: Arc<dyn Source>,
}

impl CacheHandle {
    pub(crate) fn new<St: CacheStore>(shared: Arc<Shared<St>>) -> Self {
        CacheHandle { source: shared }
    }

    /// The figures now.
    pub fn stats(&self) -> CacheStats {
        self.source.stats()
    }
}

impl std::fmt::Debug for CacheHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheHandle")
            .field("stats", &self.stats())
            .finish()
    }
}

impl FigureSource for CacheHandle {
    fn figures(&self, visit: &mut dyn FnMut(Figure<'_>)) {
        let s = self.stats();
        visit(counter(
            "seawall_cache_hits",
            "Requests answered by a fresh stored answer.",
            &[],
            s.hits,
        ));
        visit(counter(
            "seawall_cache_misses",
            "Requests the upstream answered.",
            &[],
            s.misses,
        ));
        visit(counter(
            "seawall_cache_revalidations",
            "Stale stored answers confirmed by a 304.",
            &[],
            s.revalidations,
        ));
        visit(counter(
            "seawall_cache_stale_served",
            "Stale stored answers served because the upstream failed (stale-if-error).",
            &[],
            s.stale_served,
        ));
        visit(counter(
            "seawall_cache_bypassed",
            "Requests the cache does not handle.",
            &[],
            s.bypassed,
        ));
        visit(counter(
            "seawall_cache_store_errors",
            "Store failures, treated as misses.",
            &[],
            s.store_errors,
        ));
        if let Some(bytes) = s.bytes_held {
            visit(gauge(
                "seawall_cache_bytes",
                "Bytes held by the in-process store.",
                &[],
                bytes as f64,
            ));
        }
    }
}
