//! One upstream call shared by identical requests, and the map of calls in flight.

use std::error::Error;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode, Version};
use tokio::sync::Notify;

use crate::key::FlightKey;
use crate::stats::Counters;

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
pub(crate) struct FlightEntry(pub(crate) Arc<Flight>);

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

/// The calls in flight of one service (and its clones).
///
/// A concurrent map: a leader inserts and removes its key without a lock, so a request that
/// finds no identical one in flight takes no lock anywhere.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    map: papaya::HashMap<FlightEntry, Arc<Flight>, foldhash::fast::RandomState>,
    pub(crate) hasher: foldhash::fast::RandomState,
}

/// What a request became.
pub(crate) enum Role {
    /// It leads a new flight and must make the call.
    Leader(LeaderGuard),
    /// It waits for another request's flight.
    Follower(FollowerGuard),
    /// It kept meeting closing flights; it makes its own call without coalescing.
    Alone,
}

impl Flights {
    /// Makes `key`'s request the leader of a new flight, or a follower of the one in flight.
    pub(crate) fn enter(self: &Arc<Self>, key: FlightKey, counters: &Arc<Counters>) -> Role {
        let flight = Arc::new(Flight::new(key));
        let map = self.map.pin();
        // A flight found closed has been taken out of the map already (its leader removes it
        // before closing it), so a second look finds a newer flight or none. The bound only
        // keeps a pathological interleaving from spinning.
        for _ in 0..8 {
            match map.try_insert(FlightEntry(Arc::clone(&flight)), Arc::clone(&flight)) {
                Ok(_) => {
                    counters.leader();
                    return Role::Leader(LeaderGuard {
                        flights: Arc::clone(self),
                        flight,
                        counters: Arc::clone(counters),
                        in_map: true,
                        published: false,
                    });
                }
                Err(occupied) => {
                    let current = Arc::clone(occupied.current);
                    if current.join() {
                        return Role::Follower(FollowerGuard { flight: current });
                    }
                }
            }
        }
        Role::Alone
    }

    /// Keys in flight now.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

/// The leader's hold on its flight. Dropped before the outcome is published (the caller went
/// away), it takes the flight out of the map and tells the followers to take over, so no key
/// is left behind and no follower waits for ever.
#[derive(Debug)]
pub(crate) struct LeaderGuard {
    flights: Arc<Flights>,
    flight: Arc<Flight>,
    counters: Arc<Counters>,
    in_map: bool,
    published: bool,
}

impl LeaderGuard {
    /// Takes the flight out of the map and closes it; whether followers are waiting. After
    /// this, an identical request starts a new flight.
    pub(crate) fn close(&mut self) -> bool {
        if self.in_map {
            self.in_map = false;
            // Only this flight: after a takeover, a newer flight may hold the key.
            let flight = &self.flight;
            let _ = self
                .flights
                .map
                .pin()
                .remove_if(&FlightEntry(Arc::clone(flight)), |_, v| {
                    Arc::ptr_eq(v, flight)
                });
            self.counters.landed();
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
