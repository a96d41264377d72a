//! A concurrent map from request keys to per-key state, with bounded memory.
//!
//! The rate limiter and the circuit breaker keep one state per upstream. Lookups are
//! lock-free (an epoch-based concurrent map); memory is bounded without a background task:
//! on the insert path, entries idle for longer than `idle_after` are dropped, and when the map
//! holds `max_keys` the least recently used tenth is dropped. An entry that an in-flight
//! request still holds, or whose state the layer says must be kept (a quota not yet refilled,
//! a breaker forced open), is never dropped for idleness; only the hard `max_keys` bound can
//! drop it.

use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{ConfigError, check_range};

/// How many keys a keyed layer may hold and when an unused one may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyLimits {
    max_keys: usize,
    idle_after: Duration,
}

impl Default for KeyLimits {
    /// 10,000 keys, idle after 10 minutes.
    fn default() -> Self {
        Self {
            max_keys: 10_000,
            idle_after: Duration::from_secs(600),
        }
    }
}

impl KeyLimits {
    /// Validates the limits: `max_keys` from 1 to 100,000,000; `idle_after` from 1 s to 1 week.
    pub fn new(max_keys: usize, idle_after: Duration) -> Result<Self, ConfigError> {
        check_range(
            "max_keys",
            max_keys,
            1,
            100_000_000,
            "an integer from 1 to 100,000,000",
        )?;
        check_range(
            "idle_after",
            idle_after,
            Duration::from_secs(1),
            Duration::from_secs(7 * 86_400),
            "a duration from 1 s to 7 days",
        )?;
        Ok(Self {
            max_keys,
            idle_after,
        })
    }

    /// The most keys held at once.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// How long a key may go unused before it may be dropped.
    pub fn idle_after(&self) -> Duration {
        self.idle_after
    }
}

/// Last-use times are refreshed at most this often, so that a hot key's cache line is not
/// written by every request.
const TOUCH_GRANULARITY_MS: u64 = 1_000;

struct Slot<V> {
    value: Arc<V>,
    last_used_ms: AtomicU64,
}

/// A bounded concurrent map from keys to shared per-key state.
pub struct KeyedMap<K, V> {
    map: papaya::HashMap<K, Slot<V>, foldhash::fast::RandomState>,
    limits: KeyLimits,
    origin: Instant,
    last_sweep_ms: AtomicU64,
    sweeping: AtomicBool,
}

impl<K: Hash + Eq, V> std::fmt::Debug for KeyedMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedMap")
            .field("len", &self.map.len())
            .field("limits", &self.limits)
            .finish()
    }
}

impl<K, V> KeyedMap<K, V>
where
    K: Hash + Eq + Clone,
{
    /// An empty map with the given limits.
    pub fn new(limits: KeyLimits) -> Self {
        Self {
            map: papaya::HashMap::builder()
                .hasher(foldhash::fast::RandomState::default())
                .build(),
            limits,
            origin: Instant::now(),
            last_sweep_ms: AtomicU64::new(0),
            sweeping: AtomicBool::new(false),
        }
    }

    /// The state of `key`, created by `make` if the key is new. `keep` says which idle
    /// entries still hold state that must not be forgotten; it is asked only when a sweep runs.
    pub fn get_or_insert_with(
        &self,
        key: &K,
        now: Instant,
        make: impl FnOnce() -> V,
        keep: impl Fn(&V) -> bool,
    ) -> Arc<V> {
        self.get_or_insert_by(key, || key.clone(), now, |_| make(), keep)
    }

    /// The state of the key `query` stands for, looked up without building that key: the
    /// key is built by `to_key`, and its state by `make`, only when it is new. `query` must
    /// hash as the key it equals does.
    pub fn get_or_insert_by<Q>(
        &self,
        query: &Q,
        to_key: impl FnOnce() -> K,
        now: Instant,
        make: impl FnOnce(&K) -> V,
        keep: impl Fn(&V) -> bool,
    ) -> Arc<V>
    where
        Q: papaya::Equivalent<K> + Hash + ?Sized,
    {
        let now_ms = self.millis(now);
        let map = self.map.pin();
        if let Some(slot) = map.get(query) {
            touch(slot, now_ms);
            return Arc::clone(&slot.value);
        }
        drop(map);
        self.maybe_sweep(now_ms, keep);
        let key = to_key();
        let map = self.map.pin();
        let slot = map.get_or_insert_with(key.clone(), || Slot {
            value: Arc::new(make(&key)),
            last_used_ms: AtomicU64::new(now_ms),
        });
        // The key may have been there all along, under a spelling the query did not match.
        touch(slot, now_ms);
        Arc::clone(&slot.value)
    }

    /// The state of `key`, if it is held.
    pub fn get(&self, key: &K) -> Option<Arc<V>> {
        self.map.pin().get(key).map(|slot| Arc::clone(&slot.value))
    }

    /// How many keys are held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Calls `f` with every key and its state (for figures and handles).
    pub fn for_each(&self, mut f: impl FnMut(&K, &V)) {
        for (key, slot) in self.map.pin().iter() {
            f(key, &slot.value);
        }
    }

    /// The limits this map keeps.
    pub fn limits(&self) -> KeyLimits {
        self.limits
    }

    fn millis(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.origin).as_millis()).unwrap_or(u64::MAX)
    }

    fn maybe_sweep(&self, now_ms: u64, keep: impl Fn(&V) -> bool) {
        let idle_ms = u64::try_from(self.limits.idle_after.as_millis()).unwrap_or(u64::MAX);
        let full = self.map.len() >= self.limits.max_keys;
        let due = now_ms.saturating_sub(self.last_sweep_ms.load(Ordering::Relaxed)) >= idle_ms;
        if !(full || due) {
            return;
        }
        // One sweeper at a time; the others insert without waiting.
        if self
            .sweeping
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        self.last_sweep_ms.store(now_ms, Ordering::Relaxed);
        let map = self.map.pin();
        map.retain(|_, slot| {
            let idle = now_ms.saturating_sub(slot.last_used_ms.load(Ordering::Relaxed)) >= idle_ms;
            // An entry an in-flight request still holds, or whose state matters, stays.
            !(idle && Arc::strong_count(&slot.value) == 1 && !keep(&slot.value))
        });
        let len = map.len();
        if len >= self.limits.max_keys {
            // Drop the least recently used tenth (at least one), so that the next sweep is
            // many inserts away and the cost per insert stays constant.
            let target = self.limits.max_keys - self.limits.max_keys.div_ceil(10);
            let excess = len - target.min(len);
            let mut ages: Vec<(u64, K)> = map
                .iter()
                .map(|(key, slot)| (slot.last_used_ms.load(Ordering::Relaxed), key.clone()))
                .collect();
            if excess > 0 && excess <= ages.len() {
                ages.select_nth_unstable_by_key(excess - 1, |(used, _)| *used);
                for (_, key) in &ages[..excess] {
                    map.remove(key);
                }
            }
        }
        self.sweeping.store(false, Ordering::Release);
    }
}

fn touch<V>(slot: &Slot<V>, now_ms: u64) {
    if now_ms.saturating_sub(slot.last_used_ms.load(Ordering::Relaxed)) >= TOUCH_GRANULARITY_MS {
        slot.last_used_ms.store(now_ms, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_million_keys_stay_within_max_keys() {
        let map = KeyedMap::new(KeyLimits::new(1_000, Duration::from_secs(60)).unwrap());
        let now = Instant::now();
        let mut peak = 0;
        for key in 0..1_000_000u64 {
            let value = map.get_or_insert_with(&key, now, || key, |_| false);
            assert_eq!(*value, key);
            drop(value);
            peak = peak.max(map.len());
        }
        assert!(peak <= 1_000, "peak {peak}");
        assert!(
            map.len() >= 900,
            "a sweep drops only a tenth: {}",
            map.len()
        );
        // The most recent keys survive.
        assert_eq!(map.get(&999_999).as_deref(), Some(&999_999));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_keys_are_dropped_unless_in_use() {
        let map = KeyedMap::new(KeyLimits::new(100, Duration::from_secs(10)).unwrap());
        let start = Instant::now();
        let keep_fives = |value: &i32| *value == 5;
        let held = map.get_or_insert_with(&"held", start, || 1, keep_fives);
        drop(map.get_or_insert_with(&"idle", start, || 2, keep_fives));
        drop(map.get_or_insert_with(&"kept", start, || 5, keep_fives));
        drop(map.get_or_insert_with(&"fresh", start + Duration::from_secs(9), || 3, keep_fives));
        assert_eq!(map.len(), 4);
        // A miss after idle_after sweeps: "idle" goes, "held" is in use, "kept" holds state
        // that matters, "fresh" is recent.
        drop(map.get_or_insert_with(&"new", start + Duration::from_secs(12), || 4, keep_fives));
        assert!(map.get(&"idle").is_none());
        assert_eq!(map.get(&"held").as_deref(), Some(&1));
        assert_eq!(map.get(&"kept").as_deref(), Some(&5));
        assert_eq!(map.get(&"fresh").as_deref(), Some(&3));
        assert_eq!(map.len(), 4);
        drop(held);
    }

    /// A key found by building it (its query matched nothing, as an odd spelling of a host
    /// does) counts as used, so it is not swept as idle.
    #[tokio::test(start_paused = true)]
    async fn a_key_found_by_building_it_counts_as_used() {
        let map: KeyedMap<String, i32> =
            KeyedMap::new(KeyLimits::new(100, Duration::from_secs(10)).unwrap());
        let start = Instant::now();
        drop(map.get_or_insert_with(&"held".to_owned(), start, || 1, |_| false));
        let found = map.get_or_insert_by(
            "an odd spelling of held",
            || "held".to_owned(),
            start + Duration::from_secs(9),
            |_| 2,
            |_| false,
        );
        assert_eq!(*found, 1, "the existing state, not a new one");
        drop(found);
        // A miss at 12 s sweeps what has been idle for 10 s: "held" was used at 9 s.
        drop(map.get_or_insert_with(
            &"new".to_owned(),
            start + Duration::from_secs(12),
            || 3,
            |_| false,
        ));
        assert_eq!(map.get(&"held".to_owned()).as_deref(), Some(&1));
    }

    #[test]
    fn limits_are_validated() {
        assert_eq!(
            KeyLimits::new(0, Duration::from_secs(1))
                .unwrap_err()
                .field(),
            "max_keys"
        );
        assert_eq!(
            KeyLimits::new(10, Duration::from_millis(10))
                .unwrap_err()
                .field(),
            "idle_after"
        );
    }
}
