//! # seawall-metrics
//!
//! A tower [`Layer`](tower::Layer) that records every HTTP client request — count, outcome,
//! latency, requests in flight — and exposes them, with the figures of the other seawall
//! layers, as OpenMetrics text through `prometheus-client`.
//!
//! ```
//! use http::{Request, Response};
//! use seawall_metrics::MetricsLayer;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let metrics = MetricsLayer::builder().build()?;
//! let upstream = service_fn(|_req: Request<()>| async {
//!     Ok::<_, std::io::Error>(Response::new(String::from("hello")))
//! });
//! let client = ServiceBuilder::new().layer(metrics.clone()).service(upstream);
//!
//! let response = client.oneshot(Request::get("http://api.example.com/").body(())?).await?;
//! // The request counts as in flight until its body is read or dropped.
//! assert_eq!(metrics.snapshot().in_flight, 1);
//! drop(response);
//!
//! let snapshot = metrics.snapshot();
//! assert_eq!((snapshot.total, snapshot.in_flight, snapshot.success_rate), (1, 0, 1.0));
//! let text = metrics.encode();
//! assert!(text.contains(
//!     r#"seawall_http_client_requests_total{http_request_method="GET",http_response_status_class="2xx",outcome="success"} 1"#
//! ));
//! # Ok(())
//! # }
//! ```
//!
//! ## What it records
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `http_client_request_duration_seconds` | histogram, to the response headers | `http_request_method`, `http_response_status_class` |
//! | `http_client_active_requests` | gauge: sent, and response body not yet read or dropped | — |
//! | `seawall_http_client_requests_total` | counter | `http_request_method`, `http_response_status_class`, `outcome` |
//! | `seawall_http_client_response_body_duration_seconds` | histogram, to the body's end (opt-in) | — |
//!
//! Names follow the OpenTelemetry HTTP client conventions in Prometheus form. Every label
//! comes from a small fixed set ([`labels`]): methods outside the common ones are `_OTHER`,
//! statuses are counted by class, outcomes are seawall-core's, plus `cancelled` for a request
//! dropped before its response arrived. Recording is a few stores into fixed arrays that only
//! the recording thread writes (one set per thread, added up when read), not atomic
//! read-modify-writes: no lock, no allocation, no label hashing per request.
//!
//! Requests are timed by the CPU's time-stamp counter (through `quanta`), which costs half a
//! `clock_gettime` and keeps real time while tokio's clock is paused; tests that time requests
//! on the paused clock choose [`LatencyClock::Tokio`] with [`MetricsBuilder::clock`].
//!
//! The rate limiter's, circuit breaker's and retry layer's figures join the same exposition
//! through [`MetricsLayer::include`], which takes any of their handles (they implement
//! [`seawall_core::FigureSource`]); the layer crates do not depend on this one.
//!
//! With the `metrics-facade` feature, `MetricsBuilder::metrics_facade` also records the
//! request figures through the `metrics` crate's facade, with handles resolved once when the
//! layer is built.
//!
//! ## Tracing
//!
//! Spans are tower-http's job: add `tower_http::trace::TraceLayer::new_for_http()` to the
//! same `ServiceBuilder`, outside or inside this layer; this crate does not rebuild tracing.

mod body;
mod clock;
mod export;
#[cfg(feature = "metrics-facade")]
mod facade;
mod future;
pub mod labels;
mod layer;
mod recorder;
mod service;
mod snapshot;

pub use body::MetricsBody;
pub use clock::LatencyClock;
pub use future::ResponseFuture;
pub use layer::{MetricsBuilder, MetricsLayer};
pub use recorder::DEFAULT_BUCKETS;
pub use service::Metrics;
pub use snapshot::Snapshot;
