//! [`CircuitBreakerHandle`]: read and steer breakers from outside the request path.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use crate::config::FigureKeys;
use crate::event::State;
use crate::service::Breakers;
use crate::sync::Ordering;
use crate::window::WindowTotals;

/// Reads and changes the state of a layer's breakers. Cheap to clone.
pub struct CircuitBreakerHandle<K: Send + Sync + 'static> {
    breakers: Arc<Breakers<K>>,
}

impl<K: Send + Sync + 'static> Clone for CircuitBreakerHandle<K> {
    fn clone(&self) -> Self {
        Self {
            breakers: Arc::clone(&self.breakers),
        }
    }
}

impl<K: fmt::Debug + Hash + Eq + Clone + Send + Sync + 'static> fmt::Debug
    for CircuitBreakerHandle<K>
{
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
    /// Transitions to open so far (trips, the manual [`trip`](CircuitBreakerHandle::trip)
    /// included; a forced open is not one).
    pub trips: u64,
    /// Half-open probe permits not yet handed out.
    pub probe_permits_left: u32,
}

impl<K: fmt::Debug + Hash + Eq + Clone + Send + Sync + 'static> CircuitBreakerHandle<K> {
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
                trips: c.trips.load(Ordering::Relaxed),
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

/// The labels of one series: `key` (left out for the aggregate and when the layer is not
/// keyed), then `extra`.
fn key_labels<'a>(
    key: Option<&'a str>,
    extra: Option<(&'static str, &'a str)>,
) -> Vec<(&'static str, &'a str)> {
    let mut labels = Vec::with_capacity(2);
    labels.extend(key.filter(|key| !key.is_empty()).map(|key| ("key", key)));
    labels.extend(extra);
    labels
}

/// The figures of one series: one breaker, or the aggregate over every key.
#[derive(Debug, Default)]
struct Series {
    /// The key's label; `None` for the aggregate.
    key: Option<String>,
    /// Breakers in each state of [`State::ALL`] (0 or 1 for one breaker).
    states: [u64; State::ALL.len()],
    successes: u64,
    failures: u64,
    ignored: u64,
    slow: u64,
    rejected: u64,
    transitions: u64,
    trips: u64,
}

impl Series {
    fn add<K>(&mut self, stats: &BreakerStats<K>) {
        if let Some(index) = State::ALL.iter().position(|state| *state == stats.state) {
            self.states[index] += 1;
        }
        self.successes += stats.successes;
        self.failures += stats.failures;
        self.ignored += stats.ignored;
        self.slow += stats.slow;
        self.rejected += stats.rejected;
        self.transitions += stats.transitions;
        self.trips += stats.trips;
    }

    fn of<K>(key: Option<String>, stats: &BreakerStats<K>) -> Self {
        let mut series = Series {
            key,
            ..Series::default()
        };
        series.add(stats);
        series
    }
}

impl<K> CircuitBreakerHandle<K>
where
    K: fmt::Debug + Hash + Eq + Clone + seawall_core::KeyLabel + Send + Sync + 'static,
{
    /// The series to report: a single breaker's own; for a keyed layer the aggregate over
    /// every key, then the keys the configuration names, most failures first.
    fn series(&self) -> Vec<Series> {
        let (figure_keys, retired, reported) = match &*self.breakers {
            Breakers::Single(_) => {
                return self
                    .stats()
                    .iter()
                    .map(|stats| Series::of(Some(stats.key.label()), stats))
                    .collect();
            }
            Breakers::Keyed {
                config,
                retired,
                reported,
                ..
            } => (config.figure_keys, retired, reported),
        };
        // The keys dropped so far still count, so that the aggregate's counters never go
        // down; its state gauge counts the breakers held. The dropped ones are read before
        // the held ones: a breaker is dropped only after it left the map, so one read among
        // the dropped is not met again among the held (read the other way round, a breaker
        // dropped in between would count twice).
        let mut aggregate = Series {
            successes: retired.successes.load(Ordering::Acquire),
            failures: retired.failures.load(Ordering::Acquire),
            ignored: retired.ignored.load(Ordering::Acquire),
            slow: retired.slow.load(Ordering::Acquire),
            rejected: retired.rejected.load(Ordering::Acquire),
            transitions: retired.transitions.load(Ordering::Acquire),
            trips: retired.trips.load(Ordering::Acquire),
            ..Series::default()
        };
        let mut all = self.stats();
        for stats in &all {
            aggregate.add(stats);
        }
        // A dropped breaker's counts reach `retired` only when the map frees its entry, which
        // can be a while after the entry left the map; until then the aggregate reports what
        // it last did rather than go down.
        for (last, now) in [
            (&reported.successes, &mut aggregate.successes),
            (&reported.failures, &mut aggregate.failures),
            (&reported.ignored, &mut aggregate.ignored),
            (&reported.slow, &mut aggregate.slow),
            (&reported.rejected, &mut aggregate.rejected),
            (&reported.transitions, &mut aggregate.transitions),
            (&reported.trips, &mut aggregate.trips),
        ] {
            *now = last.fetch_max(*now, Ordering::Relaxed).max(*now);
        }
        let shown = match figure_keys {
            FigureKeys::Top(n) => n.min(all.len()),
            FigureKeys::All => all.len(),
        };
        let most_failures_first =
            |a: &BreakerStats<K>, b: &BreakerStats<K>| b.failures.cmp(&a.failures);
        if shown > 0 && shown < all.len() {
            all.select_nth_unstable_by(shown - 1, most_failures_first);
        }
        all.truncate(shown);
        // A key whose label is empty would report the aggregate's series again: it counts in
        // the aggregate only.
        let mut keys: Vec<Series> = all
            .iter()
            .map(|stats| Series::of(Some(stats.key.label()), stats))
            .filter(|series| series.key.as_deref().is_some_and(|key| !key.is_empty()))
            .collect();
        keys.sort_by(|a, b| b.failures.cmp(&a.failures).then_with(|| a.key.cmp(&b.key)));
        std::iter::once(aggregate).chain(keys).collect()
    }
}

impl<K> seawall_core::FigureSource for CircuitBreakerHandle<K>
where
    K: fmt::Debug + Hash + Eq + Clone + seawall_core::KeyLabel + Send + Sync + 'static,
{
    /// A single breaker's figures carry no `key` label. A keyed layer reports the aggregate
    /// over every key without a `key` label (its state gauge counts the breakers in each
    /// state), then, with a `key` label, the keys with the most failures (see
    /// [`figure_top_keys`](crate::CircuitBreakerBuilder::figure_top_keys)) or every key (see
    /// [`figure_every_key`](crate::CircuitBreakerBuilder::figure_every_key)), most failures
    /// first.
    fn figures(&self, visit: &mut dyn FnMut(seawall_core::Figure<'_>)) {
        use seawall_core::figures::{counter, gauge};
        let series = self.series();
        for s in &series {
            for (index, state) in State::ALL.into_iter().enumerate() {
                visit(gauge(
                    "seawall_circuit_breaker_state",
                    "Circuit breaker state: 1 for the current state, 0 for the others; without a key, the number of breakers in each state.",
                    &key_labels(s.key.as_deref(), Some(("state", state.as_str()))),
                    s.states[index] as f64,
                ));
            }
        }
        for s in &series {
            for (outcome, n) in [
                ("success", s.successes),
                ("failure", s.failures),
                ("ignored", s.ignored),
            ] {
                visit(counter(
                    "seawall_circuit_breaker_calls",
                    "Calls whose outcome the breaker recorded, by outcome.",
                    &key_labels(s.key.as_deref(), Some(("outcome", outcome))),
                    n,
                ));
            }
        }
        type PerSeries = (&'static str, &'static str, fn(&Series) -> u64);
        let per_series: [PerSeries; 4] = [
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
            (
                "seawall_circuit_breaker_trips",
                "Transitions to open.",
                |s| s.trips,
            ),
        ];
        for (name, help, value) in per_series {
            for s in &series {
                visit(counter(
                    name,
                    help,
                    &key_labels(s.key.as_deref(), None),
                    value(s),
                ));
            }
        }
    }
}
