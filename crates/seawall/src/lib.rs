//! # seawall
//!
//! Client-side resilience for HTTP as one tower stack: metrics, retries, a circuit breaker
//! and a rate limiter, in the order that makes them correct together, with defaults a
//! careful client would choose, every one of them overridable.
//!
//! ```
//! use std::time::Duration;
//! use http::{Request, Response};
//! use tower::{ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let stack = seawall::stack()
//!     .rate_limit(|limit| limit.per_second(50).burst(5))
//!     .retry(|retry| retry.max_attempts(4))
//!     .attempt_timeout(Duration::from_secs(10))
//!     .build()?;
//!
//! // Any tower HTTP client goes underneath; `stack.hyper_client()` builds hyper-util's.
//! let upstream = service_fn(|_req: Request<seawall::ReplayBody<String>>| async {
//!     Ok::<_, std::io::Error>(Response::new(String::from("ok")))
//! });
//! let client = stack.service(upstream);
//! let response = client
//!     .oneshot(Request::get("http://api.example.com/items").body(String::new())?)
//!     .await?;
//! assert_eq!(response.status(), 200);
//! drop(response);
//! assert_eq!(stack.metrics().snapshot().total, 1);
//! assert!(stack.metrics().encode().contains("seawall_rate_limit_admitted_total 1"));
//! # Ok(())
//! # }
//! ```
//!
//! ## Calling one API
//!
//! [`Stack::client`] puts the stack over hyper-util's client with a base URL; requests are
//! built as with reqwest, and [`Client::get_json`] / [`Client::post_json`] are shortcuts for
//! JSON:
//!
//! ```no_run
//! # #[derive(serde::Deserialize)] struct Item { name: String }
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let stack = seawall::stack().build()?;
//! let api = stack
//!     .client_builder("https://api.example.com/v1")
//!     .bearer_auth("my-token")
//!     .timeout(std::time::Duration::from_secs(20))
//!     .build()?;
//! let item: Item = api.get_json("/items/7").await?;
//! let response = api
//!     .post("/items")
//!     .query(&[("notify", "true")])
//!     .json(&serde_json::json!({ "name": "bolt" }))
//!     .idempotency_key("create-bolt-1")
//!     .send()
//!     .await?
//!     .error_for_status()?;
//! println!("{} after {} attempt(s)", response.status(), response.attempts());
//! # Ok(())
//! # }
//! ```
//!
//! ## HTTPS
//!
//! With the `rustls` feature, on by default, the [`Client`] speaks HTTPS (rustls with ring,
//! Mozilla's root certificates, HTTP/2 when the server offers it by ALPN) and plain HTTP;
//! [`ClientBuilder::add_root_certificate`] trusts a private authority and
//! [`ClientBuilder::tls_config`] takes a whole TLS configuration (client certificates).
//! `Stack::https_client` puts the stack over hyper-util's HTTPS client for any tower use, and
//! `Stack::https_client_with_tls` does so with a TLS configuration of the caller's. With
//! `default-features = false` there is no TLS: `hyper_client` and the `Client` speak plain
//! HTTP.
//!
//! ## The stack
//!
//! Outermost first:
//!
//! | layer | default |
//! |---|---|
//! | [`MetricsLayer`] | one record per logical request; every layer's figures in one exposition |
//! | [`RetryLayer`] | 3 attempts within a 30 s deadline, exponential backoff from 1 s capped at 60 s with full jitter, a 20 % budget, server hints obeyed |
//! | [`CircuitBreakerLayer`] (per host, or per [`key_by`](StackBuilder::key_by)) | 5 consecutive failures or 50 % of the last 100 calls; open 60 s growing to 5 min; 3 half-open probes |
//! | [`RateLimitLayer`] (per host, or per key; per route with [`route`](StackBuilder::route)) | 100 requests per minute with a burst of 10, waiting fairly; 429s pause the host |
//! | [`AttemptMetricsLayer`] | each attempt under OpenTelemetry's HTTP client names, hosts bounded |
//! | attempt timeout | 30 s per attempt |
//!
//! [`Stack::report`] reads every layer's figures as one snapshot, printed as a table by its
//! `Display`.
//!
//! In this order a retry pays the rate limiter (an upstream's quota counts attempts), an
//! open breaker refuses before a token is spent or a queue slot taken, and time waiting in
//! the limiter is not a slow call.
//!
//! ## Spending fewer requests
//!
//! [`Stack::economy_service`] puts an HTTP cache ([`CacheLayer`]: RFC 9111, a TTL for
//! answers without cache headers if set with [`StackBuilder::cache`], `stale-if-error`) and the
//! coalescing of identical in-flight requests ([`CoalesceLayer`]) inside the metrics layer,
//! above retry: a fresh hit or a request sharing another's call spends no token and never
//! meets an open breaker, and a stale answer within its allowance stands in while the breaker
//! refuses. (`seawall-batch` merges calls into an API's batch endpoint; it is placed by hand,
//! since the merging is the API's own.)
//!
//! ## Any store, key and classifier; quotas per route
//!
//! [`StackBuilder::key_by`] keys the limiter and the breaker by anything a request says (a
//! tenant, an API key); [`StackBuilder::store`] keeps the quota in any [`RateStore`] (the
//! Redis store of `seawall-rate-limit-redis`, one quota for a fleet:
//! `.store(redis_store)`); [`StackBuilder::classifier`] judges calls for the breaker, the
//! retry and the metrics layers; [`StackBuilder::route`] gives a path prefix quotas of its
//! own. The [`Stack`] and [`StandardService`] types carry these as type parameters whose
//! defaults are the standard stack's.
//!
//! ## Beyond HTTP
//!
//! [`Stack::run`] puts any async operation (an SDK call, a database query) through the same
//! retry layer, breaker and limiter, in the same order, judged by a classifier of its
//! `Result`; each layer also offers its own ([`RetryLayer::run`],
//! [`CircuitBreakerLayer::guard`], [`RateLimitLayer::acquire`]).
//!
//! ```
//! use std::time::Duration;
//! use seawall::core::{FailureKind, Outcome, RequestHead};
//! use tokio::time::Instant;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Per tenant, 10 a second; searches 2 a second.
//! let tenant = |head: &RequestHead<'_>| {
//!     let tenant = head.headers.get("x-tenant").and_then(|v| v.to_str().ok());
//!     tenant.unwrap_or("anonymous").to_owned()
//! };
//! let stack = seawall::stack()
//!     .key_by(tenant)
//!     .rate_limit(|limit| limit.per_second(10))
//!     .route("/search", |limit| limit.per_second(2))
//!     .retry(|retry| retry.jitter(seawall::retry::Jitter::None))
//!     .build()?;
//!
//! // A database query for tenant "acme": a timeout is worth another try.
//! let classify = |result: &Result<u32, &str>| match result {
//!     Ok(_) => Outcome::Success,
//!     Err(_) => Outcome::Failure(FailureKind::Timeout),
//! };
//! let start = Instant::now();
//! let mut attempts = 0;
//! let rows = stack
//!     .run_with(&"acme".to_owned(), 1, &classify, || {
//!         attempts += 1;
//!         let result = if attempts == 1 { Err("timed out") } else { Ok(42) };
//!         async move { result }
//!     })
//!     .await;
//! assert_eq!(rows.ok(), Some(42));
//! // One retry after the first backoff step (1 s without jitter).
//! assert_eq!(start.elapsed(), Duration::from_secs(1));
//! # Ok(())
//! # }
//! ```
//!
//! ## Fallbacks and the server side
//!
//! [`FallbackLayer`] answers a request the stack refused or failed with what a function
//! makes of the request's head and the error (a cached answer while the breaker is open).
//! [`server`] puts the rate limiter in front of a server (an axum app): it answers refusals
//! with `429`, `Retry-After`, `RateLimit` and `RateLimit-Policy` itself, and keys callers by
//! IP, trusting forwarding headers only from the proxies it is told of.

mod client;
mod fallback;
mod routes;
mod run;
pub mod server;

pub use client::{
    Client, ClientBuilder, ClientError, ClientErrorKind, DEFAULT_MAX_BODY_SIZE, RequestBuilder,
    Response, ResponseBody, StackError, Transport,
};
pub use fallback::{Fallback, FallbackFuture, FallbackLayer, Refusal, Refused};
pub use routes::{RouteLimit, RouteLimitLayer};
pub use run::{ErrorClassifier, RunError};
/// The `url` crate, whose [`Url`](url::Url) a [`Client`] joins paths to.
pub use url;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::client::legacy::Client as LegacyClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use seawall_core::{ByHost, CallTime, ConfigError, HttpClassifier, KeyExtractor};
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

pub use seawall_cache::{
    self as cache, Cache, CacheLayer, CacheLayerBuilder, CacheStatus, MemoryStore,
};
pub use seawall_circuit_breaker::{
    self as circuit_breaker, CircuitBreaker, CircuitBreakerBuilder, CircuitBreakerHandle,
    CircuitBreakerLayer,
};
pub use seawall_coalesce::{self as coalesce, Coalesce, CoalesceBuilder, CoalesceLayer};
pub use seawall_core::{self as core};
pub use seawall_metrics::{
    self as metrics, AttemptMetrics, AttemptMetricsLayer, Metrics, MetricsBuilder, MetricsLayer,
    Report,
};
pub use seawall_rate_limit::{
    self as rate_limit, InMemoryStore, RateLimit, RateLimitBuilder, RateLimitHandle,
    RateLimitLayer, RateStore,
};
pub use seawall_retry::{
    self as retry, BoxError, ReplayBody, Retry, RetryBuilder, RetryHandle, RetryLayer,
};

/// The client wrapped in the attempt timeout, its errors made concrete.
///
/// A named service and future rather than tower's `Timeout` and `MapErr`: the deadline comes
/// from the call's shared clock reading ([`CallTime`]), and the timer is registered only if
/// the client's future is not ready when first polled, so an answer that is ready at once
/// (a cached or refused request) costs no timer. (`MapErr` with a function pointer would also
/// not be `Send` for every lifetime as far as the compiler can prove, which would keep the
/// stack out of axum handlers and other spawned tasks.)
#[derive(Debug, Clone)]
pub struct Attempt<S> {
    inner: S,
    timeout: Duration,
}

impl<S, R> Service<R> for Attempt<S>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = AttemptError;
    type Future = AttemptFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), AttemptError>> {
        self.inner
            .poll_ready(cx)
            .map_err(|error| AttemptError::new(error.into()))
    }

    fn call(&mut self, request: R) -> Self::Future {
        let (now, _call_time) = CallTime::enter();
        AttemptFuture {
            inner: self.inner.call(request),
            deadline: seawall_core::clock::later(now, self.timeout),
            timer: None,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of an [`Attempt`].
    #[derive(Debug)]
    pub struct AttemptFuture<F> {
        #[pin]
        inner: F,
        deadline: Instant,
        // Registered on the first poll that finds the client's future pending.
        #[pin]
        timer: Option<Sleep>,
    }
}

impl<F, T, E> Future for AttemptFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, AttemptError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            return Poll::Ready(result.map_err(|error| AttemptError::new(error.into())));
        }
        if this.timer.is_none() {
            this.timer
                .set(Some(tokio::time::sleep_until(*this.deadline)));
        }
        match this.timer.as_pin_mut().map(|timer| timer.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(AttemptError::new(Box::new(
                tower::timeout::error::Elapsed::new(),
            )))),
            _ => Poll::Pending,
        }
    }
}

/// The service the standard stack makes of a client `S`, with the stack's key extractor `K`,
/// rate store `St` and classifier `C` (by default: per host, in this process, HTTP rules).
pub type StandardService<S, K = ByHost, St = InMemoryStore, C = HttpClassifier> =
    Metrics<Retry<CircuitBreaker<RouteLimit<AttemptMetrics<Attempt<S>>, K, St>, C, K>, C>, C>;

/// The service [`Stack::economy_service`] makes of a client `S`: the standard stack with an
/// HTTP cache and the coalescing of identical requests between its metrics and retry layers.
pub type EconomyService<S, K = ByHost, St = InMemoryStore, C = HttpClassifier> = Metrics<
    Cache<
        Coalesce<Retry<CircuitBreaker<RouteLimit<AttemptMetrics<Attempt<S>>, K, St>, C, K>, C>>,
        MemoryStore,
    >,
    C,
>;

/// One attempt's failure below the rate limiter: the client's error, or the attempt timeout.
///
/// The client's error is boxed (a timeout is tower's `Elapsed`), and a boxed error is not
/// itself a `std::error::Error`; this wrapper is, so the stack's errors can be returned with
/// `?` into any error type.
#[derive(Debug)]
pub struct AttemptError(BoxError);

impl AttemptError {
    fn new(error: BoxError) -> Self {
        Self(error)
    }

    /// Whether the attempt ran out of time.
    pub fn is_timeout(&self) -> bool {
        self.0.is::<tower::timeout::error::Elapsed>()
    }

    /// The boxed error: the client's, or tower's `Elapsed` for a timeout.
    pub fn into_inner(self) -> BoxError {
        self.0
    }
}

impl std::fmt::Display for AttemptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for AttemptError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl seawall_core::ClassifyError for AttemptError {
    fn failure_kind(&self) -> seawall_core::FailureKind {
        self.0.failure_kind()
    }
}

/// rustls, for [`Stack::https_client_with_tls`]'s configuration (with the `rustls` feature).
#[cfg(feature = "rustls")]
pub use rustls;

/// hyper-util's legacy client over HTTPS with rustls (and plain HTTP for `http://` URLs),
/// sending replayable bodies of type `B`. With the `rustls` feature.
#[cfg(feature = "rustls")]
pub type HttpsClient<B> = LegacyClient<hyper_rustls::HttpsConnector<HttpConnector>, ReplayBody<B>>;

/// hyper-util's legacy client over plain HTTP, sending replayable bodies of type `B`.
pub type HyperClient<B> = LegacyClient<HttpConnector, ReplayBody<B>>;

type Customise<B> = Box<dyn FnOnce(B) -> B>;

/// How a stack builds a rate limiter from its adjusted builder: in this process (a fresh
/// store sized to the limiter's quotas), or with a copy of a shared store.
type BuildLimit<K, St> =
    fn(RateLimitBuilder<K>, Option<&St>) -> Result<RateLimitLayer<K, St>, ConfigError>;

fn in_process<K: KeyExtractor>(
    builder: RateLimitBuilder<K>,
    _store: Option<&InMemoryStore>,
) -> Result<RateLimitLayer<K>, ConfigError> {
    builder.build()
}

fn with_store<K: KeyExtractor, St: RateStore + Clone>(
    builder: RateLimitBuilder<K>,
    store: Option<&St>,
) -> Result<RateLimitLayer<K, St>, ConfigError> {
    match store {
        Some(store) => builder.store(store.clone()).build_with_store(),
        None => Err(ConfigError::new(
            "route",
            "a route without a store of its own",
            "with a shared store, routes given with `route_with_store` (a shared store keeps \
             every limiter's state under the same key names)",
        )),
    }
}

/// A route with quotas of its own.
struct Route<K, St> {
    prefix: String,
    store: Option<St>,
    customise: Customise<RateLimitBuilder<K>>,
}

/// Starts the standard stack with its defaults (see the [crate docs](crate)).
pub fn stack() -> StackBuilder {
    StackBuilder {
        extractor: ByHost,
        classifier: HttpClassifier,
        store: None,
        build_limit: in_process::<ByHost>,
        rate_limit: None,
        routes: Vec::new(),
        circuit_breaker: None,
        retry: None,
        metrics: None,
        attempt_timeout: Duration::from_secs(30),
        cache: None,
        coalesce: None,
        misordered: None,
    }
}

/// Configures the standard stack: each method adjusts one layer's builder, starting from the
/// stack's defaults.
///
/// `key_by` and `classifier` change the types the layers' builders are adjusted with, so they
/// come before the adjustments (`rate_limit`, `route`, `circuit_breaker`, `retry`,
/// `metrics`); after one, `build` names the misplaced call. `store` may come anywhere before
/// the routes.
pub struct StackBuilder<K: KeyExtractor = ByHost, St: RateStore = InMemoryStore, C = HttpClassifier>
{
    extractor: K,
    classifier: C,
    store: Option<St>,
    build_limit: BuildLimit<K, St>,
    rate_limit: Option<Customise<RateLimitBuilder<K>>>,
    routes: Vec<Route<K, St>>,
    circuit_breaker: Option<Customise<CircuitBreakerBuilder<C, K>>>,
    retry: Option<Customise<RetryBuilder<C>>>,
    metrics: Option<Customise<MetricsBuilder<C>>>,
    attempt_timeout: Duration,
    cache: Option<Customise<CacheLayerBuilder>>,
    coalesce: Option<Customise<CoalesceBuilder>>,
    /// The first type-changing call made after an adjustment it would have dropped.
    misordered: Option<&'static str>,
}

impl<K: KeyExtractor, St: RateStore, C> std::fmt::Debug for StackBuilder<K, St, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackBuilder")
            .field("attempt_timeout", &self.attempt_timeout)
            .field(
                "routes",
                &self.routes.iter().map(|r| &r.prefix).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl<K: KeyExtractor, C> StackBuilder<K, InMemoryStore, C> {
    /// Keys the rate limiter and the circuit breaker by `extractor` (per host by default):
    /// per customer, per API key, any [`KeyExtractor`]. Before [`store`](Self::store) and
    /// the layers' adjustments.
    pub fn key_by<K2: KeyExtractor + Clone>(
        self,
        extractor: K2,
    ) -> StackBuilder<K2, InMemoryStore, C> {
        let misordered = self
            .misordered
            .or_else(|| self.adjusted().then_some("key_by"));
        StackBuilder {
            extractor,
            classifier: self.classifier,
            store: None,
            build_limit: in_process::<K2>,
            rate_limit: None,
            routes: Vec::new(),
            circuit_breaker: None,
            retry: None,
            metrics: None,
            attempt_timeout: self.attempt_timeout,
            cache: self.cache,
            coalesce: self.coalesce,
            misordered,
        }
    }
}

impl<K: KeyExtractor, St: RateStore, C> StackBuilder<K, St, C> {
    fn adjusted(&self) -> bool {
        self.rate_limit.is_some()
            || !self.routes.is_empty()
            || self.circuit_breaker.is_some()
            || self.retry.is_some()
            || self.metrics.is_some()
    }

    /// Judges calls with `classifier` in the circuit breaker, the retry layer and the metrics
    /// layer (HTTP rules by default, [`HttpClassifier`]).
    pub fn classifier<C2: Clone>(self, classifier: C2) -> StackBuilder<K, St, C2> {
        let misordered = self.misordered.or_else(|| {
            (self.circuit_breaker.is_some() || self.retry.is_some() || self.metrics.is_some())
                .then_some("classifier")
        });
        StackBuilder {
            extractor: self.extractor,
            classifier,
            store: self.store,
            build_limit: self.build_limit,
            rate_limit: self.rate_limit,
            routes: self.routes,
            circuit_breaker: None,
            retry: None,
            metrics: None,
            attempt_timeout: self.attempt_timeout,
            cache: self.cache,
            coalesce: self.coalesce,
            misordered,
        }
    }

    /// Keeps the rate limiter's state in `store`: for example
    /// `seawall_rate_limit_redis::RedisStore`, one quota for a fleet of processes.
    pub fn store<St2: RateStore + Clone>(self, store: St2) -> StackBuilder<K, St2, C> {
        let misordered = self
            .misordered
            .or_else(|| (!self.routes.is_empty()).then_some("store"));
        StackBuilder {
            extractor: self.extractor,
            classifier: self.classifier,
            store: Some(store),
            build_limit: with_store::<K, St2>,
            rate_limit: self.rate_limit,
            routes: Vec::new(),
            circuit_breaker: self.circuit_breaker,
            retry: self.retry,
            metrics: self.metrics,
            attempt_timeout: self.attempt_timeout,
            cache: self.cache,
            coalesce: self.coalesce,
            misordered,
        }
    }

    /// Adjusts the rate limiter (100 per minute, burst 10, by default; per host unless
    /// [`key_by`](Self::key_by) says otherwise). Quotas set here replace the default quota.
    pub fn rate_limit(
        mut self,
        customise: impl FnOnce(RateLimitBuilder<K>) -> RateLimitBuilder<K> + 'static,
    ) -> Self {
        self.rate_limit = Some(Box::new(customise));
        self
    }

    /// Gives requests whose path falls under `prefix` (`/search` covers `/search` and
    /// `/search/7`, not `/searching`) a rate limiter of their own, configured by `customise`
    /// from an empty builder keyed as the stack's; the most specific route wins, and the
    /// rest go to the stack's limiter. With a shared store, use
    /// [`route_with_store`](Self::route_with_store).
    pub fn route(
        mut self,
        prefix: &str,
        customise: impl FnOnce(RateLimitBuilder<K>) -> RateLimitBuilder<K> + 'static,
    ) -> Self {
        self.routes.push(Route {
            prefix: prefix.to_owned(),
            store: None,
            customise: Box::new(customise),
        });
        self
    }

    /// As [`route`](Self::route), the route's state kept in `store`: with a shared store
    /// such as Redis, one under key names of its own (its own prefix), so that the route's
    /// quota and the rest's are not counted together.
    pub fn route_with_store(
        mut self,
        prefix: &str,
        store: St,
        customise: impl FnOnce(RateLimitBuilder<K>) -> RateLimitBuilder<K> + 'static,
    ) -> Self {
        self.routes.push(Route {
            prefix: prefix.to_owned(),
            store: Some(store),
            customise: Box::new(customise),
        });
        self
    }

    /// Adjusts the circuit breaker (per host unless [`key_by`](Self::key_by) says
    /// otherwise).
    pub fn circuit_breaker(
        mut self,
        customise: impl FnOnce(CircuitBreakerBuilder<C, K>) -> CircuitBreakerBuilder<C, K> + 'static,
    ) -> Self {
        self.circuit_breaker = Some(Box::new(customise));
        self
    }

    /// Adjusts the retry layer.
    pub fn retry(
        mut self,
        customise: impl FnOnce(RetryBuilder<C>) -> RetryBuilder<C> + 'static,
    ) -> Self {
        self.retry = Some(Box::new(customise));
        self
    }

    /// Adjusts the metrics layer.
    pub fn metrics(
        mut self,
        customise: impl FnOnce(MetricsBuilder<C>) -> MetricsBuilder<C> + 'static,
    ) -> Self {
        self.metrics = Some(Box::new(customise));
        self
    }

    /// Adjusts the HTTP cache of [`Stack::economy_service`] (in process, RFC 9111, no TTL
    /// for answers without freshness information unless one is set here).
    pub fn cache(
        mut self,
        customise: impl FnOnce(CacheLayerBuilder) -> CacheLayerBuilder + 'static,
    ) -> Self {
        self.cache = Some(Box::new(customise));
        self
    }

    /// Adjusts the coalescing of identical in-flight requests in
    /// [`Stack::economy_service`].
    pub fn coalesce(
        mut self,
        customise: impl FnOnce(CoalesceBuilder) -> CoalesceBuilder + 'static,
    ) -> Self {
        self.coalesce = Some(Box::new(customise));
        self
    }

    /// The time each attempt may take (1 ms to 1 h; default 30 s).
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }
}

impl<K, St, C> StackBuilder<K, St, C>
where
    K: KeyExtractor + Clone,
    K::Key: Clone + Eq + std::hash::Hash + std::fmt::Debug + Send + Sync + 'static,
    K::Key: seawall_core::KeyLabel,
    St: RateStore,
    C: Clone + Send + Sync + 'static,
{
    /// Builds every layer, validating every setting.
    pub fn build(self) -> Result<Stack<K, St, C>, ConfigError> {
        if let Some(call) = self.misordered {
            return Err(ConfigError::new(
                "stack",
                call,
                "key_by and classifier before the layers' adjustments, store before the routes",
            ));
        }
        let attempt_timeout = seawall_core::check_range(
            "attempt_timeout",
            self.attempt_timeout,
            Duration::from_millis(1),
            Duration::from_secs(3600),
            "a duration from 1 ms to 1 h",
        )?;
        let keyed = || RateLimitLayer::builder().key_by(self.extractor.clone());
        let limit = match self.rate_limit {
            Some(customise) => customise(keyed()),
            None => keyed().per_minute(100).burst(10),
        };
        let limit = (self.build_limit)(limit, self.store.as_ref())?;
        let mut routes: Vec<routes::RouteLayer<K, St>> = Vec::new();
        for route in self.routes {
            if !route.prefix.starts_with('/') {
                return Err(ConfigError::new(
                    "route",
                    route.prefix,
                    "a path prefix starting with `/`",
                ));
            }
            if routes.iter().any(|(prefix, _)| **prefix == *route.prefix) {
                return Err(ConfigError::new(
                    "route",
                    route.prefix,
                    "each route prefix once",
                ));
            }
            let layer = (self.build_limit)((route.customise)(keyed()), route.store.as_ref())?;
            routes.push((route.prefix.into(), layer));
        }
        let breaker = apply(
            self.circuit_breaker,
            CircuitBreakerLayer::builder()
                .classifier(self.classifier.clone())
                .key_by(self.extractor.clone()),
        )
        .build()?;
        let retry = apply(
            self.retry,
            RetryLayer::builder().classifier(self.classifier.clone()),
        )
        .build()?;
        let metrics = apply(
            self.metrics,
            MetricsLayer::builder().classifier(self.classifier),
        )
        .build()?;
        let cache = apply(self.cache, CacheLayer::builder()).build()?;
        let coalesce = apply(self.coalesce, CoalesceLayer::builder()).build()?;
        let rate_limit = RouteLimitLayer::new(limit, routes);
        metrics.include(retry.handle());
        metrics.include(breaker.handle());
        metrics.include(rate_limit.figures());
        metrics.include(cache.handle());
        metrics.include(coalesce.handle());
        Ok(Stack {
            attempts: metrics.attempts(),
            cache,
            coalesce,
            metrics,
            retry,
            circuit_breaker: breaker,
            rate_limit,
            attempt_timeout,
        })
    }
}

fn apply<B>(customise: Option<Customise<B>>, builder: B) -> B {
    match customise {
        Some(customise) => customise(builder),
        None => builder,
    }
}

/// The built standard stack: a [`Layer`] over any client, and the handles to its figures.
/// Every service it makes shares one set of limits, breakers, budget and figures.
///
/// `K` keys the rate limiter and the circuit breaker, `St` keeps the limiter's state and `C`
/// judges calls; the defaults (per host, in this process, HTTP rules) are what
/// [`stack`] builds unless told otherwise.
pub struct Stack<K: KeyExtractor = ByHost, St: RateStore = InMemoryStore, C = HttpClassifier> {
    metrics: MetricsLayer<C>,
    retry: RetryLayer<C>,
    circuit_breaker: CircuitBreakerLayer<C, K>,
    rate_limit: RouteLimitLayer<K, St>,
    attempt_timeout: Duration,
    attempts: AttemptMetricsLayer,
    cache: CacheLayer,
    coalesce: CoalesceLayer,
}

impl<K: KeyExtractor + Clone, St: RateStore, C: Clone> Clone for Stack<K, St, C> {
    fn clone(&self) -> Self {
        Self {
            metrics: self.metrics.clone(),
            retry: self.retry.clone(),
            circuit_breaker: self.circuit_breaker.clone(),
            rate_limit: self.rate_limit.clone(),
            attempt_timeout: self.attempt_timeout,
            attempts: self.attempts.clone(),
            cache: self.cache.clone(),
            coalesce: self.coalesce.clone(),
        }
    }
}

// Without the key extractor, which may be a closure (no `Debug`).
impl<K: KeyExtractor, St: RateStore, C> std::fmt::Debug for Stack<K, St, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("retry", &self.retry)
            .field("rate_limit", &self.rate_limit.default_limit().quotas())
            .field("attempt_timeout", &self.attempt_timeout)
            .finish_non_exhaustive()
    }
}

impl<K, St, C> Stack<K, St, C>
where
    K: KeyExtractor + Clone,
    St: RateStore,
    C: Clone,
{
    /// Wraps `client` in the stack.
    pub fn service<S: Clone>(&self, client: S) -> StandardService<S, K, St, C> {
        self.layer(client)
    }

    /// Wraps `client` in the stack with the layers that spend fewer requests placed inside
    /// the metrics layer: an HTTP cache, then the coalescing of identical in-flight requests,
    /// above the retry layer. A fresh cache hit or a request that shares another's call
    /// spends no token and never meets an open breaker; a stale entry within its
    /// `stale-if-error` allowance answers while the breaker below refuses.
    pub fn economy_service<S: Clone>(&self, client: S) -> EconomyService<S, K, St, C> {
        let retried = self.retry.layer(self.guarded(client));
        self.metrics
            .layer(self.cache.layer(self.coalesce.layer(retried)))
    }

    /// Every layer's figures now, as one typed snapshot: requests, latency quantiles, attempts
    /// per host, the limiter, the breakers, retries and the last failures. `Display` prints a
    /// compact table.
    pub fn report(&self) -> Report {
        self.metrics.report()
    }

    /// The cache of [`economy_service`](Self::economy_service): its figures and its store.
    pub fn cache(&self) -> &CacheLayer {
        &self.cache
    }

    /// The coalescing layer of [`economy_service`](Self::economy_service).
    pub fn coalesce(&self) -> &CoalesceLayer {
        &self.coalesce
    }

    /// The breaker over the rate limiter over the attempt timeout, over `client`.
    fn guarded<S: Clone>(
        &self,
        client: S,
    ) -> CircuitBreaker<RouteLimit<AttemptMetrics<Attempt<S>>, K, St>, C, K> {
        let attempt = Attempt {
            inner: client,
            timeout: self.attempt_timeout,
        };
        // Each attempt is recorded where it is sent: a timeout is its `error_type`, and neither
        // a token's wait nor a backoff is its latency.
        self.circuit_breaker
            .layer(self.rate_limit.layer(self.attempts.layer(attempt)))
    }

    /// hyper-util's client (HTTP/1 over plain TCP) wrapped in the stack.
    pub fn hyper_client<B>(&self) -> StandardService<HyperClient<B>, K, St, C>
    where
        B: http_body::Body + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        self.service(LegacyClient::builder(TokioExecutor::new()).build_http())
    }

    /// hyper-util's client over HTTPS (rustls with ring, Mozilla's root certificates, HTTP/2
    /// when the server offers it by ALPN, else HTTP/1.1; plain HTTP for `http://` URLs)
    /// wrapped in the stack. With the `rustls` feature.
    #[cfg(feature = "rustls")]
    pub fn https_client<B>(&self) -> Result<StandardService<HttpsClient<B>, K, St, C>, ConfigError>
    where
        B: http_body::Body + Send + Unpin + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|error| ConfigError::new("tls", error, "rustls's default protocol versions"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(self.https_client_with_tls(tls))
    }

    /// As [`https_client`](Self::https_client), with a TLS configuration of the caller's: a
    /// private certificate authority, client certificates, other protocol versions. Its ALPN
    /// protocols are replaced by the ones this client speaks (HTTP/2 and HTTP/1.1).
    #[cfg(feature = "rustls")]
    pub fn https_client_with_tls<B>(
        &self,
        tls: rustls::ClientConfig,
    ) -> StandardService<HttpsClient<B>, K, St, C>
    where
        B: http_body::Body + Send + Unpin + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        self.service(
            LegacyClient::builder(TokioExecutor::new()).build(client::https_connector(tls)),
        )
    }

    /// The metrics layer: snapshots and the exposition of every layer's figures.
    pub fn metrics(&self) -> &MetricsLayer<C> {
        &self.metrics
    }

    /// The retry layer, whose [`run`](RetryLayer::run) retries any async operation.
    pub fn retry_layer(&self) -> &RetryLayer<C> {
        &self.retry
    }

    /// The retry layer's figures and budget.
    pub fn retry(&self) -> RetryHandle<C> {
        self.retry.handle()
    }

    /// The circuit breaker layer, whose [`guard`](CircuitBreakerLayer::guard) guards any
    /// async operation.
    pub fn circuit_breaker_layer(&self) -> &CircuitBreakerLayer<C, K> {
        &self.circuit_breaker
    }

    /// The circuit breakers, one per key.
    pub fn circuit_breaker(&self) -> CircuitBreakerHandle<K::Key> {
        self.circuit_breaker.handle()
    }

    /// The rate limiters: the stack's own and the routes'. The stack's own
    /// ([`default_limit`](RouteLimitLayer::default_limit)) paces
    /// [`acquire`](RateLimitLayer::acquire) for any async operation.
    pub fn rate_limit_layer(&self) -> &RouteLimitLayer<K, St> {
        &self.rate_limit
    }

    /// The rate limiter's figures and pauses (the stack's own limiter, not the routes').
    pub fn rate_limit(&self) -> RateLimitHandle<K::Key, St> {
        self.rate_limit.handle()
    }
}

impl Stack {
    /// The stack over hyper-util's client, calling the API at `base_url` (an absolute
    /// `https://` URL, or `http://`; `https://` needs the `rustls` feature, on by default),
    /// with the defaults of [`client_builder`](Self::client_builder).
    pub fn client(&self, base_url: &str) -> Result<Client, ConfigError> {
        Client::new(self, base_url)
    }

    /// As [`client`](Self::client), configured first: a private certificate authority or a
    /// whole TLS configuration, headers every request carries, a per-call timeout, the body
    /// size cap, the connection pool.
    pub fn client_builder(&self, base_url: &str) -> ClientBuilder {
        ClientBuilder::new(self, base_url)
    }
}

impl<S: Clone, K: KeyExtractor + Clone, St: RateStore, C: Clone> Layer<S> for Stack<K, St, C> {
    type Service = StandardService<S, K, St, C>;

    fn layer(&self, client: S) -> Self::Service {
        self.metrics.layer(self.retry.layer(self.guarded(client)))
    }
}
