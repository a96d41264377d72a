//! [`RateLimitLayer`] and its builder.

use std::sync::Arc;
use std::time::Duration;

use seawall_core::{ByHost, ConfigError, Global, HintPolicy, KeyExtractor, KeyLimits, check_range};
use tower::Layer;

use crate::limiter::{Limiter, Mode};
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

/// Configures a [`RateLimitLayer`]; `build` validates and names any bad field.
#[derive(Debug)]
pub struct RateLimitBuilder<X = Global, St = InMemoryStore> {
    quotas: Vec<Quota>,
    error: Option<ConfigError>,
    mode: Mode,
    hints: Option<HintPolicy>,
    key_limits: (usize, Duration),
    extractor: X,
    store: Option<St>,
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

    /// Hold at most this many per-key limiters (1 to 100,000,000; default 10,000).
    pub fn max_keys(mut self, n: usize) -> Self {
        self.key_limits.0 = n;
        self
    }

    /// Drop a per-key limiter unused for this long (1 s to 7 days; default 10 min).
    pub fn idle_after(mut self, idle: Duration) -> Self {
        self.key_limits.1 = idle;
        self
    }

    /// Keeps one limiter per upstream (scheme and authority).
    pub fn per_host(self) -> RateLimitBuilder<ByHost, St> {
        self.key_by(ByHost)
    }

    /// Keeps one limiter per key that `extractor` gives.
    pub fn key_by<X2>(self, extractor: X2) -> RateLimitBuilder<X2, St> {
        RateLimitBuilder {
            quotas: self.quotas,
            error: self.error,
            mode: self.mode,
            hints: self.hints,
            key_limits: self.key_limits,
            extractor,
            store: self.store,
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
        }
    }
}

impl<X: KeyExtractor> RateLimitBuilder<X, InMemoryStore> {
    /// Validates the configuration, keeping quota state in this process.
    pub fn build(mut self) -> Result<RateLimitLayer<X, InMemoryStore>, ConfigError> {
        let quotas = self.quotas.len();
        let store = self
            .store
            .take()
            .unwrap_or_else(|| InMemoryStore::new(quotas));
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
        let key_limits = KeyLimits::new(self.key_limits.0, self.key_limits.1)?;
        let Some(store) = self.store else {
            return Err(ConfigError::new(
                "store",
                "none",
                "a store given with `.store(...)`",
            ));
        };
        store.check_quotas(&self.quotas)?;
        let limiter = Limiter::new(
            store,
            self.quotas,
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
