//! Where quota state lives: in this process (the default) or in a shared store such as Redis
//! (`seawall-rate-limit-redis`), behind one trait so the layer's waiting, priorities and
//! queue bounds work the same with either.

use std::fmt;
use std::future::{Future, Ready, ready};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::gcra::{GcraCells, Refusal};
use crate::quota::Quota;

/// A store's answer to one admission attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The request's tokens were taken: send it.
    Admitted,
    /// Not now: every quota would admit it after this long (nothing was taken).
    Wait(Duration),
    /// The request's cost exceeds a quota's burst; waiting will never admit it.
    Oversize,
}

/// The store could not answer (for example a shared store is unreachable).
#[derive(Debug, Clone)]
pub struct StoreError {
    message: Arc<str>,
}

impl StoreError {
    /// A store error saying `message`.
    pub fn new(message: impl Into<Arc<str>>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rate-limit store unavailable: {}", self.message)
    }
}

impl std::error::Error for StoreError {}

/// A refund of a settled request (see [`RateStore::refund`]): the tokens it was admitted
/// for, those it turned out not to need, and when it was admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refund {
    /// The tokens the request was admitted for.
    pub estimate: u32,
    /// The tokens to give back (at most `estimate`).
    pub tokens: u32,
    /// When the request was admitted, on the limiter's clock.
    pub admitted: Instant,
}

impl Refund {
    /// The tokens of the refund that `quota` still holds at `now`. A rate quota's schedule
    /// moved `estimate` intervals ahead of the admission for it; once the clock has passed
    /// that, the quota has refilled them whatever the request cost. A window holds them
    /// until the admission leaves it.
    pub fn held_by(&self, quota: &Quota, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.admitted).as_nanos();
        if quota.is_window() {
            return if since < u128::from(quota.window_nanos()) {
                u64::from(self.tokens)
            } else {
                0
            };
        }
        let interval = u128::from(quota.interval_nanos().max(1));
        let ahead = (interval * u128::from(self.estimate)).saturating_sub(since);
        // Whole tokens only: a part of one given back would be a part too many.
        let held = ahead / interval;
        u64::try_from(held.min(u128::from(self.tokens))).unwrap_or(0)
    }

    /// The tokens of the refund that every one of `quotas` still holds at `now`: what a store
    /// that settles all of a key's quotas by one figure may give back.
    pub fn held_by_all(&self, quotas: &[Quota], now: Instant) -> u64 {
        quotas
            .iter()
            .map(|quota| self.held_by(quota, now))
            .min()
            .unwrap_or(0)
    }
}

/// Keeps quota state and takes tokens from it.
///
/// The layer keeps one [`Slot`](RateStore::Slot) per key in its own bounded map, so a store
/// needs no map of its own: the in-process store's slot is the GCRA state itself, a shared
/// store's slot is the name of its remote key.
pub trait RateStore: Send + Sync + 'static {
    /// Per-key state the layer keeps for this store.
    type Slot: Send + Sync + 'static;
    /// The answer to one attempt. The in-process store answers at once (`Ready`).
    type Future: Future<Output = Result<Decision, StoreError>> + Send + 'static;

    /// A slot for a key seen for the first time; `key` is its `Debug` rendering, for stores
    /// that name remote state after it.
    fn new_slot(&self, key: &dyn fmt::Debug) -> Self::Slot;

    /// Takes `cost` tokens from every quota for `slot`, or says how long until it could.
    /// `now` is the local time of the attempt (a store with its own clock may ignore it).
    fn acquire(&self, slot: &Self::Slot, quotas: &[Quota], cost: u32, now: Instant)
    -> Self::Future;

    /// How long after `now` `cost` could be taken, without taking it, if the store can tell
    /// without a round trip. The queue's hand-off uses it to time the next waiter exactly, so
    /// it must be computed from the `now` given, not from a fresh reading of the clock.
    fn peek(
        &self,
        _slot: &Self::Slot,
        _quotas: &[Quota],
        _cost: u32,
        _now: Instant,
    ) -> Option<Duration> {
        None
    }

    /// How long after `now` the store would have admitted `tokens` more tokens, taken one
    /// request after another as soon as the quotas allow and no earlier than `from`, without
    /// taking anything, if the store can tell without a round trip: the wait a queue's last
    /// waiter is promised against `max_wait`. `tokens` may exceed a quota's burst.
    fn predict(
        &self,
        _slot: &Self::Slot,
        _quotas: &[Quota],
        _tokens: u64,
        _now: Instant,
        _from: Instant,
    ) -> Option<Duration> {
        None
    }

    /// How many admissions for `slot` are out with the store, not yet answered (a shared
    /// store's round trips). The limiter counts them toward `max_waiting`, as it counts the
    /// requests waiting in line; a store that answers at once has none.
    fn pending(&self, _slot: &Self::Slot) -> usize {
        0
    }

    /// Whether a slot holds nothing worth keeping (its key may be dropped without changing
    /// any future decision).
    fn is_idle(&self, _slot: &Self::Slot) -> bool {
        false
    }

    /// Settles a request after its answer: `delta` more tokens taken from every quota for
    /// `slot` (the request cost more than it was admitted for; the next admissions wait for
    /// the difference), or, if negative, given back. A shared store may send it in the
    /// background; the default does nothing.
    fn settle(&self, _slot: &Self::Slot, _quotas: &[Quota], _delta: i64, _now: Instant) {}

    /// Gives back `tokens` of a request admitted at `admitted` for `estimate` tokens that
    /// cost less. Only what the request still holds is given back: tokens the quota has
    /// refilled since (a rate quota past `admitted + estimate × interval`, a window past
    /// `admitted + period`) were spent by later requests, and giving them back would admit
    /// more than the quota. The default takes the fewest tokens that every quota still holds
    /// of it and gives them back through [`settle`](Self::settle).
    fn refund(&self, slot: &Self::Slot, quotas: &[Quota], refund: Refund, now: Instant) {
        let held = refund.held_by_all(quotas, now);
        if held > 0 {
            self.settle(slot, quotas, -i64::try_from(held).unwrap_or(i64::MAX), now);
        }
    }

    /// How many tokens every quota would admit for `slot` at `now`, if the store can tell
    /// without a round trip.
    fn available(&self, _slot: &Self::Slot, _quotas: &[Quota], _now: Instant) -> Option<u64> {
        None
    }

    /// Refuses, when the layer is built, quotas this store cannot keep (say, more than it
    /// was made for).
    fn check_quotas(&self, _quotas: &[Quota]) -> Result<(), seawall_core::ConfigError> {
        Ok(())
    }
}

/// The default store: GCRA cells in this process, lock-free.
#[derive(Debug, Clone)]
pub struct InMemoryStore {
    /// The clock of the limiter it serves, which that limiter's layer sets when built: the
    /// store reads it to tell an idle key.
    clock: seawall_core::Clock,
    origin: Instant,
    quotas: usize,
}

impl InMemoryStore {
    /// A store for limiters with `quotas` quotas, timed from now (tokio's clock, so tests can
    /// pause it).
    pub fn new(quotas: usize) -> Self {
        Self {
            clock: seawall_core::Clock::default(),
            origin: Instant::now(),
            quotas,
        }
    }

    /// The store on `clock`, timed from now on it.
    pub(crate) fn on_clock(self, clock: seawall_core::Clock) -> Self {
        Self {
            origin: clock.now(),
            clock,
            ..self
        }
    }

    fn nanos(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The decision at `now`, synchronously.
    pub fn decide(&self, slot: &GcraCells, quotas: &[Quota], cost: u32, now: Instant) -> Decision {
        let now = self.nanos(now);
        match slot.try_take(quotas, cost, now) {
            Ok(()) => Decision::Admitted,
            Err(Refusal::Oversize) => Decision::Oversize,
            Err(Refusal::Until(at)) => Decision::Wait(Duration::from_nanos(at.saturating_sub(now))),
        }
    }
}

impl RateStore for InMemoryStore {
    type Slot = GcraCells;
    type Future = Ready<Result<Decision, StoreError>>;

    fn new_slot(&self, _key: &dyn fmt::Debug) -> GcraCells {
        GcraCells::new(self.quotas)
    }

    // Inlined across crates, so that the caller takes the decision from registers: built
    // here in memory and copied on at once as a wider value, it cost a store-forwarding stall.
    #[inline]
    fn acquire(&self, slot: &GcraCells, quotas: &[Quota], cost: u32, now: Instant) -> Self::Future {
        ready(Ok(self.decide(slot, quotas, cost, now)))
    }

    fn peek(
        &self,
        slot: &GcraCells,
        quotas: &[Quota],
        cost: u32,
        now: Instant,
    ) -> Option<Duration> {
        let now = self.nanos(now);
        match slot.earliest(quotas, cost, now) {
            Refusal::Until(at) => Some(Duration::from_nanos(at.saturating_sub(now))),
            Refusal::Oversize => None,
        }
    }

    fn predict(
        &self,
        slot: &GcraCells,
        quotas: &[Quota],
        tokens: u64,
        now: Instant,
        from: Instant,
    ) -> Option<Duration> {
        let at = slot.predict(quotas, tokens, self.nanos(from.max(now)));
        Some(Duration::from_nanos(at.saturating_sub(self.nanos(now))))
    }

    fn settle(&self, slot: &GcraCells, quotas: &[Quota], delta: i64, now: Instant) {
        slot.settle(quotas, delta, self.nanos(now));
    }

    /// Each quota gives back what it still holds of the request, a window from the newest
    /// admissions no later than the request's (its own and older ones, never later ones,
    /// which would leave the window later).
    fn refund(&self, slot: &GcraCells, quotas: &[Quota], refund: Refund, now: Instant) {
        slot.refund(
            quotas,
            |quota| refund.held_by(quota, now),
            self.nanos(refund.admitted),
            self.nanos(now),
        );
    }

    fn available(&self, slot: &GcraCells, quotas: &[Quota], now: Instant) -> Option<u64> {
        Some(slot.available(quotas, self.nanos(now)))
    }

    fn is_idle(&self, slot: &GcraCells) -> bool {
        slot.is_idle(self.nanos(self.clock.now()))
    }

    /// A store made for fewer quotas than the layer has would silently enforce only the
    /// first of them.
    fn check_quotas(&self, quotas: &[Quota]) -> Result<(), seawall_core::ConfigError> {
        if self.quotas < quotas.len() {
            return Err(seawall_core::ConfigError::new(
                "store",
                self.quotas,
                "an `InMemoryStore::new(n)` with n at least the number of quotas",
            ));
        }
        Ok(())
    }
}
