//! The in-process store: a concurrent cache bounded by bytes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::notification::RemovalCause;
use moka::sync::Cache as Moka;
use seawall_core::{ConfigError, check_range};

use crate::entry::CachedResponse;
use crate::key::CacheKey;
use crate::store::{CacheStore, StoreError, StoreFuture};

/// The in-process store: entries weighed by their size in bytes, the least useful evicted
/// (moka's TinyLFU) when the total would pass the bound, each forgotten at its
/// [`keep_until`](CachedResponse::keep_until).
///
/// Cloning it shares the same entries.
#[derive(Clone)]
pub struct MemoryStore {
    entries: Moka<CacheKey, Arc<CachedResponse>>,
    evictions: Arc<AtomicU64>,
    max_bytes: u64,
}

/// Forgets an entry when its store time is over, in moka's own (real) time.
struct KeepFor;

impl moka::Expiry<CacheKey, Arc<CachedResponse>> for KeepFor {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        entry: &Arc<CachedResponse>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(entry.keep_for())
    }

    fn expire_after_update(
        &self,
        _key: &CacheKey,
        entry: &Arc<CachedResponse>,
        _updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.keep_for())
    }
}

impl MemoryStore {
    /// The default bound: 64 MiB.
    pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;

    /// A store that holds at most `max_bytes` (from 4 KiB to 1 TiB) of entries.
    pub fn new(max_bytes: u64) -> Result<Self, ConfigError> {
        let max_bytes = check_range("max_bytes", max_bytes, 4 << 10, 1 << 40, "4 KiB to 1 TiB")?;
        let evictions = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&evictions);
        let entries = Moka::builder()
            .max_capacity(max_bytes)
            .weigher(|_key: &CacheKey, entry: &Arc<CachedResponse>| {
                u32::try_from(entry.size()).unwrap_or(u32::MAX)
            })
            .expire_after(KeepFor)
            .eviction_listener(move |_key, _entry, cause| {
                if cause == RemovalCause::Size {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        Ok(MemoryStore {
            entries,
            evictions,
            max_bytes,
        })
    }

    /// The bound in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Entries evicted to keep within the bound, so far.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// The number of entries (moka applies inserts and evictions in batches: call
    /// [`run_pending_tasks`](Self::run_pending_tasks) first for an exact figure).
    pub fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }

    /// Applies the inserts, evictions and expiries moka has queued, which it otherwise does
    /// in the course of later calls.
    pub fn run_pending_tasks(&self) {
        self.entries.run_pending_tasks();
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        // The default bound is within the accepted range.
        Self::new(Self::DEFAULT_MAX_BYTES).unwrap_or_else(|_| unreachable!())
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("max_bytes", &self.max_bytes)
            .field("bytes_held", &self.entries.weighted_size())
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

impl CacheStore for MemoryStore {
    fn get(&self, key: &CacheKey) -> StoreFuture<Result<Option<Arc<CachedResponse>>, StoreError>> {
        StoreFuture::ready(Ok(self.entries.get(key)))
    }

    fn put(
        &self,
        key: CacheKey,
        entry: Arc<CachedResponse>,
    ) -> StoreFuture<Result<(), StoreError>> {
        self.entries.insert(key, entry);
        StoreFuture::ready(Ok(()))
    }

    fn remove(&self, key: &CacheKey) -> StoreFuture<Result<(), StoreError>> {
        self.entries.invalidate(key);
        StoreFuture::ready(Ok(()))
    }

    /// The bytes held, after applying moka's queued inserts and evictions (so that a
    /// reading is exact; it is meant for scrapes, not for every request).
    fn bytes_held(&self) -> Option<u64> {
        self.entries.run_pending_tasks();
        Some(self.entries.weighted_size())
    }
}
