//! [`CircuitBreakerLayer`] and its builder.

use std::sync::Arc;
use std::time::Duration;

use seawall_core::{
    ByHost, ConfigError, Global, HintPolicy, HttpClassifier, KeyExtractor, KeyLimits, KeyedMap,
    SingleState,
};
use tower::Layer;

use crate::backoff::OpenBackoff;
use crate::breaker::Breaker;
use crate::config::{Config, FigureKeys, TransitionListener, Window};
use crate::event::Transition;
use crate::handle::CircuitBreakerHandle;
use crate::service::{Breakers, CircuitBreaker};

/// Applies a circuit breaker to a service. Clones of the layer, and every service it wraps,
/// share the same breakers.
#[derive(Debug)]
pub struct CircuitBreakerLayer<C = HttpClassifier, X: KeyExtractor = Global> {
    pub(crate) classifier: C,
    extractor: X,
    pub(crate) breakers: Arc<Breakers<X::Key>>,
}

impl<C: Clone, X: KeyExtractor + Clone> Clone for CircuitBreakerLayer<C, X> {
    fn clone(&self) -> Self {
        Self {
            classifier: self.classifier.clone(),
            extractor: self.extractor.clone(),
            breakers: Arc::clone(&self.breakers),
        }
    }
}

impl CircuitBreakerLayer {
    /// A breaker with the default configuration (see [`Config`]'s `Default`).
    pub fn new() -> Self {
        match Self::builder().build() {
            Ok(layer) => layer,
            // The defaults are constants that validate; this arm is never taken.
            Err(_) => unreachable!("the default configuration is valid"),
        }
    }

    /// Starts a configuration from the defaults.
    pub fn builder() -> CircuitBreakerBuilder {
        CircuitBreakerBuilder {
            config: Config::default(),
            open: Ok(OpenBackoff::default()),
            key_limits: (10_000, Duration::from_secs(600)),
            classifier: HttpClassifier,
            extractor: Global,
            seed: None,
        }
    }
}

impl Default for CircuitBreakerLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<C, X: KeyExtractor> CircuitBreakerLayer<C, X> {
    /// A handle to read and change the state of the breakers.
    pub fn handle(&self) -> CircuitBreakerHandle<X::Key> {
        CircuitBreakerHandle::new(Arc::clone(&self.breakers))
    }
}

impl<S, C: Clone, X: KeyExtractor + Clone> Layer<S> for CircuitBreakerLayer<C, X> {
    type Service = CircuitBreaker<S, C, X>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::new(
            inner,
            self.classifier.clone(),
            self.extractor.clone(),
            Arc::clone(&self.breakers),
        )
    }
}

/// Configures a [`CircuitBreakerLayer`]; `build` validates and names any bad field.
pub struct CircuitBreakerBuilder<C = HttpClassifier, X = Global> {
    config: Config,
    open: Result<OpenBackoff, ConfigError>,
    key_limits: (usize, Duration),
    classifier: C,
    extractor: X,
    seed: Option<u64>,
}

impl<C, X> std::fmt::Debug for CircuitBreakerBuilder<C, X> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreakerBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<C, X> CircuitBreakerBuilder<C, X> {
    /// Trip after this many failures in a row (1 to 1,000,000; default 5).
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.config.consecutive_failures = Some(n);
        self
    }

    /// Do not trip on consecutive failures.
    pub fn no_consecutive_failures(mut self) -> Self {
        self.config.consecutive_failures = None;
        self
    }

    /// Trip when at least this percentage of the window's calls failed (above 0 to 100;
    /// default 50).
    pub fn failure_rate(mut self, percent: f64) -> Self {
        self.config.failure_rate = Some(percent);
        self
    }

    /// Do not trip on the failure rate.
    pub fn no_failure_rate(mut self) -> Self {
        self.config.failure_rate = None;
        self
    }

    /// Trip when at least `percent` of the window's calls took longer than `threshold`
    /// (time spent waiting in a rate limiter below excluded). Off by default. When on, one
    /// half-open probe that succeeds slowly reopens the breaker, as one failed probe does
    /// (stricter than Resilience4j, which weighs the probes' slow-call rate together).
    pub fn slow_calls(mut self, threshold: Duration, percent: f64) -> Self {
        self.config.slow_call = Some((threshold, percent));
        self
    }

    /// Rates over the last `n` calls (1 to 10,000; default 100).
    pub fn count_window(mut self, n: u32) -> Self {
        self.config.window = Window::Count(n);
        self
    }

    /// Rates over the calls of the last `duration` (100 ms to 1 h), sliding in `buckets`
    /// slices (2 to 1,000).
    pub fn time_window(mut self, duration: Duration, buckets: u32) -> Self {
        self.config.window = Window::Time { duration, buckets };
        self
    }

    /// No rate trips before the window holds this many calls (1 to the count window's size;
    /// default 20).
    pub fn minimum_calls(mut self, n: u32) -> Self {
        self.config.minimum_calls = n;
        self
    }

    /// Stay open this long after every trip (no growth, no jitter).
    pub fn open_duration(mut self, duration: Duration) -> Self {
        self.open = OpenBackoff::fixed(duration);
        self
    }

    /// Stay open `base` after a first trip, `multiplier` times longer after each further
    /// trip without closing in between, at most `max`, shortened by up to `jitter` (a
    /// fraction). Default: 60 s, ×2, 5 min, 0.2.
    pub fn open_backoff(
        mut self,
        base: Duration,
        max: Duration,
        multiplier: f64,
        jitter: f64,
    ) -> Self {
        self.open = OpenBackoff::exponential(base, max, multiplier, jitter);
        self
    }

    /// Whether a 503's `Retry-After` sets the open duration of the trip it causes (capped by
    /// the maximum open duration; default on).
    pub fn retry_after_sets_open(mut self, enabled: bool) -> Self {
        self.config.retry_after_sets_open = enabled;
        self
    }

    /// How server delays are bounded (see [`HintPolicy`]).
    pub fn hint_policy(mut self, policy: HintPolicy) -> Self {
        self.config.hint_policy = policy;
        self
    }

    /// How many probe calls a half-open breaker lets through (1 to 1,000; default 3).
    pub fn half_open_permits(mut self, n: u32) -> Self {
        self.config.half_open_permits = n;
        self
    }

    /// How many probes must succeed to close (1 to `half_open_permits`; default 3).
    pub fn half_open_successes(mut self, n: u32) -> Self {
        self.config.half_open_successes = n;
        self
    }

    /// Reopen when the probes have not decided within this (1 ms to 1 day; default 2 min).
    ///
    /// The breaker reopens at that deadline, whether or not a call comes then (the handle
    /// reads it open from that instant), and its open time counts from the deadline; a
    /// probe that answers later no longer counts. A call refused in half-open meanwhile is
    /// told to come back at the deadline plus that open time.
    pub fn half_open_max_wait(mut self, wait: Duration) -> Self {
        self.config.half_open_max_wait = wait;
        self
    }

    /// Whether a 429 counts as a failure (default: ignored, it is a rate signal).
    pub fn throttled_is_failure(mut self, enabled: bool) -> Self {
        self.config.throttled_is_failure = enabled;
        self
    }

    /// Hold at most this many per-key breakers (1 to 100,000,000; default 10,000). At the
    /// bound the least recently used tenth is dropped, breakers with calls in flight or not
    /// closed last.
    pub fn max_keys(mut self, n: usize) -> Self {
        self.key_limits.0 = n;
        self
    }

    /// Drop a per-key breaker unused for this long (1 s to 7 days; default 10 min).
    pub fn idle_after(mut self, idle: Duration) -> Self {
        self.key_limits.1 = idle;
        self
    }

    /// In a keyed layer's figures (see [`FigureSource`](seawall_core::FigureSource) on the
    /// handle), give their own series to at most the `n` keys with the most failures, beside
    /// the aggregate over every key that is always reported (0 to 1,000; default 10). The
    /// series count stays bounded however many hosts are called.
    pub fn figure_top_keys(mut self, n: usize) -> Self {
        self.config.figure_keys = FigureKeys::Top(n);
        self
    }

    /// In a keyed layer's figures, give every key held its own series, beside the
    /// aggregate: up to `max_keys` sets of series, so for a bounded, known set of keys.
    pub fn figure_every_key(mut self) -> Self {
        self.config.figure_keys = FigureKeys::All;
        self
    }

    /// Calls `listener` once for every state transition of every breaker.
    ///
    /// The listener lives as long as the breaker. A single (not keyed) breaker's requests
    /// reuse their thread's spare handle on it (see `seawall_core::held`), so after the
    /// layer is dropped another thread that ran its requests may keep the breaker, and the
    /// listener, until that thread next takes or puts back a handle on a single breaker or
    /// rate limiter, or exits.
    pub fn on_transition(
        mut self,
        listener: impl Fn(&Transition<'_>) + Send + Sync + 'static,
    ) -> Self {
        let listener: TransitionListener = Arc::new(listener);
        self.config.listeners.push(listener);
        self
    }

    /// Seeds the open-duration jitter, for reproducible tests.
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Classifies outcomes with `classifier` instead of the default HTTP rules.
    pub fn classifier<C2>(self, classifier: C2) -> CircuitBreakerBuilder<C2, X> {
        CircuitBreakerBuilder {
            config: self.config,
            open: self.open,
            key_limits: self.key_limits,
            classifier,
            extractor: self.extractor,
            seed: self.seed,
        }
    }

    /// Keeps one breaker per upstream (scheme and authority).
    pub fn per_host(self) -> CircuitBreakerBuilder<C, ByHost> {
        self.key_by(ByHost)
    }

    /// Keeps one breaker per key that `extractor` gives.
    pub fn key_by<X2>(self, extractor: X2) -> CircuitBreakerBuilder<C, X2> {
        CircuitBreakerBuilder {
            config: self.config,
            open: self.open,
            key_limits: self.key_limits,
            classifier: self.classifier,
            extractor,
            seed: self.seed,
        }
    }

    /// Validates the configuration.
    pub fn build(self) -> Result<CircuitBreakerLayer<C, X>, ConfigError>
    where
        X: KeyExtractor,
    {
        let mut config = self.config;
        config.open = self.open?;
        config.key_limits = KeyLimits::new(self.key_limits.0, self.key_limits.1)?;
        let config = Arc::new(config.validate()?);
        let seed = self.seed.unwrap_or_else(random_seed);
        let breakers = match self.extractor.single_key() {
            Some(key) => Breakers::Single(SingleState::new(Breaker::new(key, config, seed))),
            None => Breakers::Keyed {
                map: KeyedMap::new(config.key_limits),
                config,
                seed: crate::sync::AtomicU64::new(seed),
                retired: Arc::default(),
                reported: Default::default(),
            },
        };
        Ok(CircuitBreakerLayer {
            classifier: self.classifier,
            extractor: self.extractor,
            breakers: Arc::new(breakers),
        })
    }
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}
