//! The state one layer shares among all its services: quotas, store, per-key entries,
//! figures.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use seawall_core::{HintPolicy, KeyExtractor, KeyedMap, RequestHead, ThreadCounter};
use tokio::time::Instant;

use crate::error::Rejected;
use crate::extensions::Priority;
use crate::queue::{Context, Joined, KeyEntry, Place, later};
use crate::quota::Quota;
use crate::store::RateStore;

/// What the limiter does when no token is free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Wait in line, within bounds.
    Wait {
        max_waiting: usize,
        max_wait: Duration,
    },
    /// Refuse at once.
    FailFast,
}

/// Figures updated as requests pass; read through [`Limiter::stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Added to by every admitted request, so kept per thread: a shared counter would be a
    /// cache line every core writes on every request.
    pub(crate) admitted: ThreadCounter,
    pub(crate) admitted_after_wait: AtomicU64,
    pub(crate) wait_nanos: AtomicU64,
    pub(crate) queue_full: AtomicU64,
    pub(crate) wait_too_long: AtomicU64,
    pub(crate) limited: AtomicU64,
    pub(crate) oversize: AtomicU64,
    pub(crate) store_unavailable: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) withdrawn: AtomicU64,
    pub(crate) wakeups: AtomicU64,
}

/// A limiter's figures, for the metrics layer and for dashboards.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LimiterStats {
    /// Requests admitted, at once or after waiting.
    pub admitted: u64,
    /// Of those, requests that waited first.
    pub admitted_after_wait: u64,
    /// Total time admitted requests spent waiting.
    pub wait_total: Duration,
    /// Refused: queue full.
    pub rejected_queue_full: u64,
    /// Refused: predicted wait over `max_wait`.
    pub rejected_wait_too_long: u64,
    /// Refused in fail-fast mode.
    pub rejected_limited: u64,
    /// Refused: cost over a quota's burst.
    pub rejected_oversize: u64,
    /// Refused: the store could not be asked.
    pub rejected_store_unavailable: u64,
    /// Waiting requests dropped by their callers.
    pub cancelled: u64,
    /// Waiting requests refused, when their turn came, by the layer above that had admitted
    /// them (a circuit breaker that opened meanwhile): no token taken, and counted as a
    /// refusal by that layer, not among this limiter's.
    pub withdrawn: u64,
    /// Times a waiting request was woken (after its first poll).
    pub wakeups: u64,
    /// Server-driven pauses applied.
    pub pauses: u64,
    /// Requests waiting now, over all keys.
    pub queue_depth: usize,
    /// Keys paused by their server now.
    pub paused_keys: usize,
    /// Keys held.
    pub keys: usize,
}

impl Counters {
    pub(crate) fn count_refusal(&self, rejected: &Rejected) {
        let counter = match rejected {
            Rejected::QueueFull { .. } => &self.queue_full,
            Rejected::WaitTooLong { .. } => &self.wait_too_long,
            Rejected::Limited { .. } => &self.limited,
            Rejected::Oversize { .. } => &self.oversize,
            Rejected::StoreUnavailable(_) => &self.store_unavailable,
            Rejected::Withdrawn(_) => &self.withdrawn,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

pub(crate) enum Entries<K, St: RateStore> {
    Single(Arc<KeyEntry<St>>),
    Keyed(KeyedMap<K, KeyEntry<St>>),
}

pub(crate) struct Limiter<K, St: RateStore> {
    pub(crate) store: St,
    pub(crate) quotas: Box<[Quota]>,
    /// The slowest quota's interval: how far apart queued requests are predicted to go.
    pub(crate) interval: Duration,
    pub(crate) mode: Mode,
    pub(crate) context: Arc<Context>,
    entries: Entries<K, St>,
    pub(crate) counters: Counters,
}

impl<K, St: RateStore> fmt::Debug for Limiter<K, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("quotas", &self.quotas)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl<K, St: RateStore> Limiter<K, St> {
    /// How long until the store would admit `cost` for `entry`; a store that cannot tell
    /// without a round trip is assumed to need one interval per token.
    pub(crate) fn peek(&self, entry: &KeyEntry<St>, cost: u32, now: Instant) -> Duration {
        self.store
            .peek(&entry.slot, &self.quotas, cost, now)
            .unwrap_or_else(|| self.interval.saturating_mul(cost))
    }

    /// `Some(max_waiting)` when the admissions out with the store for `entry` already fill
    /// the queue's bound (never for a store that answers at once, nor in fail-fast mode).
    pub(crate) fn store_is_full(&self, entry: &KeyEntry<St>) -> Option<usize> {
        match self.mode {
            Mode::Wait { max_waiting, .. } => {
                (self.store.pending(&entry.slot) >= max_waiting).then_some(max_waiting)
            }
            Mode::FailFast => None,
        }
    }

    /// Queues a request that found no free token, or says why it is refused: fail-fast mode,
    /// a full queue, or a predicted wait over `max_wait`. `head_wait` is how long until the
    /// store would admit it were it at the head.
    pub(crate) fn join(
        &self,
        entry: &KeyEntry<St>,
        extensions: &http::Extensions,
        cost: u32,
        now: Instant,
        head_wait: Duration,
    ) -> Result<(Place, Instant), Rejected> {
        let (max_waiting, max_wait) = match self.mode {
            Mode::FailFast => {
                return Err(Rejected::Limited {
                    retry_after: head_wait,
                });
            }
            Mode::Wait {
                max_waiting,
                max_wait,
            } => (max_waiting, max_wait),
        };
        let priority = extensions.get::<Priority>().map_or(0, |p| p.0);
        let predict = |ahead: u64| self.predict(entry, ahead, cost, now, head_wait);
        // Admissions out with a shared store take places in line too (a waiter at the head
        // asking the store counts twice while its answer is out).
        let places = max_waiting.saturating_sub(self.store.pending(&entry.slot));
        match entry.join(priority, cost, now, predict, places, max_wait) {
            Joined::Full => Err(Rejected::QueueFull { max_waiting }),
            Joined::TooLong(predicted) => Err(Rejected::WaitTooLong {
                predicted,
                max_wait,
            }),
            Joined::Queued { place, slot } => {
                tracing::debug!(
                    predicted_wait_ms = slot.saturating_duration_since(now).as_millis() as u64,
                    position = entry.tokens_ahead(place),
                    "waiting in the rate limiter's queue"
                );
                Ok((place, slot))
            }
        }
    }

    /// How long from `now` until the store would have admitted the `ahead` tokens queued
    /// before a request of `cost`, and it: at each quota's own pace (a quota's burst
    /// included), no earlier than a server's pause ends, and no earlier than `head_wait` (its
    /// wait were it at the head). A store that cannot tell without a round trip is assumed to
    /// need the slowest quota's interval a token.
    pub(crate) fn predict(
        &self,
        entry: &KeyEntry<St>,
        ahead: u64,
        cost: u32,
        now: Instant,
        head_wait: Duration,
    ) -> Duration {
        let from = match entry.paused_until(now) {
            Some(until) => self.context.instant(until),
            None => now,
        };
        let tokens = ahead.saturating_add(u64::from(cost));
        match self
            .store
            .predict(&entry.slot, &self.quotas, tokens, now, from)
        {
            Some(wait) => wait.max(head_wait),
            None => head_wait.saturating_add(
                self.interval
                    .saturating_mul(u32::try_from(ahead).unwrap_or(u32::MAX)),
            ),
        }
    }

    /// The `max_wait` of a waiting limiter.
    pub(crate) fn max_wait(&self) -> Option<Duration> {
        match self.mode {
            Mode::Wait { max_wait, .. } => Some(max_wait),
            Mode::FailFast => None,
        }
    }

    /// When the store would admit a request of `cost` for `entry`, for the queue's hand-off.
    pub(crate) fn next_slot(&self, entry: &KeyEntry<St>, cost: u32, now: Instant) -> Instant {
        let at = later(now, self.peek(entry, cost, now));
        match entry.paused_until(now) {
            Some(until) => at.max(self.context.instant(until)),
            None => at,
        }
    }
}

impl<K, St> Limiter<K, St>
where
    K: Clone + Eq + Hash + fmt::Debug + Send + Sync + 'static,
    St: RateStore,
{
    pub(crate) fn new(
        store: St,
        quotas: Vec<Quota>,
        mode: Mode,
        hints: Option<HintPolicy>,
        single_key: Option<K>,
        key_limits: seawall_core::KeyLimits,
    ) -> Self {
        let interval = quotas
            .iter()
            .map(Quota::interval)
            .max()
            .unwrap_or(Duration::ZERO);
        let context = Arc::new(Context {
            origin: Instant::now(),
            hints,
            pauses: AtomicU64::new(0),
        });
        let entries = match single_key {
            Some(key) => Entries::Single(Arc::new(KeyEntry::new(
                store.new_slot(&key),
                Arc::clone(&context),
            ))),
            None => Entries::Keyed(KeyedMap::new(key_limits)),
        };
        Self {
            store,
            quotas: quotas.into_boxed_slice(),
            interval,
            mode,
            context,
            entries,
            counters: Counters::default(),
        }
    }

    /// The entry for the key of `head` (ignored for a single-key limiter).
    pub(crate) fn entry_for<X>(
        &self,
        extractor: &X,
        head: &RequestHead<'_>,
        now: Instant,
    ) -> Arc<KeyEntry<St>>
    where
        X: KeyExtractor<Key = K>,
    {
        self.keyed_entry(now, |map, make, keep| {
            extractor.entry(head, map, now, make, keep)
        })
    }

    /// The entry for `key` (ignored for a single-key limiter).
    pub(crate) fn entry(&self, key: &K, now: Instant) -> Arc<KeyEntry<St>> {
        self.keyed_entry(now, |map, make, keep| {
            map.get_or_insert_by(key, || key.clone(), now, make, keep)
        })
    }

    /// The single entry, or the keyed one `lookup` finds in the map with the given ways to
    /// make a new entry and to keep an idle one.
    fn keyed_entry(
        &self,
        now: Instant,
        lookup: impl FnOnce(
            &KeyedMap<K, KeyEntry<St>>,
            &dyn Fn(&K) -> KeyEntry<St>,
            &dyn Fn(&KeyEntry<St>) -> bool,
        ) -> Arc<KeyEntry<St>>,
    ) -> Arc<KeyEntry<St>> {
        match &self.entries {
            Entries::Single(entry) => Arc::clone(entry),
            Entries::Keyed(map) => lookup(
                map,
                &|key| KeyEntry::new(self.store.new_slot(key), Arc::clone(&self.context)),
                // Dropping a key whose quota has not refilled would hand it a fresh burst.
                &|entry| {
                    entry.depth() > 0
                        || entry.paused_until(now).is_some()
                        || !self.store.is_idle(&entry.slot)
                },
            ),
        }
    }

    pub(crate) fn nanos(&self, at: Instant) -> u64 {
        self.context.nanos(at)
    }

    pub(crate) fn stats(&self) -> LimiterStats {
        let c = &self.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let now = Instant::now();
        let (mut queue_depth, mut paused_keys, mut keys) = (0, 0, 0);
        let mut add = |entry: &KeyEntry<St>| {
            queue_depth += entry.depth();
            paused_keys += usize::from(entry.paused_until(now).is_some());
            keys += 1;
        };
        match &self.entries {
            Entries::Single(entry) => add(entry),
            Entries::Keyed(map) => map.for_each(|_, entry| add(entry)),
        }
        LimiterStats {
            admitted: c.admitted.total(),
            admitted_after_wait: load(&c.admitted_after_wait),
            wait_total: Duration::from_nanos(load(&c.wait_nanos)),
            rejected_queue_full: load(&c.queue_full),
            rejected_wait_too_long: load(&c.wait_too_long),
            rejected_limited: load(&c.limited),
            rejected_oversize: load(&c.oversize),
            rejected_store_unavailable: load(&c.store_unavailable),
            cancelled: load(&c.cancelled),
            withdrawn: load(&c.withdrawn),
            wakeups: load(&c.wakeups),
            pauses: load(&self.context.pauses),
            queue_depth,
            paused_keys,
            keys,
        }
    }

    /// Pauses `key` for `duration`, as a server's `Retry-After` would.
    pub(crate) fn pause_key(&self, key: K, duration: Duration) {
        let now = Instant::now();
        let entry = self.entry(&key, now);
        entry.pause(self.nanos(later(now, duration)));
    }
}
