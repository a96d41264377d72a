//! [`RateLimitLayer`] and its builder.

use std::sync::Arc;
use std::time::Duration;

use seawall_core::{
    ByHost, Clock, ConfigError, Global, HintPolicy, KeyExtractor, KeyLimits, check_range,
};
use tower::Layer;

use crate::limiter::{Limiter, Mode, OnWait, Options, Settle, TierOf, Tiers};
use crate::quota::Quota;
use crate::service::RateLimit;
use crate::store::{InMemoryStore, RateStore};

/// Applies a rate limit to a service. Clones of the layer, and every service it wraps (and
/// their clones), share one limiter: a hundred clones of a client share one quota.
pub struct RateLimitLayer<X: KeyExtractor = Global, St: RateStore = InMemoryStore> {
    pub(crate) extractor: X,
    pub(crate) limiter: Arc<Limiter<X::Key, St>>,
}

impl<X: KeyExtractor + std::fmt::Debug, St: RateStore> std::fmt::Debug for RateLimitLayer<X, St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("extractor", &self.extractor)
            .field("limiter", &self.limiter)
            .finish()
    }
}

impl<X: KeyExtractor + Clone, St: RateStore> Clone for RateLimitLayer<X, St> {
    fn clone(&self) -> Self {
        Self {
            extractor: self.extractor.clone(),
            limiter: Arc::clone(&self.limiter),
        }
    }
}

impl RateLimitLayer {
    /// Starts a configuration: add at least one quota, e.g. `.per_second(10)`.
    pub fn builder() -> RateLimitBuilder {
        RateLimitBuilder {
            quotas: Vec::new(),
            error: None,
            mode: Mode::Wait {
                max_waiting: 10_000,
                max_wait: Duration::from_secs(60),
            },
            hints: Some(HintPolicy::default()),
            key_limits: (10_000, Duration::from_secs(600)),
            extractor: Global,
            store: None,
            tiers: Vec::new(),
            tier_of: None,
            on_wait: None,
            settle: None,
            aging: None,
            adaptive: false,
            figure_top_keys: DEFAULT_FIGURE_TOP_KEYS,
            clock: Clock::default(),
        }
    }
}

impl<X: KeyExtractor, St: RateStore> RateLimitLayer<X, St> {
    /// A handle to read the limiter's figures and pause keys.
    pub fn handle(&self) -> crate::RateLimitHandle<X::Key, St> {
        crate::RateLimitHandle::new(Arc::clone(&self.limiter))
    }
}

impl<S, X: KeyExtractor + Clone, St: RateStore> Layer<S> for RateLimitLayer<X, St> {
    type Service = RateLimit<S, X, St>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(inner, self.extractor.clone(), Arc::clone(&self.limiter))
    }
}

/// The keys a keyed layer reports figures for by default (see
/// [`RateLimitBuilder::figure_top_keys`]).
pub const DEFAULT_FIGURE_TOP_KEYS: usize = 10;

/// The most keys [`RateLimitBuilder::figure_top_keys`] accepts.
const MAX_FIGURE_TOP_KEYS: usize = 1_000;

/// Configures a [`RateLimitLayer`]; `build` validates and names any bad field.
pub struct RateLimitBuilder<X = Global, St = InMemoryStore> {
    quotas: Vec<Quota>,
    error: Option<ConfigError>,
    mode: Mode,
    hints: Option<HintPolicy>,
    key_limits: (usize, Duration),
    extractor: X,
    store: Option<St>,
    tiers: Vec<(Box<str>, Vec<Quota>)>,
    /// A [`TierOf`] of the key type of the extractor it was given with.
    tier_of: Option<Box<dyn std::any::Any + Send + Sync>>,
    on_wait: Option<OnWait>,
    settle: Option<Settle>,
    aging: Option<Duration>,
    adaptive: bool,
    figure_top_keys: usize,
    clock: Clock,
}

impl<X: std::fmt::Debug, St: std::fmt::Debug> std::fmt::Debug for RateLimitBuilder<X, St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitBuilder")
            .field("quotas", &self.quotas)
            .field("error", &self.error)
            .field("mode", &self.mode)
            .field("hints", &self.hints)
            .field("key_limits", &self.key_limits)
            .field("extractor", &self.extractor)
            .field("store", &self.store)
            .field("tiers", &self.tiers)
            .field("tier_of", &self.tier_of.is_some())
            .field("on_wait", &self.on_wait.is_some())
            .field("settle", &self.settle)
            .field("aging", &self.aging)
            .field("adaptive", &self.adaptive)
            .field("figure_top_keys", &self.figure_top_keys)
            .field("clock", &self.clock)
            .finish()
    }
}

impl<X, St> RateLimitBuilder<X, St> {
    fn push(mut self, quota: Result<Quota, ConfigError>) -> Self {
        match quota {
            Ok(quota) => self.quotas.push(quota),
            Err(error) => {
                self.error.get_or_insert(error);
            }
        }
        self
    }

    /// Adds a quota of `n` requests per second (several quotas must all admit).
    pub fn per_second(self, n: u32) -> Self {
        self.push(Quota::per_second(n))
    }

    /// Adds a quota of `n` requests per minute.
    pub fn per_minute(self, n: u32) -> Self {
        self.push(Quota::per_minute(n))
    }

    /// Adds a quota of `n` requests per hour.
    pub fn per_hour(self, n: u32) -> Self {
        self.push(Quota::per_hour(n))
    }

    /// Adds a quota of `n` requests per `period`.
    pub fn per(self, n: u32, period: Duration) -> Self {
        self.push(Quota::per(n, period))
    }

    /// Adds a window quota: at most `n` requests in any interval of length `period` (see
    /// [`Quota::window`]; `n` from 1 to 100,000).
    ///
    /// Pick a window when the server counts "at most `n` in any minute" and refuses the
    /// excess: a GCRA quota of `n` per minute with burst `b` lets up to `b + n - 1` through in
    /// some 60 s (`b` at once, then one every `60 / n` s), which such a server partly
    /// refuses. Pick GCRA (`per_minute`) when requests should be spread evenly: a window
    /// lets its whole count go at once, then waits for the oldest to leave it.
    pub fn window(self, n: u32, period: Duration) -> Self {
        self.push(Quota::window(n, period))
    }

    /// Adds a quota built by hand.
    pub fn quota(self, quota: Quota) -> Self {
        self.push(Ok(quota))
    }

    /// Lets the most recently added quota admit up to `burst` requests back to back.
    pub fn burst(mut self, burst: u32) -> Self {
        match self.quotas.pop() {
            Some(last) => self.push(last.burst(burst)),
            None => {
                self.error.get_or_insert(ConfigError::new(
                    "burst",
                    burst,
                    "a burst given after the quota it applies to",
                ));
                self
            }
        }
    }

    /// Adds a tier: a named set of quotas (1 to 8) that keys the resolver given to
    /// [`tier_of`](Self::tier_of) names take instead of the layer's own quotas, each key
    /// with cells of its own as usual (`free` 10 a minute, `pro` 1,000 a minute, ...). At
    /// most 254 tiers.
    pub fn tier(
        mut self,
        name: impl Into<Box<str>>,
        quotas: impl IntoIterator<Item = Quota>,
    ) -> Self {
        self.tiers.push((name.into(), quotas.into_iter().collect()));
        self
    }

    /// Settles each request's cost after its answer (token budgets, where the true cost is
    /// known only then): the response's [`ActualCost`](crate::ActualCost), else the number
    /// in the `header` given (if any), replaces the request's [`Cost`](crate::Cost); the
    /// difference is taken from its key's quotas (the next admissions wait for it, beyond the
    /// burst if need be, but never longer than the hint policy's `max_delay` or one full
    /// refill of the quota, whichever is longer: an absurd figure is clamped, with a warning
    /// in the `tracing` log) or given back, as far as the quotas still hold it: a rate
    /// quota the tokens it has not refilled since the admission, a window those of the
    /// request's own admission (or older ones) while it is in the window.
    /// A response with neither keeps its estimate; a cost known later still is settled with
    /// [`RateLimitHandle::settle`](crate::RateLimitHandle::settle).
    pub fn settle_costs(mut self, header: Option<http::HeaderName>) -> Self {
        self.settle = Some(Settle { header });
        self
    }

    /// Adapts each key's rate to what its server accepts, for servers whose limit is unknown
    /// or lower than the quotas (CUBIC, as the AWS SDKs' adaptive retry mode): a 429, or
    /// quota-exhausted headers, with no usable reset cuts the key's rate to 0.7 of the rate it
    /// was achieving; each answer after that moves it along a cubic curve of the time since
    /// the cut, back toward that rate, reached about `cbrt(0.75 × rate)` seconds later, then
    /// beyond; never above twice the rate of answers measured, nor above the slowest of the
    /// key's quotas. A throttle that comes once the rate in force has passed that rate,
    /// probing beyond, means the probe went too far but the rate that worked still holds: it
    /// cuts to 0.85 only (the SDKs cut to 0.7 each time), and the curve is back about
    /// `cbrt(0.375 × rate)` seconds later. With that, and a waiter woken up to 2 ms late
    /// keeping its place in the pace, a key against a fixed limit with no burst gets 0.92 of
    /// the limit where the SDKs' way gets 0.88 (the `adaptive` bench). Until the first such
    /// answer the quotas alone pace the key. A
    /// `Retry-After` or reset still pauses the key and does not cut its rate. The rate in
    /// force is [`RateLimitHandle::current_rate`](crate::RateLimitHandle::current_rate). It is
    /// this process's: with a shared store, each process adapts on its own.
    pub fn adaptive(mut self) -> Self {
        self.adaptive = true;
        self
    }

    /// Ages priorities so that no waiter starves: each [`Priority`](crate::Priority) level
    /// is worth `max_age / 255` of waiting, so a waiter is never overtaken by one that joins
    /// more than `max_age` after it (1 ms to 1 day), whatever their priorities. A waiter of
    /// priority `p` still goes ahead of a lower one `q` that joined up to
    /// `(p - q) / 255 × max_age` before it. Without it (the default) priorities are strict.
    /// With it, each request that joins the queue walks it once to count the tokens ahead.
    pub fn priority_aging(mut self, max_age: Duration) -> Self {
        if let Err(error) = check_range(
            "priority_aging",
            max_age,
            Duration::from_millis(1),
            Duration::from_secs(86_400),
            "a duration from 1 ms to 1 day",
        ) {
            self.error.get_or_insert(error);
        }
        self.aging = Some(max_age);
        self
    }

    /// Requests wait in line when no token is free (the default), at most `max_waiting` of
    /// them (1 to 10,000,000; default 10,000) and none longer than `max_wait` (1 ms to 1 day;
    /// default 60 s). Beyond either bound a request is refused at once. With a shared store,
    /// the admissions out with it count toward `max_waiting` too, and one whose answer has
    /// not come by `max_wait` after its call is refused then.
    pub fn wait(mut self, max_waiting: usize, max_wait: Duration) -> Self {
        self.mode = Mode::Wait {
            max_waiting,
            max_wait,
        };
        self
    }

    /// Requests are refused at once when no token is free, with the time until one is.
    pub fn fail_fast(mut self) -> Self {
        self.mode = Mode::FailFast;
        self
    }

    /// Whether 429/503 `Retry-After` and exhausted `RateLimit`/`X-RateLimit-*` answers pause
    /// their key until the reset (default on, bounded by the default [`HintPolicy`]).
    pub fn obey_server(mut self, policy: Option<HintPolicy>) -> Self {
        self.hints = policy;
        self
    }

    /// Hold at most this many per-key limiters (1 to 100,000,000; default 10,000). At the
    /// bound the least recently used tenth is dropped, keys with waiters, requests in flight,
    /// a server's pause or a quota not yet refilled last.
    pub fn max_keys(mut self, n: usize) -> Self {
        self.key_limits.0 = n;
        self
    }

    /// Drop a per-key limiter unused for this long (1 s to 7 days; default 10 min).
    pub fn idle_after(mut self, idle: Duration) -> Self {
        self.key_limits.1 = idle;
        self
    }

    /// In a keyed layer's figures (see [`FigureSource`](seawall_core::FigureSource) on the
    /// handle), report the tokens available and the queue depth of at most the `n` keys
    /// with the most requests waiting (then the fewest tokens left), beside the totals that
    /// are always reported (0 to 1,000; default 10). Read at scrape time, never on the
    /// request path; the series count stays bounded however many hosts are called.
    pub fn figure_top_keys(mut self, n: usize) -> Self {
        self.figure_top_keys = n;
        self
    }

    /// Where the limiter reads the time: tokio's clock (the default), or the processor's
    /// time-stamp counter with [`Clock::tsc`], which saves a request about 14 ns of its
    /// reading (23 ns against 9.5 ns on the machine the benchmarks ran on) on the steady path.
    ///
    /// The counter does not follow tokio's paused time: a test on paused time must keep the
    /// default, or its requests are admitted and queued by real time while its timers run on
    /// paused time. Waiting requests still sleep on tokio's timer: each deadline the limiter
    /// works out on the counter is handed to the timer as the same wait from tokio's reading,
    /// so the two clocks' drift does not move a wake-up. Where `quanta` finds no usable
    /// counter (not x86-64, or no constant TSC) it reads the operating system's clock: correct,
    /// and no cheaper. With a store of another kind (a shared one) the store keeps its own
    /// time; the in-process store reads the limiter's clock. See [`Clock`] for the details.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Keeps one limiter per upstream (scheme and authority).
    pub fn per_host(self) -> RateLimitBuilder<ByHost, St> {
        self.key_by(ByHost)
    }

    /// Keeps one limiter per key that `extractor` gives.
    pub fn key_by<X2>(mut self, extractor: X2) -> RateLimitBuilder<X2, St> {
        if self.on_wait.is_some() {
            self.error.get_or_insert(ConfigError::new(
                "on_wait",
                "a hook for another key",
                "a hook given after `key_by` or `per_host`, for their key",
            ));
        }
        RateLimitBuilder {
            quotas: self.quotas,
            error: self.error,
            mode: self.mode,
            hints: self.hints,
            key_limits: self.key_limits,
            extractor,
            store: self.store,
            tiers: self.tiers,
            tier_of: self.tier_of,
            on_wait: self.on_wait,
            settle: self.settle,
            aging: self.aging,
            adaptive: self.adaptive,
            figure_top_keys: self.figure_top_keys,
            clock: self.clock,
        }
    }

    /// Keeps quota state in `store` (for example one shared by many processes).
    pub fn store<St2: RateStore>(self, store: St2) -> RateLimitBuilder<X, St2> {
        RateLimitBuilder {
            quotas: self.quotas,
            error: self.error,
            mode: self.mode,
            hints: self.hints,
            key_limits: self.key_limits,
            extractor: self.extractor,
            store: Some(store),
            tiers: self.tiers,
            tier_of: self.tier_of,
            on_wait: self.on_wait,
            settle: self.settle,
            aging: self.aging,
            adaptive: self.adaptive,
            figure_top_keys: self.figure_top_keys,
            clock: self.clock,
        }
    }
}

impl<X: KeyExtractor, St> RateLimitBuilder<X, St> {
    /// Picks each key's tier (see [`tier`](Self::tier)) by the name `tier_of` gives for it,
    /// once, when the key is first seen; a name no tier has gives the layer's own quotas.
    /// Given after [`key_by`](Self::key_by) or [`per_host`](Self::per_host), for their key.
    pub fn tier_of<F>(mut self, tier_of: F) -> Self
    where
        F: Fn(&X::Key) -> &str + Send + Sync + 'static,
    {
        let tier_of: TierOf<X::Key> = Arc::new(tier_of);
        self.tier_of = Some(Box::new(tier_of));
        self
    }
}

impl<X, St> RateLimitBuilder<X, St>
where
    X: KeyExtractor + Clone + Send + Sync + 'static,
{
    /// Calls `on_wait(key, predicted, ahead, tokens_left)` once when a request starts
    /// waiting: its key, its predicted wait, the tokens queued ahead of it (the requests
    /// ahead, when each costs 1) and the tokens its key's quotas would admit now (`None`
    /// for a store that cannot tell without a round trip). It runs in the caller's call (or,
    /// with a shared store, its future's poll), so it should be quick: record, log, send on
    /// a channel.
    /// Given after [`key_by`](Self::key_by) or [`per_host`](Self::per_host), for their key.
    pub fn on_wait<F>(mut self, on_wait: F) -> Self
    where
        F: Fn(&X::Key, Duration, u64, Option<u64>) + Send + Sync + 'static,
    {
        let extractor = self.extractor.clone();
        self.on_wait = Some(Arc::new(move |head, predicted, ahead, tokens_left| {
            on_wait(&extractor.extract(head), predicted, ahead, tokens_left);
        }));
        self
    }
}

impl<X: KeyExtractor> RateLimitBuilder<X, InMemoryStore> {
    /// Validates the configuration, keeping quota state in this process.
    pub fn build(mut self) -> Result<RateLimitLayer<X, InMemoryStore>, ConfigError> {
        let quotas = self
            .tiers
            .iter()
            .map(|(_, quotas)| quotas.len())
            .fold(self.quotas.len(), usize::max);
        let store = self
            .store
            .take()
            .unwrap_or_else(|| InMemoryStore::new(quotas))
            .on_clock(self.clock.clone());
        self.store(store).build_with_store()
    }
}

impl<X: KeyExtractor, St: RateStore> RateLimitBuilder<X, St> {
    /// Validates the configuration with the store given to [`store`](Self::store).
    pub fn build_with_store(self) -> Result<RateLimitLayer<X, St>, ConfigError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        if self.quotas.is_empty() {
            return Err(ConfigError::new(
                "quota",
                "none",
                "at least one quota, e.g. `.per_second(10)`",
            ));
        }
        check_range("quota", self.quotas.len(), 1, 8, "at most 8 quotas")?;
        check_range("tier", self.tiers.len(), 0, 254, "at most 254 tiers")?;
        for (index, (name, quotas)) in self.tiers.iter().enumerate() {
            check_range("tier", quotas.len(), 1, 8, "a tier of 1 to 8 quotas")?;
            if self.tiers[..index]
                .iter()
                .any(|(earlier, _)| earlier == name)
            {
                return Err(ConfigError::new("tier", name, "tier names given once each"));
            }
        }
        let tier_of = match self.tier_of {
            None => None,
            Some(tier_of) => match tier_of.downcast::<TierOf<X::Key>>() {
                Ok(tier_of) => Some(*tier_of),
                Err(_) => {
                    return Err(ConfigError::new(
                        "tier_of",
                        "a resolver for another key",
                        "a resolver given after `key_by` or `per_host`, for their key",
                    ));
                }
            },
        };
        if let Mode::Wait {
            max_waiting,
            max_wait,
        } = self.mode
        {
            check_range(
                "max_waiting",
                max_waiting,
                1,
                10_000_000,
                "an integer from 1 to 10,000,000",
            )?;
            check_range(
                "max_wait",
                max_wait,
                Duration::from_millis(1),
                Duration::from_secs(86_400),
                "a duration from 1 ms to 1 day",
            )?;
        }
        check_range(
            "figure_top_keys",
            self.figure_top_keys,
            0,
            MAX_FIGURE_TOP_KEYS,
            "an integer from 0 to 1,000",
        )?;
        let key_limits = KeyLimits::new(self.key_limits.0, self.key_limits.1)?;
        let Some(store) = self.store else {
            return Err(ConfigError::new(
                "store",
                "none",
                "a store given with `.store(...)`",
            ));
        };
        store.check_quotas(&self.quotas)?;
        for (_, quotas) in &self.tiers {
            store.check_quotas(quotas)?;
        }
        let mut sets = vec![self.quotas.into_boxed_slice()];
        let mut names = Vec::with_capacity(self.tiers.len());
        for (name, quotas) in self.tiers {
            names.push(name);
            sets.push(quotas.into_boxed_slice());
        }
        let tiers = Tiers {
            names: names.into_boxed_slice(),
            tier_of,
        };
        let limiter = Limiter::new(
            store,
            sets,
            Options {
                tiers,
                on_wait: self.on_wait,
                settle: self.settle,
                aging: self.aging,
                adaptive: self.adaptive,
                figure_top_keys: self.figure_top_keys,
                clock: self.clock,
            },
            self.mode,
            self.hints,
            self.extractor.single_key(),
            key_limits,
        );
        Ok(RateLimitLayer {
            extractor: self.extractor,
            limiter: Arc::new(limiter),
        })
    }
}
