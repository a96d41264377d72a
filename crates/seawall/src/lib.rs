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
//! | [`CircuitBreakerLayer`] (per host) | 5 consecutive failures or 50 % of the last 100 calls; open 60 s growing to 5 min; 3 half-open probes |
//! | [`RateLimitLayer`] (per host) | 100 requests per minute with a burst of 10, waiting fairly; 429s pause the host |
//! | attempt timeout | 30 s per attempt |
//!
//! In this order a retry pays the rate limiter (an upstream's quota counts attempts), an
//! open breaker refuses before a token is spent or a queue slot taken, and time waiting in
//! the limiter is not a slow call.

mod client;

pub use client::{
    Client, ClientBuilder, ClientError, ClientErrorKind, DEFAULT_MAX_BODY_SIZE, RequestBuilder,
    Response, ResponseBody, StackError, Transport,
};
/// The `url` crate, whose [`Url`](url::Url) a [`Client`] joins paths to.
pub use url;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::client::legacy::Client as LegacyClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use seawall_core::{ByHost, CallTime, ConfigError, HttpClassifier};
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

pub use seawall_circuit_breaker::{
    self as circuit_breaker, CircuitBreaker, CircuitBreakerBuilder, CircuitBreakerHandle,
    CircuitBreakerLayer,
};
pub use seawall_core::{self as core};
pub use seawall_metrics::{self as metrics, Metrics, MetricsBuilder, MetricsLayer};
pub use seawall_rate_limit::{
    self as rate_limit, InMemoryStore, RateLimit, RateLimitBuilder, RateLimitHandle, RateLimitLayer,
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

/// The service the standard stack makes of a client `S`.
pub type StandardService<S> = Metrics<
    Retry<
        CircuitBreaker<RateLimit<Attempt<S>, ByHost, InMemoryStore>, HttpClassifier, ByHost>,
        HttpClassifier,
    >,
    HttpClassifier,
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

/// Starts the standard stack with its defaults (see the [crate docs](crate)).
pub fn stack() -> StackBuilder {
    StackBuilder {
        rate_limit: None,
        circuit_breaker: None,
        retry: None,
        metrics: None,
        attempt_timeout: Duration::from_secs(30),
    }
}

/// Configures the standard stack: each method adjusts one layer's builder, starting from the
/// stack's defaults.
pub struct StackBuilder {
    rate_limit: Option<Customise<RateLimitBuilder<ByHost>>>,
    circuit_breaker: Option<Customise<CircuitBreakerBuilder<HttpClassifier, ByHost>>>,
    retry: Option<Customise<RetryBuilder>>,
    metrics: Option<Customise<MetricsBuilder>>,
    attempt_timeout: Duration,
}

impl std::fmt::Debug for StackBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackBuilder")
            .field("attempt_timeout", &self.attempt_timeout)
            .finish_non_exhaustive()
    }
}

impl StackBuilder {
    /// Adjusts the rate limiter (per host, 100 per minute, burst 10 by default). Quotas set
    /// here replace the default quota.
    pub fn rate_limit(
        mut self,
        customise: impl FnOnce(RateLimitBuilder<ByHost>) -> RateLimitBuilder<ByHost> + 'static,
    ) -> Self {
        self.rate_limit = Some(Box::new(customise));
        self
    }

    /// Adjusts the circuit breaker (per host).
    pub fn circuit_breaker(
        mut self,
        customise: impl FnOnce(
            CircuitBreakerBuilder<HttpClassifier, ByHost>,
        ) -> CircuitBreakerBuilder<HttpClassifier, ByHost>
        + 'static,
    ) -> Self {
        self.circuit_breaker = Some(Box::new(customise));
        self
    }

    /// Adjusts the retry layer.
    pub fn retry(mut self, customise: impl FnOnce(RetryBuilder) -> RetryBuilder + 'static) -> Self {
        self.retry = Some(Box::new(customise));
        self
    }

    /// Adjusts the metrics layer.
    pub fn metrics(
        mut self,
        customise: impl FnOnce(MetricsBuilder) -> MetricsBuilder + 'static,
    ) -> Self {
        self.metrics = Some(Box::new(customise));
        self
    }

    /// The time each attempt may take (1 ms to 1 h; default 30 s).
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// Builds every layer, validating every setting.
    pub fn build(self) -> Result<Stack, ConfigError> {
        let attempt_timeout = seawall_core::check_range(
            "attempt_timeout",
            self.attempt_timeout,
            Duration::from_millis(1),
            Duration::from_secs(3600),
            "a duration from 1 ms to 1 h",
        )?;
        let limit = match self.rate_limit {
            Some(customise) => customise(RateLimitLayer::builder().per_host()),
            None => RateLimitLayer::builder()
                .per_host()
                .per_minute(100)
                .burst(10),
        }
        .build()?;
        let breaker = apply(
            self.circuit_breaker,
            CircuitBreakerLayer::builder().per_host(),
        )
        .build()?;
        let retry = apply(self.retry, RetryLayer::builder()).build()?;
        let metrics = apply(self.metrics, MetricsLayer::builder()).build()?;
        metrics.include(retry.handle());
        metrics.include(breaker.handle());
        metrics.include(limit.handle());
        Ok(Stack {
            metrics,
            retry,
            circuit_breaker: breaker,
            rate_limit: limit,
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
#[derive(Clone, Debug)]
pub struct Stack {
    metrics: MetricsLayer,
    retry: RetryLayer,
    circuit_breaker: CircuitBreakerLayer<HttpClassifier, ByHost>,
    rate_limit: RateLimitLayer<ByHost>,
    attempt_timeout: Duration,
}

impl Stack {
    /// Wraps `client` in the stack.
    pub fn service<S: Clone>(&self, client: S) -> StandardService<S> {
        self.layer(client)
    }

    /// hyper-util's client (HTTP/1 over plain TCP) wrapped in the stack.
    pub fn hyper_client<B>(&self) -> StandardService<HyperClient<B>>
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
    pub fn https_client<B>(&self) -> Result<StandardService<HttpsClient<B>>, ConfigError>
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
    ) -> StandardService<HttpsClient<B>>
    where
        B: http_body::Body + Send + Unpin + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        self.service(
            LegacyClient::builder(TokioExecutor::new()).build(client::https_connector(tls)),
        )
    }

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

    /// The metrics layer: snapshots and the exposition of every layer's figures.
    pub fn metrics(&self) -> &MetricsLayer {
        &self.metrics
    }

    /// The retry layer's figures and budget.
    pub fn retry(&self) -> RetryHandle<HttpClassifier> {
        self.retry.handle()
    }

    /// The circuit breakers, one per host.
    pub fn circuit_breaker(&self) -> CircuitBreakerHandle<seawall_core::HostKey> {
        self.circuit_breaker.handle()
    }

    /// The rate limiter's figures and pauses.
    pub fn rate_limit(&self) -> RateLimitHandle<seawall_core::HostKey, InMemoryStore> {
        self.rate_limit.handle()
    }
}

impl<S: Clone> Layer<S> for Stack {
    type Service = StandardService<S>;

    fn layer(&self, client: S) -> Self::Service {
        let attempt = Attempt {
            inner: client,
            timeout: self.attempt_timeout,
        };
        let limited = self.rate_limit.layer(attempt);
        let guarded = self.circuit_breaker.layer(limited);
        let retried = self.retry.layer(guarded);
        self.metrics.layer(retried)
    }
}
