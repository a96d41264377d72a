//! [`CircuitBreakerHandle`]: read and steer breakers from outside the request path.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use crate::event::State;
use crate::service::Breakers;
use crate::sync::Ordering;
use crate::window::WindowTotals;

/// Reads and changes the state of a layer's breakers. Cheap to clone.
pub struct CircuitBreakerHandle<K> {
    breakers: Arc<Breakers<K>>,
}

impl<K> Clone for CircuitBreakerHandle<K> {
    fn clone(&self) -> Self {
        Self {
            breakers: Arc::clone(&self.breakers),
        }
    }
}

impl<K: fmt::Debug + Hash + Eq + Clone> fmt::Debug for CircuitBreakerHandle<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerHandle")
            .field("breakers", &self.breakers)
            .finish()
    }
}

/// One breaker's figures, for the metrics layer and for dashboards.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerStats<K> {
    /// The breaker's key (`()` for a single breaker).
    pub key: K,
    /// Its state now.
    pub state: State,
    /// The window's totals now.
    pub window: WindowTotals,
    /// Calls that succeeded.
    pub successes: u64,
    /// Calls that failed.
    pub failures: u64,
    /// Calls slower than the slow-call threshold.
    pub slow: u64,
    /// Calls whose outcome said nothing (cancelled, 429, refused below).
    pub ignored: u64,
    /// Calls refused because the breaker was open.
    pub rejected: u64,
    /// State transitions so far.
    pub transitions: u64,
    /// Half-open probe permits not yet handed out.
    pub probe_permits_left: u32,
}

impl<K: fmt::Debug + Hash + Eq + Clone> CircuitBreakerHandle<K> {
    pub(crate) fn new(breakers: Arc<Breakers<K>>) -> Self {
        Self { breakers }
    }

    /// The state of `key`'s breaker; a key not seen yet is closed.
    pub fn state(&self, key: &K) -> State {
        match &*self.breakers {
            Breakers::Single(breaker) => breaker.state(),
            Breakers::Keyed { map, .. } => map.get(key).map_or(State::Closed, |b| b.state()),
        }
    }

    /// Rejects every call for `key` until the state is changed again.
    pub fn force_open(&self, key: &K) {
        self.breakers.breaker(key).force(State::ForcedOpen);
    }

    /// Opens `key`'s breaker now, as if it had tripped (it will probe after the open time).
    pub fn trip(&self, key: &K) {
        self.breakers.breaker(key).force(State::Open);
    }

    /// Lets every call for `key` through and records nothing.
    pub fn disable(&self, key: &K) {
        self.breakers.breaker(key).force(State::Disabled);
    }

    /// Records `key`'s calls but never opens.
    pub fn metrics_only(&self, key: &K) {
        self.breakers.breaker(key).force(State::MetricsOnly);
    }

    /// Closes `key`'s breaker with an empty window and a fresh trip count.
    pub fn reset(&self, key: &K) {
        self.breakers.breaker(key).force(State::Closed);
    }

    /// The figures of every breaker held.
    pub fn stats(&self) -> Vec<BreakerStats<K>> {
        let mut all = Vec::new();
        let mut push = |breaker: &crate::breaker::Breaker<K>| {
            let c = &breaker.counters;
            all.push(BreakerStats {
                key: breaker.key().clone(),
                state: breaker.state(),
                window: breaker.totals(),
                successes: breaker.successes(),
                failures: c.failures.load(Ordering::Relaxed),
                slow: c.slow.load(Ordering::Relaxed),
                ignored: c.ignored.load(Ordering::Relaxed),
                rejected: c.rejected.load(Ordering::Relaxed),
                transitions: c.transitions.load(Ordering::Relaxed),
                probe_permits_left: breaker.permits_left(),
            });
        };
        match &*self.breakers {
            Breakers::Single(breaker) => push(breaker),
            Breakers::Keyed { map, .. } => map.for_each(|_, breaker| push(breaker)),
        }
        all
    }

    /// How many breakers are held (1 for a single breaker).
    pub fn len(&self) -> usize {
        match &*self.breakers {
            Breakers::Single(_) => 1,
            Breakers::Keyed { map, .. } => map.len(),
        }
    }

    /// Whether no breaker is held yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The labels of one breaker's figure: `key` (left out when the layer is not keyed), then
/// `extra`.
fn key_labels<'a>(
    key: &'a str,
    extra: Option<(&'static str, &'a str)>,
) -> Vec<(&'static str, &'a str)> {
    let mut labels = Vec::with_capacity(2);
    if !key.is_empty() {
        labels.push(("key", key));
    }
    labels.extend(extra);
    labels
}

impl<K> seawall_core::FigureSource for CircuitBreakerHandle<K>
where
    K: fmt::Debug + Hash + Eq + Clone + seawall_core::KeyLabel + Send + Sync,
{
    fn figures(&self, visit: &mut dyn FnMut(seawall_core::Figure<'_>)) {
        use seawall_core::figures::{counter, gauge};
        let stats: Vec<(String, BreakerStats<K>)> = self
            .stats()
            .into_iter()
            .map(|stats| (stats.key.label(), stats))
            .collect();
        for (key, s) in &stats {
            for state in State::ALL {
                let value = if s.state == state { 1.0 } else { 0.0 };
                visit(gauge(
                    "seawall_circuit_breaker_state",
                    "Circuit breaker state: 1 for the current state, 0 for the others.",
                    &key_labels(key, Some(("state", state.as_str()))),
                    value,
                ));
            }
        }
        for (key, s) in &stats {
            for (outcome, n) in [
                ("success", s.successes),
                ("failure", s.failures),
                ("ignored", s.ignored),
            ] {
                visit(counter(
                    "seawall_circuit_breaker_calls",
                    "Calls whose outcome the breaker recorded, by outcome.",
                    &key_labels(key, Some(("outcome", outcome))),
                    n,
                ));
            }
        }
        type PerKey<K> = (&'static str, &'static str, fn(&BreakerStats<K>) -> u64);
        let per_key: [PerKey<K>; 3] = [
            (
                "seawall_circuit_breaker_slow_calls",
                "Calls slower than the slow-call threshold.",
                |s| s.slow,
            ),
            (
                "seawall_circuit_breaker_rejected",
                "Calls refused because the breaker was open.",
                |s| s.rejected,
            ),
            (
                "seawall_circuit_breaker_transitions",
                "State transitions.",
                |s| s.transitions,
            ),
        ];
        for (name, help, value) in per_key {
            for (key, s) in &stats {
                visit(counter(name, help, &key_labels(key, None), value(s)));
            }
        }
    }
}
