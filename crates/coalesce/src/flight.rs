//! One upstream call shared by identical requests, and the map of calls in flight.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::error::Error;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use crossbeam_utils::CachePadded;

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode, Version};
use tokio::sync::Notify;

use crate::key::FlightKey;
use crate::service::Config;

/// Set in [`Flight::state`] once the flight takes no more followers.
const CLOSED: usize = 1 << (usize::BITS - 1);

/// An answer every follower of a flight can copy.
#[derive(Debug)]
pub(crate) struct SharedResponse {
    pub(crate) status: StatusCode,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
    pub(crate) data: Bytes,
    pub(crate) trailers: Option<HeaderMap>,
}

impl SharedResponse {
    /// A response with this answer's status, version, headers and body; the body shares the
    /// buffered bytes.
    pub(crate) fn to_response<B>(
        &self,
        body: impl FnOnce(Bytes, Option<HeaderMap>) -> B,
    ) -> Response<B> {
        let mut response = Response::new(body(self.data.clone(), self.trailers.clone()));
        *response.status_mut() = self.status;
        *response.version_mut() = self.version;
        *response.headers_mut() = self.headers.clone();
        response
    }
}

/// How a flight ended, as its followers learn it.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// The answer, buffered.
    Response(Arc<SharedResponse>),
    /// The call failed; every follower gets the same error.
    Error(Arc<dyn Error + Send + Sync>),
    /// The answer could not be shared (a streamed body, or one above the bound, or a body
    /// that failed while it was read): each follower makes its own call.
    NotShared,
    /// The leader's caller went away before the answer: the call was dropped with it, and a
    /// follower takes over.
    Abandoned,
}

/// One upstream call in flight, the key it answers, and the followers waiting for it.
#[derive(Debug)]
pub(crate) struct Flight {
    pub(crate) key: FlightKey,
    /// Followers still waiting in the low bits; [`CLOSED`] once the leader has taken the
    /// flight out of the map and decided whether to share.
    state: AtomicUsize,
    outcome: OnceLock<Outcome>,
    notify: Notify,
}

impl Flight {
    pub(crate) fn new(key: FlightKey) -> Self {
        Self {
            key,
            state: AtomicUsize::new(0),
            outcome: OnceLock::new(),
            notify: Notify::new(),
        }
    }

    /// Joins as a follower; `false` if the flight has closed (its leader has its answer, or
    /// went away): the caller then looks the key up again.
    pub(crate) fn join(&self) -> bool {
        self.state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |state| {
                (state & CLOSED == 0).then_some(state + 1)
            })
            .is_ok()
    }

    /// A follower leaves (answered or dropped).
    pub(crate) fn leave(&self) {
        self.state.fetch_sub(1, Ordering::AcqRel);
    }

    /// Closes the flight to new followers; whether any follower is waiting.
    fn close(&self) -> bool {
        self.state.fetch_or(CLOSED, Ordering::AcqRel) & !CLOSED != 0
    }

    /// Ends the flight for its followers. Only the first outcome counts.
    fn publish(&self, outcome: Outcome) {
        // Set before notifying: a follower enables its wait-list entry before it reads the
        // outcome, so it either sees the outcome or is woken.
        let _ = self.outcome.set(outcome);
        self.notify.notify_waiters();
    }

    /// Waits for the flight's outcome.
    pub(crate) async fn outcome(&self) -> Outcome {
        loop {
            let notified = self.notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if let Some(outcome) = self.outcome.get() {
                return outcome.clone();
            }
            notified.await;
        }
    }
}

/// The map key: the flight itself, hashed and compared by its [`FlightKey`], so that the key
/// is stored once.
#[derive(Debug, Clone)]
struct FlightEntry(Arc<Flight>);

impl Hash for FlightEntry {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.key.hash(state)
    }
}

impl PartialEq for FlightEntry {
    fn eq(&self, other: &Self) -> bool {
        self.0.key == other.0.key
    }
}

impl Eq for FlightEntry {}

// A flight is looked up by its key without a count of its own: `FlightEntry` hashes and
// compares as its key does.
impl Borrow<FlightKey> for FlightEntry {
    fn borrow(&self) -> &FlightKey {
        &self.0.key
    }
}

/// Passes on the hash a [`FlightKey`] computed when it was made.
#[derive(Debug, Default, Clone, Copy)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is called (see `FlightKey`'s `Hash`); fold anything else in.
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }
}

type Shard = HashMap<FlightEntry, (), BuildHasherDefault<KeyHasher>>;

/// Shards of the in-flight map: a power of two, so a hash's top bits pick one.
const SHARDS: usize = 32;

/// The calls in flight of one service (and its clones).
///
/// Sharded sets behind `std` mutexes: every coalescible request locks one shard to enter
/// (insert its flight, or join the one there) and its leader locks it again to leave. Each
/// lock is held for one hash-set operation, never across an await, and requests for other
/// keys mostly meet other shards. A lock-free map (papaya) was measured first: a set whose
/// keys come and go with every request made it allocate an entry per insert, copy its table
/// as removed entries piled up and reclaim in batches, which cost several times the two
/// uncontended lock round trips that replace it.
#[derive(Debug)]
pub(crate) struct Flights {
    shards: Box<[CachePadded<Mutex<Shard>>]>,
    pub(crate) hasher: foldhash::fast::RandomState,
}

impl Default for Flights {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| CachePadded::default()).collect(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }
}

/// What a request became.
pub(crate) enum Role {
    /// It leads a new flight and must make the call.
    Leader(LeaderGuard),
    /// It waits for another request's flight.
    Follower(FollowerGuard),
}

impl Flights {
    fn shard(&self, key: &FlightKey) -> MutexGuard<'_, Shard> {
        let index = (key.hash_value() >> (u64::BITS - SHARDS.trailing_zeros())) as usize;
        // A panic while a shard was locked cannot leave a set half-changed (each critical
        // section is one set operation), so a poisoned shard is used as it is.
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Keys in flight now.
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

/// Makes `key`'s request the leader of a new flight, or a follower of the one in flight.
pub(crate) fn enter(config: &Arc<Config>, key: FlightKey) -> Role {
    let flight = Arc::new(Flight::new(key));
    let entry = FlightEntry(flight);
    {
        let mut shard = config.flights.shard(&entry.0.key);
        match shard.entry(entry.clone()) {
            Entry::Occupied(current) => {
                // Under the shard's lock the flight is still in the map, so its leader has
                // not closed it, and joining succeeds.
                if current.key().0.join() {
                    return Role::Follower(FollowerGuard {
                        flight: Arc::clone(&current.key().0),
                    });
                }
                // Not reached (see above); were it, the closed flight makes way for this one.
                current.remove_entry();
                shard.insert(entry.clone(), ());
            }
            Entry::Vacant(vacant) => {
                vacant.insert(());
            }
        }
    }
    config.counters.leader();
    Role::Leader(LeaderGuard {
        config: Arc::clone(config),
        flight: entry.0,
        in_map: true,
        published: false,
    })
}

/// The leader's hold on its flight. Dropped before the outcome is published (the caller went
/// away), it takes the flight out of the map and tells the followers to take over, so no key
/// is left behind and no follower waits for ever.
#[derive(Debug)]
pub(crate) struct LeaderGuard {
    config: Arc<Config>,
    flight: Arc<Flight>,
    in_map: bool,
    published: bool,
}

impl LeaderGuard {
    /// Takes the flight out of the map and closes it; whether followers are waiting. After
    /// this, an identical request starts a new flight.
    pub(crate) fn close(&mut self) -> bool {
        if self.in_map {
            self.in_map = false;
            let mut shard = self.config.flights.shard(&self.flight.key);
            if let Some((current, ())) = shard.remove_entry(&self.flight.key) {
                // Only this flight leaves: a newer one may hold the key.
                if !Arc::ptr_eq(&current.0, &self.flight) {
                    shard.insert(current, ());
                }
            }
            // Closed under the lock: a request that finds the key after this starts a new
            // flight, and none can join this one.
            let followers = self.flight.close();
            drop(shard);
            self.config.counters.landed();
            return followers;
        }
        self.flight.close()
    }

    /// Ends the flight for the followers.
    pub(crate) fn publish(&mut self, outcome: Outcome) {
        self.close();
        self.published = true;
        self.flight.publish(outcome);
    }

    /// Ends the flight with no follower to tell (after [`close`](Self::close) said none was
    /// waiting, none can join).
    pub(crate) fn finish(&mut self) {
        self.close();
        self.published = true;
    }
}

impl Drop for LeaderGuard {
    fn drop(&mut self) {
        if !self.published {
            self.publish(Outcome::Abandoned);
        }
    }
}

/// A follower's membership of a flight; leaving is counted when it is dropped.
#[derive(Debug)]
pub(crate) struct FollowerGuard {
    pub(crate) flight: Arc<Flight>,
}

impl Drop for FollowerGuard {
    fn drop(&mut self) {
        self.flight.leave();
    }
}
