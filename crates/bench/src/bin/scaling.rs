//! The standard stack shared by one and by two threads of a multi-thread runtime.
//!
//! `cargo run --release -p seawall-bench --bin scaling -- --json`
//!
//! One clone of the same stack (over a no-op upstream, limits far above the load) per task, one
//! task per worker thread, each readying and calling its clone back to back. The last line is a
//! JSON object with `one_thread_per_sec`, `two_threads_per_sec` and `scaling` (two over one;
//! target ≥ 1.6), the same with a clone per request (`scaling_cloning_per_request`, the
//! `oneshot` idiom), the same with each thread calling a host of its own
//! (`scaling_host_per_thread`: no per-host state shared), and each layer's scaling alone beside
//! the no-op upstream's (`scaling_by_layer`; `attempt_metrics` is the per-attempt layer of
//! the stack's metrics, keyed by host), with governor's keyed limiter in front of the
//! same upstream as the peer's figure (`governor_keyed`): a limiter whose quota is exact keeps
//! one word per host that every admission writes, so two threads on one host take turns
//! with it whoever wrote the limiter.
//! Each figure is the best of five runs, so that a neighbour's burst on a shared machine does
//! not decide it.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use seawall_bench::NoopUpstream;
use serde_json::json;
use tower::{Layer, Service, ServiceExt};

/// governor's keyed limiter (GCRA cells by host, in a concurrent map) in front of a service.
#[derive(Clone)]
struct GovernorLayer(Arc<governor::DefaultKeyedRateLimiter<http::uri::Authority>>);

impl GovernorLayer {
    /// A quota far above the load, as the other limiters here.
    fn new() -> Self {
        Self(Arc::new(governor::RateLimiter::keyed(
            governor::Quota::per_second(NonZeroU32::MAX),
        )))
    }
}

impl<S> Layer<S> for GovernorLayer {
    type Service = Governed<S>;

    fn layer(&self, inner: S) -> Governed<S> {
        Governed {
            inner,
            limiter: Arc::clone(&self.0),
        }
    }
}

/// A service behind [`GovernorLayer`]: each request is checked against its host's cell. The
/// quota is never reached, so a refusal (none comes) is not acted on.
#[derive(Clone)]
struct Governed<S> {
    inner: S,
    limiter: Arc<governor::DefaultKeyedRateLimiter<http::uri::Authority>>,
}

impl<S: Service<Request<B>>, B> Service<Request<B>> for Governed<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> S::Future {
        if let Some(authority) = request.uri().authority() {
            let _ = std::hint::black_box(self.limiter.check_key(authority));
        }
        self.inner.call(request)
    }
}

const PER_TASK: u64 = 400_000;
const RUNS: usize = 5;

/// Requests per second with `tasks` tasks, each sending `PER_TASK` requests through its own
/// clone of `layer` over a no-op upstream.
async fn throughput<L>(layer: &L, tasks: u64, mode: Mode) -> Result<f64, tokio::task::JoinError>
where
    L: Layer<NoopUpstream>,
    L::Service: Service<Request<Empty<Bytes>>> + Clone + Send + 'static,
    <L::Service as Service<Request<Empty<Bytes>>>>::Future: Send,
    <L::Service as Service<Request<Empty<Bytes>>>>::Error: Send,
{
    let started = Instant::now();
    let workers: Vec<_> = (0..tasks)
        .map(|task| {
            let mut service = layer.layer(NoopUpstream);
            let uri = if mode.host_per_task {
                format!("http://host-{task}.test/")
            } else {
                "http://api.test/".to_owned()
            };
            tokio::spawn(async move {
                let mut ok = 0u64;
                for _ in 0..PER_TASK {
                    let mut request = Request::new(Empty::<Bytes>::new());
                    if let Ok(uri) = uri.parse() {
                        *request.uri_mut() = uri;
                    }
                    let answered = if mode.clone_per_request {
                        // As `ServiceExt::oneshot` on a clone, the common tower idiom.
                        service.clone().oneshot(request).await.is_ok()
                    } else {
                        // The task's own clone, readied and called.
                        match service.ready().await {
                            Ok(ready) => ready.call(request).await.is_ok(),
                            Err(_) => false,
                        }
                    };
                    ok += u64::from(answered);
                }
                ok
            })
        })
        .collect();
    let mut ok = 0;
    for worker in workers {
        ok += worker.await?;
    }
    Ok(ok as f64 / started.elapsed().max(Duration::from_nanos(1)).as_secs_f64())
}

/// The best one-task and two-task throughputs of `RUNS` runs each.
async fn best_of<L>(layer: &L, mode: Mode) -> Result<(f64, f64), tokio::task::JoinError>
where
    L: Layer<NoopUpstream>,
    L::Service: Service<Request<Empty<Bytes>>> + Clone + Send + 'static,
    <L::Service as Service<Request<Empty<Bytes>>>>::Future: Send,
    <L::Service as Service<Request<Empty<Bytes>>>>::Error: Send,
{
    let (mut one, mut two) = (0f64, 0f64);
    for _ in 0..RUNS {
        one = one.max(throughput(layer, 1, mode).await?);
        two = two.max(throughput(layer, 2, mode).await?);
    }
    Ok((one, two))
}

/// How each task sends its requests.
#[derive(Clone, Copy, Default)]
struct Mode {
    /// A clone of the service per request (`oneshot`), rather than readying one clone.
    clone_per_request: bool,
    /// Each task to a host of its own, rather than all to one.
    host_per_task: bool,
}

const OWN_CLONE: Mode = Mode {
    clone_per_request: false,
    host_per_task: false,
};

fn ratio(one: f64, two: f64) -> serde_json::Value {
    json!((two / one * 1_000.0).round() / 1_000.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let json_only = seawall_bench::json_only();
    let runtime = seawall_bench::two_worker_runtime()?;
    let summary = runtime.block_on(async {
        let stack = seawall::stack()
            .rate_limit(|limit| limit.per_second(1_000_000_000).burst(1_000_000))
            .build()?;
        let (one, two) = best_of(&stack, OWN_CLONE).await?;
        let cloning = Mode {
            clone_per_request: true,
            ..OWN_CLONE
        };
        let (cloning_one, cloning_two) = best_of(&stack, cloning).await?;
        let own_host = Mode {
            host_per_task: true,
            ..OWN_CLONE
        };
        let (own_host_one, own_host_two) = best_of(&stack, own_host).await?;
        // Each layer alone, to show which one's shared state limits the stack's scaling.
        let metrics = seawall::MetricsLayer::builder().build()?;
        let retry = seawall::RetryLayer::builder().build()?;
        let breaker = seawall::CircuitBreakerLayer::builder().per_host().build()?;
        let limit = seawall::RateLimitLayer::builder()
            .per_second(1_000_000_000)
            .burst(1_000_000)
            .per_host()
            .build()?;
        let mut layers = serde_json::Map::new();
        for (name, (one, two)) in [
            // The machine's own ceiling: the no-op upstream alone.
            (
                "baseline",
                best_of(&tower::layer::util::Identity::new(), OWN_CLONE).await?,
            ),
            ("metrics", best_of(&metrics, OWN_CLONE).await?),
            (
                "attempt_metrics",
                best_of(&metrics.attempts(), OWN_CLONE).await?,
            ),
            ("retry", best_of(&retry, OWN_CLONE).await?),
            ("circuit_breaker", best_of(&breaker, OWN_CLONE).await?),
            ("rate_limit", best_of(&limit, OWN_CLONE).await?),
            (
                "governor_keyed",
                best_of(&GovernorLayer::new(), OWN_CLONE).await?,
            ),
        ] {
            layers.insert(name.to_owned(), ratio(one, two));
        }
        Ok::<_, Box<dyn std::error::Error>>(json!({
            "one_thread_per_sec": one.round() as u64,
            "two_threads_per_sec": two.round() as u64,
            "scaling": ratio(one, two),
            "target_scaling": 1.6,
            "scaling_cloning_per_request": ratio(cloning_one, cloning_two),
            "scaling_host_per_thread": ratio(own_host_one, own_host_two),
            "scaling_by_layer": layers,
        }))
    })?;
    if !json_only {
        println!(
            "the standard stack over a no-op upstream, {PER_TASK} requests per task, best of {RUNS}"
        );
    }
    println!("{summary}");
    Ok(())
}
