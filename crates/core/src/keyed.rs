//! A concurrent map from request keys to per-key state, with bounded memory.
//!
//! The rate limiter and the circuit breaker keep one state per upstream. Lookups are
//! lock-free (an epoch-based concurrent map); memory is bounded without a background task:
//! on the insert path, entries idle for longer than `idle_after` are dropped, and when the map
//! holds `max_keys` the least recently used tenth is dropped. An entry that an in-flight
//! request still holds, or whose state the layer says must be kept (a quota not yet refilled,
//! a breaker forced open), is never dropped for idleness; only the hard `max_keys` bound can
//! drop it.

use std::any::Any;
use std::cell::RefCell;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use thread_local::ThreadLocal;
use tokio::time::Instant;

use crate::clock::later;
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
const TOUCH_GRANULARITY: Duration = Duration::from_millis(1_000);

/// How many keys each thread keeps handles for without asking the shared map.
const THREAD_CACHE: usize = 4;

/// One key's state, shared by every thread.
struct Shared<V> {
    value: V,
    /// Stands for this key's state, in this map, for the life of the process (see
    /// [`call_key`](crate::call_key)).
    serial: u64,
    last_used_ms: AtomicU64,
    /// Set when the key leaves the map: a thread that still caches a handle on it asks the
    /// map again (and gets a fresh state) instead of using this one.
    evicted: AtomicBool,
    /// One handle per thread cache that used the key (cold: written when a thread first
    /// uses the key). The map's slot holds them strong, so that a handle's reference count
    /// less one is its in-flight requests; they are let go when the key leaves the map.
    handles: Mutex<Vec<(usize, KeyRef<V>)>>,
}

/// One thread's handle on one key's state: what a request holds while it is in flight.
///
/// Requests clone the handle of the thread they start on, so its reference count is a cache
/// line that thread alone writes; the key's shared state is only read through it. A handle's
/// reference count less the map's own reference is the requests in flight through it, which
/// is what decides whether an idle key may be dropped.
pub struct KeyState<V> {
    shared: Arc<Shared<V>>,
    /// For a layer's single state, the thread slot its spare handles go to (see
    /// [`SingleState`](crate::SingleState)); `None` for a key's. Kept in the handle, not
    /// the shared state, so that dropping a key's handle reads no further than it.
    spare_slot: Option<u8>,
}

/// A request's reference to its key's state, through its thread's handle.
pub type KeyRef<V> = Arc<KeyState<V>>;

impl<V> KeyState<V> {
    /// A state kept outside any map, whose handles are dropped as usual. (A layer's single
    /// state, when every request has one key, is a [`SingleState`](crate::SingleState),
    /// whose handles are reused.)
    pub fn detached(value: V) -> KeyRef<V> {
        Self::detached_in(value, None)
    }

    /// A state kept outside any map whose spare handles go to thread slot `spare_slot`.
    pub(crate) fn detached_in(value: V, spare_slot: Option<u8>) -> KeyRef<V> {
        Arc::new(Self {
            spare_slot,
            shared: Arc::new(Shared {
                value,
                serial: next_serial(),
                last_used_ms: AtomicU64::new(0),
                evicted: AtomicBool::new(false),
                handles: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The thread slot this state's spare handles go to (`None`: they are not kept).
    #[inline]
    pub(crate) fn spare_slot(&self) -> Option<u8> {
        self.spare_slot
    }

    /// Whether the key this state is for has left its map (a request that started before
    /// may still hold it), or, for a layer's single state, whether the layer let it go.
    pub fn is_evicted(&self) -> bool {
        self.shared.evicted.load(Ordering::Relaxed)
    }

    /// Marks a single state as let go by its layer (see [`SingleState`](crate::SingleState)).
    pub(crate) fn retire(&self) {
        self.shared.evicted.store(true, Ordering::Relaxed);
    }

    /// A number that stands for this key's state for the life of the process: another key's
    /// state, or this key's after it left the map and came back, has another.
    pub fn serial(&self) -> u64 {
        self.shared.serial
    }

    /// Whether `self` and `other` are handles on the same key's state.
    pub fn same_state(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

impl<V> std::ops::Deref for KeyState<V> {
    type Target = V;

    #[inline]
    fn deref(&self) -> &V {
        &self.shared.value
    }
}

/// A key's state that a layer below may ask about again (a breaker's readmission) is asked
/// through the handle a request holds.
impl<V: crate::admission::Gate> crate::admission::Gate for KeyState<V> {
    fn readmit(&self, ticket: u64) -> Result<(), tower::BoxError> {
        self.shared.value.readmit(ticket)
    }
}

impl<V: std::fmt::Debug> std::fmt::Debug for KeyState<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.shared.value.fmt(f)
    }
}

impl<V> Shared<V> {
    /// The requests in flight through every thread's handle.
    fn in_flight(&self) -> usize {
        let handles = self.handles.lock().unwrap_or_else(PoisonError::into_inner);
        handles
            .iter()
            .map(|(_, handle)| Arc::strong_count(handle) - 1)
            .sum()
    }

    /// The handle of the thread cache at `cache`, made if it has none.
    fn handle_for(self: &Arc<Self>, cache: usize) -> KeyRef<V> {
        let mut handles = self.handles.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, handle)) = handles.iter().find(|(owner, _)| *owner == cache) {
            return Arc::clone(handle);
        }
        let handle = Arc::new(KeyState {
            shared: Arc::clone(self),
            spare_slot: None,
        });
        // A key evicted since the caller found it (its slot marks it before taking the
        // lock, and takes the handles away under it) keeps no new handle: the handle would
        // hold the state that holds it, and neither would ever be freed. The caller's
        // request still gets one, which its thread's next lookup sees is evicted.
        if !self.evicted.load(Ordering::Relaxed) {
            handles.push((cache, Arc::clone(&handle)));
        }
        handle
    }

    fn touch(&self, now_ms: u64) {
        if now_ms > self.last_used_ms.load(Ordering::Relaxed) {
            self.last_used_ms.store(now_ms, Ordering::Relaxed);
        }
    }
}

/// What the map holds per key. Dropping it (after the key left the map) lets the handles go,
/// which hold the shared state in turn.
struct Slot<V> {
    shared: Arc<Shared<V>>,
}

impl<V> Drop for Slot<V> {
    fn drop(&mut self) {
        self.shared.evicted.store(true, Ordering::Relaxed);
        let handles = std::mem::take(
            &mut *self
                .shared
                .handles
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        drop(handles);
    }
}

/// A key a thread used lately, and its handle on the key's state.
struct Cached<K, V> {
    key: K,
    /// Weak, so that the handle's reference count counts requests only.
    handle: Weak<KeyState<V>>,
    /// When the key's last-use time is next due to be refreshed.
    touch_at: Instant,
    /// The serial of the key an enclosing layer found when this thread last found this key
    /// by comparing it (0: none), so that the next such call finds it by that number. A hint,
    /// which [`KeyedMap::cached_via`]'s caller checks: an enclosing layer's key for another
    /// host, when a layer between sent the request to this one.
    via: u64,
}

/// A fresh serial for a key's state (never 0).
fn next_serial() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The keys one thread used last, most recent first.
struct ThreadCache<K, V> {
    entries: Vec<Cached<K, V>>,
}

impl<K, V> Default for ThreadCache<K, V> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

/// A thread's `ThreadCache<K, V>`, made at its first miss.
type ErasedCache = RefCell<Option<Box<dyn Any + Send>>>;

/// A bounded concurrent map from keys to shared per-key state.
///
/// Each thread keeps handles on the few keys it used last, so that the steady state of a
/// lookup neither probes the shared map nor writes a cache line another core reads.
pub struct KeyedMap<K, V> {
    map: papaya::HashMap<K, Slot<V>, foldhash::fast::RandomState>,
    /// Each thread's cache, a `ThreadCache<K, V>` (its type erased, so that the map's own
    /// type needs no bounds beyond its methods').
    /// Boxed: a `ThreadLocal` holds its buckets inline (about half a kilobyte).
    threads: Box<ThreadLocal<ErasedCache>>,
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
            threads: Box::new(ThreadLocal::new()),
            limits,
            origin: Instant::now(),
            last_sweep_ms: AtomicU64::new(0),
            sweeping: AtomicBool::new(false),
        }
    }
}

impl<K, V> KeyedMap<K, V>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Send + Sync + 'static,
{
    /// The state of `key`, created by `make` if the key is new. `keep` says which idle
    /// entries still hold state that must not be forgotten; it is asked only when a sweep runs.
    pub fn get_or_insert_with(
        &self,
        key: &K,
        now: Instant,
        make: impl FnOnce() -> V,
        keep: impl Fn(&V) -> bool,
    ) -> KeyRef<V> {
        self.get_or_insert_by(key, || key.clone(), now, |_| make(), keep)
    }

    /// The state of the key `query` stands for, looked up without building that key: the
    /// key is built by `to_key`, and its state by `make`, only when it is new. `query` must
    /// hash as the key it equals does.
    ///
    /// The calling thread's handle is returned: from the thread's own cache when it used the
    /// key lately (no shared write, no probe of the map), else from the map.
    #[inline]
    pub fn get_or_insert_by<Q>(
        &self,
        query: &Q,
        to_key: impl FnOnce() -> K,
        now: Instant,
        make: impl FnOnce(&K) -> V,
        keep: impl Fn(&V) -> bool,
    ) -> KeyRef<V>
    where
        Q: papaya::Equivalent<K> + Hash + ?Sized,
    {
        let cell = self.threads.get_or_default();
        if let Ok(mut cache) = cell.try_borrow_mut()
            && let Some(cache) = cache.as_mut().and_then(|cache| cache.downcast_mut())
            && let Some(handle) = self.cached(cache, |entry| query.equivalent(&entry.key), now)
        {
            return handle;
        }
        self.lookup(cell, query, to_key, now, make, keep)
    }

    /// The calling thread's handle on the key that `via` stands for, when the thread found
    /// that key lately under that number (see [`note_via`](Self::note_via)) and `is_key`
    /// says it is the key the caller means; `None` asks the caller to look the key up as
    /// usual.
    #[doc(hidden)]
    #[inline]
    pub fn cached_via(
        &self,
        via: u64,
        is_key: impl Fn(&K) -> bool,
        now: Instant,
    ) -> Option<KeyRef<V>> {
        let cell = self.threads.get()?;
        let mut cache = cell.try_borrow_mut().ok()?;
        let cache = cache.as_mut()?.downcast_mut::<ThreadCache<K, V>>()?;
        self.cached(cache, |entry| entry.via == via && is_key(&entry.key), now)
    }

    /// Notes `via`, the serial of the key an enclosing layer found, on `handle`, a handle the
    /// calling thread just looked up, so that [`cached_via`](Self::cached_via) finds it by
    /// that number (after its caller's check: `via` may be another host's key, when a layer
    /// between sent the request elsewhere).
    #[doc(hidden)]
    pub fn note_via(&self, handle: &KeyRef<V>, via: u64) {
        let Some(cell) = self.threads.get() else {
            return;
        };
        if let Ok(mut cache) = cell.try_borrow_mut()
            && let Some(cache) = cache
                .as_mut()
                .and_then(|cache| cache.downcast_mut::<ThreadCache<K, V>>())
            && let Some(entry) = cache
                .entries
                .iter_mut()
                .find(|entry| std::ptr::eq(entry.handle.as_ptr(), Arc::as_ptr(handle)))
        {
            entry.via = via;
        }
    }

    /// The thread's handle on the key `query` stands for, if the thread used it lately and
    /// it is still in the map; the key's last-use time refreshed when due.
    #[inline]
    fn cached(
        &self,
        cache: &mut ThreadCache<K, V>,
        matches: impl Fn(&Cached<K, V>) -> bool,
        now: Instant,
    ) -> Option<KeyRef<V>> {
        let index = cache.entries.iter().position(matches)?;
        let entry = &mut cache.entries[index];
        match entry.handle.upgrade() {
            Some(handle) if !handle.is_evicted() => {
                if now >= entry.touch_at {
                    entry.touch_at = later(now, TOUCH_GRANULARITY);
                    handle.shared.touch(self.millis(now));
                }
                if index > 0 {
                    cache.entries.swap(0, index);
                }
                Some(handle)
            }
            // The key left the map: ask the map again.
            _ => {
                cache.entries.remove(index);
                None
            }
        }
    }

    /// The miss path: the shared map, then the thread's cache is told.
    #[cold]
    fn lookup<Q>(
        &self,
        cell: &ErasedCache,
        query: &Q,
        to_key: impl FnOnce() -> K,
        now: Instant,
        make: impl FnOnce(&K) -> V,
        keep: impl Fn(&V) -> bool,
    ) -> KeyRef<V>
    where
        Q: papaya::Equivalent<K> + Hash + ?Sized,
    {
        let now_ms = self.millis(now);
        let found = {
            let map = self.map.pin();
            map.get_key_value(query)
                .map(|(key, slot)| (key.clone(), Arc::clone(&slot.shared)))
        };
        let (key, shared) = match found {
            Some(found) => found,
            None => {
                self.maybe_sweep(now_ms, keep);
                let key = to_key();
                let map = self.map.pin();
                // The key may have been there all along, under a spelling the query did not
                // match.
                let slot = map.get_or_insert_with(key.clone(), || Slot {
                    shared: Arc::new(Shared {
                        value: make(&key),
                        serial: next_serial(),
                        last_used_ms: AtomicU64::new(now_ms),
                        evicted: AtomicBool::new(false),
                        handles: Mutex::new(Vec::new()),
                    }),
                });
                (key, Arc::clone(&slot.shared))
            }
        };
        shared.touch(now_ms);
        let handle = shared.handle_for(std::ptr::from_ref(cell) as usize);
        if let Ok(mut cache) = cell.try_borrow_mut()
            && let Some(cache) = cache
                .get_or_insert_with(|| Box::new(ThreadCache::<K, V>::default()))
                .downcast_mut::<ThreadCache<K, V>>()
        {
            let entries = &mut cache.entries;
            entries.retain(|entry| !entry.key.eq(&key));
            if entries.len() == THREAD_CACHE {
                entries.pop();
            }
            entries.insert(
                0,
                Cached {
                    key,
                    handle: Arc::downgrade(&handle),
                    touch_at: later(now, TOUCH_GRANULARITY),
                    via: 0,
                },
            );
        }
        handle
    }
}

impl<K, V> KeyedMap<K, V>
where
    K: Hash + Eq + Clone,
{
    /// The state of `key`, if it is held.
    pub fn get(&self, key: &K) -> Option<KeyRef<V>> {
        let shared = Arc::clone(&self.map.pin().get(key)?.shared);
        let cell = self.threads.get_or_default();
        Some(shared.handle_for(std::ptr::from_ref(cell) as usize))
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
            f(key, &slot.shared.value);
        }
    }

    /// The requests in flight for `key` (0 when it is not held).
    pub fn in_flight(&self, key: &K) -> usize {
        self.map
            .pin()
            .get(key)
            .map_or(0, |slot| slot.shared.in_flight())
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
            let shared = &slot.shared;
            let idle =
                now_ms.saturating_sub(shared.last_used_ms.load(Ordering::Relaxed)) >= idle_ms;
            // An entry an in-flight request still holds, or whose state matters, stays.
            let stays = !(idle && shared.in_flight() == 0 && !keep(&shared.value));
            if !stays {
                // Threads that cache a handle on it ask the map again from now on.
                shared.evicted.store(true, Ordering::Relaxed);
            }
            stays
        });
        let len = map.len();
        if len >= self.limits.max_keys {
            // Drop the least recently used tenth (at least one), so that the next sweep is
            // many inserts away and the cost per insert stays constant. Entries that requests
            // hold or whose state matters (waiters, a server's pause, an open breaker) go
            // only when there are not enough others: dropped, their key would start afresh
            // while its old state still served the requests that held it.
            let target = self.limits.max_keys - self.limits.max_keys.div_ceil(10);
            let excess = len - target.min(len);
            let mut ages: Vec<(bool, u64, K)> = map
                .iter()
                .map(|(key, slot)| {
                    let shared = &slot.shared;
                    let matters = shared.in_flight() > 0 || keep(&shared.value);
                    let used = shared.last_used_ms.load(Ordering::Relaxed);
                    (matters, used, key.clone())
                })
                .collect();
            if excess > 0 && excess <= ages.len() {
                ages.select_nth_unstable_by_key(excess - 1, |(matters, used, _)| (*matters, *used));
                for (_, _, key) in &ages[..excess] {
                    if let Some(slot) = map.remove(key) {
                        slot.shared.evicted.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
        self.sweeping.store(false, Ordering::Release);
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
            assert_eq!(**value, key);
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
        assert_eq!(map.get(&999_999).map(|state| **state), Some(999_999));
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
        assert_eq!(map.get(&"held").map(|state| **state), Some(1));
        assert_eq!(map.get(&"kept").map(|state| **state), Some(5));
        assert_eq!(map.get(&"fresh").map(|state| **state), Some(3));
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
        assert_eq!(**found, 1, "the existing state, not a new one");
        drop(found);
        // A miss at 12 s sweeps what has been idle for 10 s: "held" was used at 9 s.
        drop(map.get_or_insert_with(
            &"new".to_owned(),
            start + Duration::from_secs(12),
            || 3,
            |_| false,
        ));
        assert_eq!(map.get(&"held".to_owned()).map(|state| **state), Some(1));
    }

    /// A thread's lookups of one key return that thread's own handle (whose reference count
    /// no other thread writes); another thread gets its own handle on the same state, and
    /// each handle's holders count as the key's requests in flight.
    #[tokio::test(start_paused = true)]
    async fn each_thread_holds_its_own_handle_and_holders_count_as_in_flight() {
        let map = Arc::new(KeyedMap::new(
            KeyLimits::new(100, Duration::from_secs(10)).unwrap(),
        ));
        let now = Instant::now();
        let made = Arc::new(AtomicU64::new(0));
        let lookup = |map: &KeyedMap<&'static str, u64>| {
            map.get_or_insert_with(
                &"a",
                now,
                || made.fetch_add(1, Ordering::Relaxed),
                |_| false,
            )
        };
        let first = lookup(&map);
        let second = lookup(&map);
        assert!(Arc::ptr_eq(&first, &second), "one handle per thread");
        assert_eq!(map.in_flight(&"a"), 2);
        let other = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let other = lookup(&map);
                    assert!(
                        !Arc::ptr_eq(&other, &first),
                        "the other thread's own handle"
                    );
                    assert!(other.same_state(&first));
                    other
                })
                .join()
                .expect("no panic")
        });
        assert_eq!(map.in_flight(&"a"), 3);
        drop((first, second));
        assert_eq!(map.in_flight(&"a"), 1);
        drop(other);
        assert_eq!(map.in_flight(&"a"), 0);
        assert_eq!(made.load(Ordering::Relaxed), 1, "one state made");
    }

    /// A thread that found a key just before a sweep dropped it (the sweep's slot took the
    /// key's handles away in between) gets a handle for its request, which is not kept: a
    /// kept one would hold the state that holds it, and neither would ever be freed.
    #[tokio::test(start_paused = true)]
    async fn a_key_evicted_after_its_lookup_keeps_no_new_handle() {
        let map = KeyedMap::new(KeyLimits::new(100, Duration::from_secs(10)).unwrap());
        let held = map.get_or_insert_with(&"a", Instant::now(), || 7, |_| false);
        let shared = Arc::clone(&held.shared);
        // What the slot's drop does when a sweep removes the key.
        shared.evicted.store(true, Ordering::Relaxed);
        shared.handles.lock().unwrap().clear();
        let late = shared.handle_for(usize::MAX);
        assert_eq!(**late, 7);
        assert!(late.is_evicted());
        assert_eq!(shared.handles.lock().unwrap().len(), 0, "no handle kept");
    }

    /// A key dropped for idleness while a thread still caches a handle on it gets a fresh
    /// state on its next use, on that thread and on every other, all the same one.
    #[tokio::test(start_paused = true)]
    async fn a_key_evicted_while_cached_gets_one_fresh_state() {
        let map = KeyedMap::new(KeyLimits::new(100, Duration::from_secs(10)).unwrap());
        let start = Instant::now();
        let made = AtomicU64::new(0);
        let make = || made.fetch_add(1, Ordering::Relaxed);
        let old = map.get_or_insert_with(&"a", start, make, |_| false);
        assert_eq!(**old, 0);
        drop(old);
        // A miss after idle_after sweeps "a", which this thread still caches.
        let later = start + Duration::from_secs(11);
        drop(map.get_or_insert_with(&"b", later, make, |_| false));
        assert!(map.get(&"a").is_none());
        let fresh = map.get_or_insert_with(&"a", later, make, |_| false);
        assert_eq!(**fresh, 2, "a fresh state, not the evicted one");
        let elsewhere = std::thread::scope(|scope| {
            scope
                .spawn(|| **map.get_or_insert_with(&"a", later, make, |_| false))
                .join()
                .expect("no panic")
        });
        assert_eq!(elsewhere, 2, "every thread gets the same fresh state");
        assert_eq!(**map.get_or_insert_with(&"a", later, make, |_| false), 2);
        assert_eq!(made.load(Ordering::Relaxed), 3);
    }

    /// At the bound, keys nobody holds go first: the least recently used key, still in
    /// flight, outlasts twenty newer ones dropped as soon as they were used.
    #[tokio::test(start_paused = true)]
    async fn max_keys_drops_idle_keys_before_one_in_flight() {
        let map = KeyedMap::new(KeyLimits::new(10, Duration::from_secs(60)).unwrap());
        let start = Instant::now();
        let held = map.get_or_insert_with(&0u64, start, || 0, |_| false);
        for key in 1..=20u64 {
            let at = start + Duration::from_millis(key);
            drop(map.get_or_insert_with(&key, at, || key * 100, |_| false));
            assert!(map.len() <= 10);
        }
        assert!(!held.is_evicted());
        assert!(map.get(&0).is_some_and(|state| state.same_state(&held)));
    }

    /// The hard bound drops even a key in flight when every key is: its holder keeps the
    /// state it has, which says it was evicted, and the next lookup gets a fresh one.
    #[tokio::test(start_paused = true)]
    async fn max_keys_drops_a_key_in_flight_when_all_are_and_its_next_lookup_is_fresh() {
        let map = KeyedMap::new(KeyLimits::new(10, Duration::from_secs(60)).unwrap());
        let start = Instant::now();
        let held: Vec<_> = (0..20u64)
            .map(|key| {
                let at = start + Duration::from_millis(key);
                let state = map.get_or_insert_with(&key, at, || key * 100, |_| false);
                assert!(map.len() <= 10);
                state
            })
            .collect();
        assert!(held[0].is_evicted(), "the least recently used key went");
        assert!(map.get(&0).is_none());
        let fresh = map.get_or_insert_with(&0, start + Duration::from_secs(1), || 7, |_| false);
        assert_eq!((**held[0], **fresh), (0, 7));
        assert!(!fresh.same_state(&held[0]));
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
