//! Shared pieces of the seawall benchmarks: a no-op upstream and a harness that drives a tower
//! service without an executor, so that every benchmark id pays the same fixed cost and the
//! difference between ids is the middleware's.

use std::future::{Future, Ready, ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use http::{Request, Response};
use tower::Service;

/// The upstream of every layer benchmark: answers `200` at once, allocating nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopUpstream;

impl<B> Service<Request<B>> for NoopUpstream {
    type Response = Response<()>;
    type Error = std::io::Error;
    type Future = Ready<Result<Response<()>, std::io::Error>>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: Request<B>) -> Self::Future {
        ready(Ok(Response::new(())))
    }
}

/// Polls `future` with a no-op waker until it is ready. Every future in these benchmarks
/// completes on its first or second poll; a bounded spin keeps a wrong benchmark from hanging.
pub fn complete<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1_000_000 {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
    }
    // A benchmark whose future never completes is broken; stopping loudly is right here.
    std::process::abort()
}

/// One request through `service`: readiness, call, completion.
///
/// Never inlined, so that every id pays the same call into it and the instruction counts of
/// `instructions.py` can find it, the baseline's included.
#[inline(never)]
pub fn call_once<S, R>(service: &mut S, request: R) -> Result<S::Response, S::Error>
where
    S: Service<R>,
{
    complete(std::future::poll_fn(|cx| service.poll_ready(cx)))?;
    complete(service.call(request))
}

/// Where criterion keeps a group's results: `criterion/<group>` under the workspace's target
/// directory (or `CARGO_TARGET_DIR`).
pub fn criterion_group_dir(group: &str) -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target")
        })
        .join("criterion")
        .join(group)
}

/// The file in which criterion keeps the estimates of `group`/`id` from the last run that
/// measured it.
pub fn criterion_estimates_path(group: &str, id: &str) -> std::path::PathBuf {
    criterion_group_dir(group)
        .join(id)
        .join("new/estimates.json")
}

/// The `median` estimate of `group`/`id` that criterion saved in its last run (the point
/// estimate and its confidence interval, in nanoseconds), if it saved one.
pub fn criterion_median(group: &str, id: &str) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(criterion_estimates_path(group, id)).ok()?;
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()?
        .get("median")
        .cloned()
}

/// When criterion saved the estimates of `group`/`id` it last measured, if it saved any.
pub fn criterion_saved_at(group: &str, id: &str) -> Option<std::time::SystemTime> {
    std::fs::metadata(criterion_estimates_path(group, id))
        .ok()?
        .modified()
        .ok()
}

/// Whether a bin was asked for its JSON summary only (`--json`).
pub fn json_only() -> bool {
    std::env::args().any(|arg| arg == "--json")
}

/// A multi-thread runtime with two workers, one per core of the machines these run on.
pub fn two_worker_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

/// A copy of a request with a cheaply cloned body: what a `tower::retry::Policy` must do.
pub fn clone_request<B: Clone>(request: &Request<B>) -> Request<B> {
    let mut copy = Request::new(request.body().clone());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    *copy.extensions_mut() = request.extensions().clone();
    copy
}

/// A request that is `Clone`, which tower-resilience's retry requires.
#[derive(Debug)]
pub struct CloneableRequest<B>(pub Request<B>);

impl<B: Clone> Clone for CloneableRequest<B> {
    fn clone(&self) -> Self {
        CloneableRequest(clone_request(&self.0))
    }
}

/// What the tower-resilience stack fails with: its breaker's error around its limiter's
/// around tower's timeout's.
pub type TowerResilienceError = tower_resilience::circuitbreaker::CircuitBreakerError<
    tower_resilience::ratelimiter::RateLimiterServiceError<tower::BoxError>,
>;

/// tower-resilience's circuit breaker with the settings every breaker in the benchmarks
/// has: open at 50 % failures of the last 100 calls, at least 20 calls, for 60 s.
pub fn tower_resilience_breaker()
-> Result<tower_resilience::circuitbreaker::CircuitBreakerLayer, String> {
    tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .failure_rate_threshold(0.5)
        .sliding_window_size(100)
        .minimum_number_of_calls(20)
        .wait_duration_in_open(std::time::Duration::from_secs(60))
        .build()
        .map_err(|error| format!("tower-resilience's breaker: {error:?}"))
}

/// tower-resilience's retry, circuit breaker and rate limiter over tower's per-attempt
/// timeout, with the standard stack's settings and in its order: 3 attempts with exponential
/// backoff from 1 s, 5xx retried; the breaker of [`tower_resilience_breaker`]; a limit far
/// above any load; a 30 s timeout. What a user of
/// tower-resilience builds in place of seawall's stack. Its retry needs a `Clone` request, so
/// requests travel as [`CloneableRequest`] and are unwrapped in front of `upstream`.
pub fn tower_resilience_stack<S, B, RB>(
    upstream: S,
) -> Result<
    impl Service<
        CloneableRequest<B>,
        Response = Response<RB>,
        Error = TowerResilienceError,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static,
    String,
>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Error: Into<tower::BoxError> + Send + 'static,
    S::Future: Send + 'static,
    B: Clone + Send + 'static,
    RB: Send + 'static,
{
    use std::time::Duration;
    use tower::Layer;
    let retry = tower_resilience::retry::RetryLayer::<
        CloneableRequest<B>,
        Response<RB>,
        TowerResilienceError,
    >::builder()
    .max_attempts(3)
    .exponential_backoff(Duration::from_secs(1))
    .retry_on_response(|response: &Response<RB>| response.status().is_server_error())
    .build();
    let breaker = tower_resilience_breaker()?;
    let limit = tower_resilience::ratelimiter::RateLimiterLayer::builder()
        .limit_for_period(usize::MAX / 2)
        .refresh_period(Duration::from_secs(1))
        .build()
        .map_err(|error| format!("tower-resilience's limiter: {error:?}"))?;
    let upstream =
        tower::util::MapRequestLayer::new(|CloneableRequest(request)| request).layer(upstream);
    Ok(retry.layer(breaker.layer(
        limit.layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(30)).layer(upstream)),
    )))
}

/// Serves HTTP/1 on a free loopback port from tasks on the current runtime, each connection
/// with a service `make_service` makes; returns the URL of `path` there. The server of the
/// end-to-end bins.
pub async fn serve_on_loopback<M, S>(path: &str, make_service: M) -> std::io::Result<String>
where
    M: Fn() -> S + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming> + Send + 'static,
    S::Future: Send,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: Send + 'static,
    <S::ResBody as hyper::body::Body>::Data: Send,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let url = format!("http://{}{path}", listener.local_addr()?);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let service = make_service();
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(url)
}

/// [`serve_on_loopback`] with a small fixed JSON answer to every request, at `/items`.
pub async fn serve_small_answer() -> std::io::Result<String> {
    serve_on_loopback("/items", || {
        hyper::service::service_fn(|_request: Request<hyper::body::Incoming>| async {
            Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(
                bytes::Bytes::from_static(b"{\"id\":7,\"name\":\"anchor\"}"),
            )))
        })
    })
    .await
}
