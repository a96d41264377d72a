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
//! // Logical requests outermost; each attempt where it is sent (retries and a rate
//! // limiter would go between the two).
//! let client = ServiceBuilder::new()
//!     .layer(metrics.clone())
//!     .layer(metrics.attempts())
//!     .service(upstream);
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
//! assert!(text.contains(
//!     r#"http_client_request_duration_seconds_count{http_request_method="GET",http_response_status_code="200",server_address="api.example.com",server_port="80",url_scheme="http"} 1"#
//! ));
//! # Ok(())
//! # }
//! ```
//!
//! ## What it records
//!
//! Twice, as OpenTelemetry's HTTP client conventions ask: once per *logical* request (what
//! the caller waited for: every attempt, backoff and queue wait included) by this layer,
//! outermost, under `seawall_*` names; and once per *attempt* (each physical request) by the
//! [`AttemptMetricsLayer`] that [`MetricsLayer::attempts`] makes, placed just above the
//! client, under OpenTelemetry's names and attributes. Both land in one exposition.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `http_client_request_duration_seconds` | histogram per attempt, to the response headers or the error; OpenTelemetry's advised buckets | `http_request_method`, `http_response_status_code`, `error_type`, `server_address`, `server_port`, `url_scheme` |
//! | `http_client_active_requests` | gauge: attempts sent and not yet answered | `server_address`, `server_port`, `url_scheme` |
//! | `seawall_upstream_quota_limit`, `seawall_upstream_quota_remaining` | gauges: the quota the upstream last stated (`RateLimit`, `X-RateLimit-*`) | `server_address`, `server_port`, `url_scheme` |
//! | `seawall_http_client_request_duration_seconds` | histogram per logical request, to the response headers | `http_request_method`, `http_response_status_class` |
//! | `seawall_http_client_requests_total` | counter | `http_request_method`, `http_response_status_class`, `outcome` |
//! | `seawall_http_client_queue_wait_seconds` | histogram: what a response's attempts waited in a rate limiter | — |
//! | `seawall_http_client_request_attempts` | histogram of the attempts each logical request took, failed ones included (buckets [`ATTEMPTS_BUCKETS`]); read from [`seawall_core::Attempts`] on the response or the error's [`ClassifyError::attempts`](seawall_core::ClassifyError::attempts), one when neither says | — |
//! | `seawall_http_client_requests_in_flight` | gauge: logical requests whose response body is not yet read or dropped | — |
//! | `seawall_http_client_response_body_duration_seconds` | histogram, to the body's end (opt-in) | — |
//!
//! Every label comes from a bounded set ([`labels`]): methods outside the common ones are
//! `_OTHER`, logical statuses are counted by class, outcomes are seawall-core's, plus
//! `cancelled` for a request dropped before its response arrived. `error_type` is the status
//! code of a 4xx or 5xx answer, else the failure kind of an attempt without one (`timeout`,
//! `connect`, ..., `cancelled`). Per-host series are kept for at most
//! [`max_hosts`](MetricsBuilder::max_hosts) hosts (default [`DEFAULT_MAX_HOSTS`]); attempts to
//! any other host are recorded under `server_address="_OTHER"`, and one host keeps at most 32
//! status codes apart (a later code is `http_response_status_code="_OTHER"`). User
//! information in a URL never becomes a label. Durations carry an OpenMetrics `# UNIT` line.
//! With [`MetricsBuilder::exemplars`], a traced attempt leaves an OpenMetrics exemplar with
//! its trace id on its bucket of `http_client_request_duration_seconds`.
//!
//! Recording the logical request is a few stores into fixed arrays that only the recording
//! thread writes (one set per thread, added up when read), not atomic read-modify-writes: no
//! lock, no allocation, no label hashing per request. Recording an attempt finds its host's
//! entry with one lock-free map read keyed by the URI's authority (an entry is made once per
//! host) and adds to that entry's atomics.
//!
//! Requests are timed by the CPU's time-stamp counter (through `quanta`), which costs half a
//! `clock_gettime` and keeps real time while tokio's clock is paused; tests that time requests
//! on the paused clock choose [`LatencyClock::Tokio`] with [`MetricsBuilder::clock`].
//!
//! The rate limiter's, circuit breaker's and retry layer's figures join the same exposition
//! through [`MetricsLayer::include`], which takes any of their handles (they implement
//! [`seawall_core::FigureSource`]); the layer crates do not depend on this one.
//!
//! With the `metrics-facade` feature, `MetricsLayer::publish_to_facade` hands every figure
//! (this layer's, its attempt layers' and the included layers') with its description to the
//! `metrics` recorder installed at that moment, so a recorder installed after the stack was
//! built gets everything; `MetricsLayer::spawn_facade_publisher` does so periodically.
//! Nothing goes through the facade per request.
//!
//! [`MetricsLayer::report`] gathers every layer's figures into one typed [`Report`], whose
//! `Display` is a compact table for a status page or a demo.
//!
//! ## Tracing
//!
//! Each logical request is an `INFO` span `http.client.request` (target `seawall`) and each
//! attempt a child span `http.client.attempt`, attributed as OpenTelemetry's HTTP client span
//! conventions say: `http.request.method`, `url.full` (without user information),
//! `server.address`, `server.port`, `http.response.status_code`, `error.type` (the status
//! code of a 4xx or 5xx answer, else the failure kind, or `cancelled`) and, on a resend,
//! `http.request.resend_count`; `otel.name` is the method and `otel.kind` is `client`, for
//! `tracing-opentelemetry`. The layers between them (retry decisions, breaker transitions,
//! rate limiter waits) emit their events inside these spans. When no subscriber is
//! interested in the spans (none installed, or one that filters them out), making them costs
//! the callsite's cached interest check: no field is computed and nothing is allocated.

mod attempt;
mod body;
mod clock;
mod export;
#[cfg(feature = "metrics-facade")]
mod facade;
mod future;
mod hosts;
pub mod labels;
mod layer;
mod recorder;
mod report;
mod service;
mod snapshot;
mod trace;

pub use attempt::{
    AttemptMetrics, AttemptMetricsFuture, AttemptMetricsLayer, FAILURE_RING, TraceIdFn,
};
pub use body::MetricsBody;
pub use clock::LatencyClock;
pub use future::ResponseFuture;
pub use hosts::{DEFAULT_MAX_HOSTS, OTHER_HOST};
pub use layer::{MetricsBuilder, MetricsLayer};
pub use recorder::{ATTEMPTS_BUCKETS, DEFAULT_BUCKETS};
pub use report::{
    AttemptsSummary, BreakerKeyReport, BreakerSummary, HostReport, RateLimitSummary, RecentFailure,
    Report, RetrySummary, WaitSummary,
};
pub use service::Metrics;
pub use snapshot::Snapshot;
