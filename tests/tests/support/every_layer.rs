//! Every layer composed by hand in the standard order over hyper-util's client, each
//! layer's figures included in the metrics layer: what the exposition and report tests
//! read.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use seawall_circuit_breaker::{CircuitBreaker, CircuitBreakerLayer};
use seawall_core::{ByHost, FigureSource, HttpClassifier, KeyExtractor};
use seawall_metrics::{AttemptMetrics, Metrics, MetricsLayer};
use seawall_rate_limit::{InMemoryStore, RateLimit, RateLimitLayer};
use seawall_retry::{ReplayBody, Retry, RetryLayer};
use tower::{Layer, ServiceBuilder};

/// The hand-built stack of [`every_layer`], keyed by `X` in the limiter.
pub(crate) type EveryLayer<X> = Metrics<
    Retry<
        CircuitBreaker<
            RateLimit<
                AttemptMetrics<Client<HttpConnector, ReplayBody<Empty<Bytes>>>>,
                X,
                InMemoryStore,
            >,
            HttpClassifier,
            ByHost,
        >,
        HttpClassifier,
    >,
    HttpClassifier,
>;

/// Metrics over a retry with a 5 ms fixed backoff, a breaker per host, `limit`, and the
/// attempt metrics, over hyper-util's client.
pub(crate) fn every_layer<X>(metrics: &MetricsLayer, limit: RateLimitLayer<X>) -> EveryLayer<X>
where
    X: KeyExtractor + Clone,
    seawall_rate_limit::RateLimitHandle<X::Key, InMemoryStore>: FigureSource,
    RateLimitLayer<X>: Layer<
            AttemptMetrics<Client<HttpConnector, ReplayBody<Empty<Bytes>>>>,
            Service = RateLimit<
                AttemptMetrics<Client<HttpConnector, ReplayBody<Empty<Bytes>>>>,
                X,
                InMemoryStore,
            >,
        >,
{
    let retry = RetryLayer::builder()
        .fixed_backoff(Duration::from_millis(5))
        .build()
        .expect("valid config");
    let breaker = CircuitBreakerLayer::builder()
        .per_host()
        .build()
        .expect("valid config");
    metrics.include(retry.handle());
    metrics.include(breaker.handle());
    metrics.include(limit.handle());
    let client = Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Empty<Bytes>>>();
    ServiceBuilder::new()
        .layer(metrics.clone())
        .layer(retry)
        .layer(breaker)
        .layer(limit)
        .layer(metrics.attempts())
        .service(client)
}
