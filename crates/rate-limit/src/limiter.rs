//! The state one layer shares among all its services: quotas, store, per-key entries,
//! figures.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use seawall_core::{
    CallTime, Clock, Held, HintPolicy, KeyExtractor, KeyRef, KeyedMap, RequestHead, SingleState,
    ThreadCounter,
};
use tokio::time::Instant;

use crate::adaptive::AdaptiveRate;
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
    Single(SingleState<KeyEntry<St>>),
    Keyed(KeyedMap<K, KeyEntry<St>>),
}

/// The wait hook, with the layer's extractor to find a request's key: called with the
/// request's head, its predicted wait, the tokens ahead of it and the tokens left.
pub(crate) type OnWait = Arc<dyn Fn(&RequestHead<'_>, Duration, u64, Option<u64>) + Send + Sync>;

/// Where a request's true cost is read once its answer came: the `ActualCost` response
/// extension, else this header (if any).
#[derive(Debug, Clone)]
pub(crate) struct Settle {
    pub(crate) header: Option<http::HeaderName>,
}

/// What a layer adds to its quotas: tiers, the wait hook, settling.
pub(crate) struct Options<K> {
    pub(crate) tiers: Tiers<K>,
    pub(crate) on_wait: Option<OnWait>,
    pub(crate) settle: Option<Settle>,
    pub(crate) aging: Option<Duration>,
    pub(crate) adaptive: bool,
    /// How many keys the figures report one by one.
    pub(crate) figure_top_keys: usize,
    /// Where the limiter reads the time.
    pub(crate) clock: Clock,
}

/// One key's figures, read at scrape time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyFigures<K> {
    pub(crate) key: K,
    /// What its quotas would admit now, when the store can tell without a round trip.
    pub(crate) tokens_available: Option<u64>,
    /// Its requests waiting now.
    pub(crate) queue_depth: usize,
}

/// A request to settle once its answer came: its limiter, the cost it was admitted at, and
/// when.
pub(crate) struct Settling<K, St: RateStore> {
    pub(crate) limiter: Arc<Limiter<K, St>>,
    pub(crate) cost: u32,
    pub(crate) admitted: Instant,
}

impl<K, St: RateStore> Settling<K, St> {
    /// Settles from `response`'s [`ActualCost`](crate::ActualCost), else the configured
    /// header; a response with neither (or an unreadable header) keeps its estimate.
    pub(crate) fn settle<B>(&self, entry: &KeyEntry<St>, response: &http::Response<B>) {
        let Some(settle) = &self.limiter.settle else {
            return;
        };
        let actual = response
            .extensions()
            .get::<crate::ActualCost>()
            .map(|actual| actual.0)
            .or_else(|| {
                let value = response.headers().get(settle.header.as_ref()?)?;
                // A figure beyond `u32` is absurd like any too large for the quotas, and is
                // cut the same way, not ignored (which would keep a far smaller estimate).
                let figure = value.to_str().ok()?.trim();
                if figure.is_empty() || !figure.bytes().all(|byte| byte.is_ascii_digit()) {
                    return None;
                }
                Some(figure.parse::<u32>().unwrap_or(u32::MAX))
            });
        if let Some(actual) = actual {
            self.limiter
                .settle_entry(entry, self.cost, actual, self.admitted);
        }
    }
}

/// Picks a key's tier by name; a name no tier has picks the layer's own quotas.
pub(crate) type TierOf<K> = Arc<dyn Fn(&K) -> &str + Send + Sync>;

/// The quota sets of a layer: its own (index 0) and its tiers', and how a key picks one.
pub(crate) struct Tiers<K> {
    pub(crate) names: Box<[Box<str>]>,
    pub(crate) tier_of: Option<TierOf<K>>,
}

impl<K> Tiers<K> {
    /// The index of `key`'s quota set (0, the layer's own, unless the resolver names a tier).
    fn index_of(&self, key: &K) -> u8 {
        let Some(tier_of) = &self.tier_of else {
            return 0;
        };
        let name = tier_of(key);
        self.names
            .iter()
            .position(|tier| &**tier == name)
            .and_then(|index| u8::try_from(index + 1).ok())
            .unwrap_or(0)
    }
}

pub(crate) struct Limiter<K, St: RateStore> {
    pub(crate) store: St,
    /// The quota sets: the layer's own first, then one per tier.
    sets: Box<[Box<[Quota]>]>,
    tiers: Tiers<K>,
    pub(crate) on_wait: Option<OnWait>,
    pub(crate) settle: Option<Settle>,
    adaptive: bool,
    /// The slowest quota's interval (of any set): how far apart queued requests are
    /// predicted to go.
    pub(crate) interval: Duration,
    pub(crate) mode: Mode,
    pub(crate) context: Arc<Context>,
    entries: Entries<K, St>,
    pub(crate) counters: Counters,
    figure_top_keys: usize,
    /// Settlements cut to what their key's quotas can hold (see `largest_debit`).
    settle_cuts: AtomicU64,
}

impl<K, St: RateStore> fmt::Debug for Limiter<K, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("quotas", &self.sets)
            .field("tiers", &self.tiers.names)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl<K, St: RateStore> Limiter<K, St> {
    /// The time now, on the limiter's clock.
    #[inline]
    pub(crate) fn now(&self) -> Instant {
        self.context.now()
    }

    /// The time of a call, and the guard that shares it with the layers the call reaches
    /// (held until they have been called): on tokio's clock the reading the call shares
    /// ([`CallTime`]); on the counter a reading of the limiter's own, which it shares with
    /// nobody, as the layers around it read tokio's clock.
    #[inline]
    pub(crate) fn call_time(&self) -> (Instant, Option<CallTime>) {
        if self.context.clock.is_tokio() {
            let (now, guard) = CallTime::enter();
            (now, Some(guard))
        } else {
            (self.now(), None)
        }
    }

    /// The layer's own quotas: those of every key no tier claims.
    pub(crate) fn own_quotas(&self) -> &[Quota] {
        self.sets.first().map_or(&[], |set| set)
    }

    /// The quotas of `entry`'s key (its tier's).
    pub(crate) fn quotas_of(&self, entry: &KeyEntry<St>) -> &[Quota] {
        self.sets
            .get(usize::from(entry.tier))
            .or(self.sets.first())
            .map_or(&[], |set| set)
    }

    /// The most tokens a settlement may take beyond a request's estimate: as many as hold
    /// each of a key's rate quotas for at most the longer of its own full refill and the
    /// hint policy's `max_delay` (5 minutes by default), as a server's `Retry-After` may. A
    /// larger figure (a server's header of four billion tokens, say) would hold the key for
    /// years. A window quota is held for its window at most whatever the figure, and a key
    /// with window quotas only takes the figure as it is.
    fn largest_debit(&self, entry: &KeyEntry<St>) -> u32 {
        let hold = self
            .context
            .hints
            .as_ref()
            .map_or_else(|| HintPolicy::default().max_delay(), HintPolicy::max_delay);
        let hold_nanos = u64::try_from(hold.as_nanos()).unwrap_or(u64::MAX);
        self.quotas_of(entry)
            .iter()
            .filter(|quota| !quota.is_window())
            .map(|quota| {
                let held = quota.tolerance_nanos().max(hold_nanos);
                held / quota.interval_nanos().max(1)
            })
            .min()
            .map_or(u32::MAX, |tokens| u32::try_from(tokens).unwrap_or(u32::MAX))
    }

    /// Whether `cost` is over the burst of one of `entry`'s quotas, so that no wait admits it.
    pub(crate) fn oversize(&self, entry: &KeyEntry<St>, cost: u32) -> bool {
        self.quotas_of(entry)
            .iter()
            .any(|quota| cost > quota.burst_size())
    }

    /// What a request admitted at `cost` at `admitted` needs to be settled after its answer,
    /// if this limiter settles costs. Boxed: only a layer that settles costs has one, and
    /// every response future of the layer and of those above it carries the room for it.
    pub(crate) fn settling(
        self: &Arc<Self>,
        cost: u32,
        admitted: Instant,
    ) -> Option<Box<Settling<K, St>>> {
        self.settle.as_ref().map(|_| {
            Box::new(Settling {
                limiter: Arc::clone(self),
                cost,
                admitted,
            })
        })
    }

    /// Settles `entry`'s request admitted at `estimate` tokens at `admitted` with its true
    /// cost `actual`: a debit takes the difference now; a refund gives back only what the
    /// quotas still hold of the request (see [`RateStore::refund`]).
    pub(crate) fn settle_entry(
        &self,
        entry: &KeyEntry<St>,
        estimate: u32,
        actual: u32,
        admitted: Instant,
    ) {
        let bound = estimate.saturating_add(self.largest_debit(entry));
        if actual > bound {
            // Off the steady state: only a figure past what any quota of the key allows. A
            // header that always names such a figure (bytes for tokens, say) is said once,
            // then every 1,024th time, not on every answer.
            let cuts = self.settle_cuts.fetch_add(1, Ordering::Relaxed) + 1;
            if cuts == 1 || cuts.is_multiple_of(1_024) {
                tracing::warn!(
                    settled = actual,
                    taken = bound,
                    cuts,
                    "a settled cost larger than the key's quotas can hold was cut"
                );
            }
        }
        let actual = actual.min(bound);
        let now = self.now();
        if actual > estimate {
            let delta = i64::from(actual) - i64::from(estimate);
            self.store
                .settle(&entry.slot, self.quotas_of(entry), delta, now);
        } else if actual < estimate {
            let refund = crate::Refund {
                estimate,
                tokens: estimate - actual,
                admitted,
            };
            self.store
                .refund(&entry.slot, self.quotas_of(entry), refund, now);
        }
    }

    /// A key's entry, with an adaptive rate if the layer has one, its ceiling the slowest
    /// of the tier's quotas.
    fn new_entry(&self, slot: St::Slot, tier: u8) -> KeyEntry<St> {
        let mut entry = KeyEntry::new(slot, tier, Arc::clone(&self.context));
        if self.adaptive {
            let slowest = self
                .sets
                .get(usize::from(tier))
                .and_then(|set| set.iter().map(Quota::interval_nanos).max());
            entry.adaptive = Some(Box::new(AdaptiveRate::new(slowest.unwrap_or(1))));
        }
        entry
    }

    /// How long until `entry`'s adaptive rate would let `cost` through, if its gate is
    /// closed now; if open, the tokens are taken from it.
    pub(crate) fn adaptive_gate(
        &self,
        entry: &KeyEntry<St>,
        cost: u32,
        now: Instant,
    ) -> Option<Duration> {
        let adaptive = entry.adaptive.as_ref()?;
        let nanos = self.context.nanos(now);
        adaptive
            .try_take(cost, nanos)
            .err()
            .map(|at| Duration::from_nanos(at.saturating_sub(nanos)))
    }

    /// Gives back what [`adaptive_gate`](Self::adaptive_gate) took for a request the store
    /// then did not admit.
    pub(crate) fn adaptive_refund(&self, entry: &KeyEntry<St>, cost: u32) {
        if let Some(adaptive) = &entry.adaptive {
            adaptive.refund(cost);
        }
    }

    /// The tier `key` is in: the index of its quota set.
    fn tier_of(&self, key: &K) -> u8 {
        self.tiers.index_of(key)
    }

    /// How long until the store would admit `cost` for `entry`; a store that cannot tell
    /// without a round trip is assumed to need one interval per token.
    pub(crate) fn peek(&self, entry: &KeyEntry<St>, cost: u32, now: Instant) -> Duration {
        let wait = self
            .store
            .peek(&entry.slot, self.quotas_of(entry), cost, now)
            .unwrap_or_else(|| self.interval.saturating_mul(cost));
        match &entry.adaptive {
            Some(adaptive) => {
                let nanos = self.context.nanos(now);
                wait.max(Duration::from_nanos(
                    adaptive.earliest(nanos).saturating_sub(nanos),
                ))
            }
            None => wait,
        }
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
    pub(crate) fn join<B>(
        &self,
        entry: &KeyEntry<St>,
        request: Option<&http::Request<B>>,
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
        let priority = request
            .and_then(|request| request.extensions().get::<Priority>())
            .map_or(0, |p| p.0);
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
            Joined::Queued { place, slot, ahead } => {
                if let (Some(on_wait), Some(request)) = (&self.on_wait, request) {
                    let tokens_left = self
                        .store
                        .available(&entry.slot, self.quotas_of(entry), now);
                    on_wait(
                        &RequestHead::of(request),
                        slot.saturating_duration_since(now),
                        ahead,
                        tokens_left,
                    );
                }
                tracing::debug!(
                    predicted_wait_ms = slot.saturating_duration_since(now).as_millis() as u64,
                    position = ahead,
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
        let paced = entry.adaptive.as_ref().map_or(Duration::ZERO, |adaptive| {
            let at = adaptive.predict(tokens, self.context.nanos(from));
            Duration::from_nanos(at.saturating_sub(self.context.nanos(now)))
        });
        let head_wait = head_wait.max(paced);
        match self
            .store
            .predict(&entry.slot, self.quotas_of(entry), tokens, now, from)
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
        sets: Vec<Box<[Quota]>>,
        options: Options<K>,
        mode: Mode,
        hints: Option<HintPolicy>,
        single_key: Option<K>,
        key_limits: seawall_core::KeyLimits,
    ) -> Self {
        let interval = sets
            .iter()
            .flat_map(|set| set.iter())
            .map(Quota::interval)
            .max()
            .unwrap_or(Duration::ZERO);
        let context = Arc::new(Context {
            origin: options.clock.now(),
            clock: options.clock,
            hints,
            pauses: AtomicU64::new(0),
            aging: options.aging,
        });
        let single = single_key.map(|key| {
            let tier = options.tiers.index_of(&key);
            (store.new_slot(&key), tier)
        });
        let mut limiter = Self {
            store,
            sets: sets.into_boxed_slice(),
            tiers: options.tiers,
            on_wait: options.on_wait,
            settle: options.settle,
            adaptive: options.adaptive,
            interval,
            mode,
            context,
            entries: Entries::Keyed(KeyedMap::new(key_limits)),
            counters: Counters::default(),
            figure_top_keys: options.figure_top_keys,
            settle_cuts: AtomicU64::new(0),
        };
        if let Some((slot, tier)) = single {
            let entry = limiter.new_entry(slot, tier);
            limiter.entries = Entries::Single(SingleState::new(entry));
        }
        limiter
    }

    /// The entry for the key of `head` (ignored for a single-key limiter).
    pub(crate) fn entry_for<X>(
        &self,
        extractor: &X,
        head: &RequestHead<'_>,
        now: Instant,
    ) -> Held<KeyEntry<St>>
    where
        X: KeyExtractor<Key = K>,
    {
        self.keyed_entry(now, |map, make, keep| {
            extractor.entry(head, map, now, make, keep)
        })
    }

    /// The entry for `key` (ignored for a single-key limiter).
    pub(crate) fn entry(&self, key: &K, now: Instant) -> Held<KeyEntry<St>> {
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
        ) -> KeyRef<KeyEntry<St>>,
    ) -> Held<KeyEntry<St>> {
        match &self.entries {
            Entries::Single(entry) => entry.hold(),
            Entries::Keyed(map) => Held::new(lookup(
                map,
                &|key| self.new_entry(self.store.new_slot(key), self.tier_of(key)),
                // Dropping a key whose quota has not refilled would hand it a fresh burst.
                &|entry| {
                    entry.depth() > 0
                        || entry.paused_until(now).is_some()
                        || !self.store.is_idle(&entry.slot)
                },
            )),
        }
    }

    pub(crate) fn nanos(&self, at: Instant) -> u64 {
        self.context.nanos(at)
    }

    pub(crate) fn stats(&self) -> LimiterStats {
        let c = &self.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let now = self.now();
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

    /// The keys the figures report one by one: at most `figure_top_keys` of a keyed
    /// limiter's, those with the most requests waiting first, then those with the fewest
    /// tokens left. Read at scrape time: one walk of the keys held.
    pub(crate) fn key_figures(&self) -> Vec<KeyFigures<K>> {
        let Entries::Keyed(map) = &self.entries else {
            return Vec::new();
        };
        if self.figure_top_keys == 0 {
            return Vec::new();
        }
        let now = self.now();
        let mut all = Vec::with_capacity(map.len());
        map.for_each(|key, entry| {
            all.push(KeyFigures {
                key: key.clone(),
                tokens_available: self
                    .store
                    .available(&entry.slot, self.quotas_of(entry), now),
                queue_depth: entry.depth(),
            });
        });
        let most_pressed_first = |a: &KeyFigures<K>, b: &KeyFigures<K>| {
            b.queue_depth
                .cmp(&a.queue_depth)
                .then_with(|| a.tokens_available.cmp(&b.tokens_available))
        };
        let shown = self.figure_top_keys.min(all.len());
        if shown > 0 && shown < all.len() {
            all.select_nth_unstable_by(shown - 1, most_pressed_first);
        }
        all.truncate(shown);
        all.sort_by(most_pressed_first);
        all
    }

    /// Settles `key`'s request admitted at `estimate` tokens at `admitted` with its true
    /// cost `actual`.
    pub(crate) fn settle_key(&self, key: &K, estimate: u32, actual: u32, admitted: Instant) {
        let entry = self.entry(key, self.now());
        self.settle_entry(&entry, estimate, actual, admitted);
    }

    /// How many tokens `key`'s quotas would admit now.
    pub(crate) fn tokens_available(&self, key: &K) -> Option<u64> {
        let now = self.now();
        let entry = self.entry(key, now);
        self.store
            .available(&entry.slot, self.quotas_of(&entry), now)
    }

    /// `key`'s adaptive rate in force, in requests per second.
    pub(crate) fn current_rate(&self, key: &K) -> Option<f64> {
        let entry = self.entry(key, self.now());
        entry
            .adaptive
            .as_ref()
            .map(|adaptive| adaptive.rate(self.context.nanos(self.now())))
    }

    /// Pauses `key` for `duration`, as a server's `Retry-After` would.
    pub(crate) fn pause_key(&self, key: K, duration: Duration) {
        let now = self.now();
        let entry = self.entry(&key, now);
        entry.pause(self.nanos(later(now, duration)));
    }
}
