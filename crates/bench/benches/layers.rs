//! Per-layer benchmarks, each layer side by side with its peers in the same run.
//!
//! `cargo bench -p seawall-bench --bench layers -- <group>`; the group and id names are a
//! contract used by BENCHMARKS.md and by the issues' targets.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{BatchSize, BenchmarkGroup, Criterion, criterion_group, criterion_main};
use http::Request;
use http_body_util::Full;
use seawall_bench::{
    CloneableRequest, NoopUpstream, call_once, clone_request, complete, tower_resilience_breaker,
    tower_resilience_stack,
};
use tower::{Layer, Service};

/// Times one request through `service`. Requests are built, and responses dropped, outside
/// the timed section, so the figures are the services' own cost.
fn bench_service<S>(group: &mut BenchmarkGroup<'_, WallTime>, id: &str, service: S)
where
    S: Service<Request<()>>,
{
    bench_requests(group, id, service, || Request::new(()));
}

/// As [`bench_service`], with requests made by `request`.
fn bench_requests<S, R>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    id: &str,
    mut service: S,
    request: impl Fn() -> R,
) where
    S: Service<R>,
{
    group.bench_function(id, |b| {
        b.iter_batched(
            &request,
            |request| call_once(&mut service, black_box(request)),
            BatchSize::SmallInput,
        )
    });
}

/// The runtime every group runs in: layers that read tokio's clock need one entered.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime")
}

/// A request to an upstream host, as a client sends it.
fn api_request() -> Request<()> {
    Request::get("https://api.example.com/v1/items")
        .body(())
        .expect("a valid request")
}

fn rate_limit(c: &mut Criterion) {
    let runtime = runtime();
    let _context = runtime.enter();
    let mut group = c.benchmark_group("rate_limit");
    // Every limiter is set far above what the loop can reach, so none ever binds: these
    // figures are the cost of admitting a request.
    bench_requests(&mut group, "baseline", NoopUpstream, api_request);

    let seawall = seawall_rate_limit::RateLimitLayer::builder()
        .per_second(1_000_000_000)
        .burst(1_000_000)
        .build()
        .expect("valid config");
    bench_requests(
        &mut group,
        "seawall",
        seawall.layer(NoopUpstream),
        api_request,
    );

    // The same limiter on the processor's time-stamp counter (through `quanta`) instead of
    // tokio's clock: the opt-in cheap clock, beside governor's, which reads the same counter.
    let tsc = seawall_rate_limit::RateLimitLayer::builder()
        .per_second(1_000_000_000)
        .burst(1_000_000)
        .clock(seawall_core::Clock::tsc())
        .build()
        .expect("valid config");
    bench_requests(
        &mut group,
        "seawall_tsc",
        tsc.layer(NoopUpstream),
        api_request,
    );

    let keyed = seawall_rate_limit::RateLimitLayer::builder()
        .per_second(1_000_000_000)
        .burst(1_000_000)
        .per_host()
        .build()
        .expect("valid config");
    bench_requests(
        &mut group,
        "seawall_keyed",
        keyed.layer(NoopUpstream),
        api_request,
    );

    // A window far above the loop's pace: each admission is logged, and the log's oldest
    // entries leave it as they age past the millisecond.
    let window = seawall_rate_limit::RateLimitLayer::builder()
        .window(100_000, Duration::from_millis(1))
        .build()
        .expect("valid config");
    bench_requests(
        &mut group,
        "seawall_window",
        window.layer(NoopUpstream),
        api_request,
    );

    // Adaptive, never throttled: each answer is counted toward the measured rate.
    let adaptive = seawall_rate_limit::RateLimitLayer::builder()
        .per_second(1_000_000_000)
        .burst(1_000_000)
        .adaptive()
        .build()
        .expect("valid config");
    bench_requests(
        &mut group,
        "seawall_adaptive",
        adaptive.layer(NoopUpstream),
        api_request,
    );

    let quota = governor::Quota::per_second(std::num::NonZeroU32::MAX)
        .allow_burst(std::num::NonZeroU32::new(1_000_000).expect("non-zero"));
    let governor = governor::RateLimiter::direct(quota);
    group.bench_function("governor_direct", |b| {
        b.iter(|| black_box(governor.check()))
    });

    let tower_limit = tower::limit::RateLimitLayer::new(u64::MAX, Duration::from_secs(1));
    bench_requests(
        &mut group,
        "tower_rate_limit",
        tower_limit.layer(NoopUpstream),
        api_request,
    );

    let resilience = tower_resilience::ratelimiter::RateLimiterLayer::builder()
        .limit_for_period(usize::MAX / 2)
        .refresh_period(Duration::from_secs(1))
        .build()
        .expect("valid config");
    bench_requests(
        &mut group,
        "tower_resilience",
        resilience.layer(NoopUpstream),
        api_request,
    );
    group.finish();
}

fn circuit_breaker(c: &mut Criterion) {
    let runtime = runtime();
    let _context = runtime.enter();
    let mut group = c.benchmark_group("circuit_breaker");

    bench_service(&mut group, "baseline", NoopUpstream);

    // The same settings for every breaker: 50 % of the last 100 calls, at least 20 calls.
    let closed = seawall_circuit_breaker::CircuitBreakerLayer::builder()
        .failure_rate(50.0)
        .count_window(100)
        .minimum_calls(20)
        .build()
        .expect("valid config");
    bench_service(&mut group, "seawall_closed", closed.layer(NoopUpstream));

    let open = seawall_circuit_breaker::CircuitBreakerLayer::builder()
        .build()
        .expect("valid config");
    open.handle().trip(&());
    bench_service(&mut group, "seawall_open_reject", open.layer(NoopUpstream));

    let resilience = tower_resilience_breaker().expect("valid config");
    bench_service(
        &mut group,
        "tower_resilience_closed",
        resilience.layer(NoopUpstream),
    );

    // failsafe has no tower integration: the upstream's future is run through its breaker,
    // which is what a hand-written failsafe middleware would do per call.
    use failsafe::futures::CircuitBreaker as _;
    let failsafe = failsafe::Config::new()
        .failure_policy(failsafe::failure_policy::success_rate_over_time_window(
            0.5,
            20,
            Duration::from_secs(10),
            failsafe::backoff::constant(Duration::from_secs(60)),
        ))
        .build();
    let mut upstream = NoopUpstream;
    group.bench_function("failsafe_closed", |b| {
        b.iter_batched(
            || Request::new(()),
            |request| {
                complete(std::future::poll_fn(|cx| {
                    Service::<Request<()>>::poll_ready(&mut upstream, cx)
                }))
                .ok();
                complete(failsafe.call(upstream.call(black_box(request))))
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// A request with a 1 KiB body, as a client sends it.
fn post_1k() -> Request<Full<Bytes>> {
    static BODY: [u8; 1024] = [b'x'; 1024];
    Request::put("https://api.example.com/v1/items/7")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(&BODY)))
        .expect("a valid request")
}

/// tower's own retry, with a policy that clones the request and retries 5xx and errors up to
/// twice, as a user of `tower::retry` writes it.
#[derive(Clone)]
struct ClonePolicy {
    retries_left: u32,
}

impl<B, E> tower::retry::Policy<Request<Full<Bytes>>, http::Response<B>, E> for ClonePolicy {
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        _request: &mut Request<Full<Bytes>>,
        result: &mut Result<http::Response<B>, E>,
    ) -> Option<Self::Future> {
        let failed = result
            .as_ref()
            .map_or(true, |response| response.status().is_server_error());
        if failed && self.retries_left > 0 {
            self.retries_left -= 1;
            Some(std::future::ready(()))
        } else {
            None
        }
    }

    fn clone_request(&mut self, request: &Request<Full<Bytes>>) -> Option<Request<Full<Bytes>>> {
        Some(clone_request(request))
    }
}

fn retry(c: &mut Criterion) {
    let runtime = runtime();
    let _context = runtime.enter();
    let mut group = c.benchmark_group("retry");
    // Every upstream answers 200 at once: these figures are the cost of a request that
    // succeeds first time, the steady state of a healthy upstream.
    bench_requests(&mut group, "baseline", NoopUpstream, post_1k);

    let seawall = seawall_retry::RetryLayer::builder()
        .build()
        .expect("valid config");
    bench_requests(
        &mut group,
        "seawall_ok",
        seawall.layer(NoopUpstream),
        post_1k,
    );

    let tower_retry = tower::retry::RetryLayer::new(ClonePolicy { retries_left: 2 });
    bench_requests(
        &mut group,
        "tower_retry_clone_ok",
        tower_retry.layer(NoopUpstream),
        post_1k,
    );

    let resilience = tower_resilience::retry::RetryLayer::<
        CloneableRequest<Full<Bytes>>,
        http::Response<()>,
        std::io::Error,
    >::builder()
    .max_attempts(3)
    .exponential_backoff(Duration::from_secs(1))
    .retry_on_response(|response: &http::Response<()>| response.status().is_server_error())
    .build();
    let upstream =
        tower::util::MapRequestLayer::new(|CloneableRequest(request)| request).layer(NoopUpstream);
    bench_requests(
        &mut group,
        "tower_resilience_ok",
        resilience.layer(upstream),
        || CloneableRequest(post_1k()),
    );
    group.finish();
}

/// As [`bench_requests`], with the response dropped inside the timed section: a metrics layer
/// does part of its work (the in-flight gauge) when the response body goes.
fn bench_requests_dropped<S, R>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    id: &str,
    mut service: S,
    request: impl Fn() -> R,
) where
    S: Service<R>,
{
    group.bench_function(id, |b| {
        b.iter_batched(
            &request,
            |request| drop(call_once(&mut service, black_box(request))),
            BatchSize::SmallInput,
        )
    });
}

/// Records one finished request: method, status class and latency in seconds.
type RecordFn = fn(&Peers, &'static str, &'static str, f64);

/// The labels every peer records: method and status class, as static strings.
type PeerLabels = [(&'static str, &'static str); 2];

/// prometheus-client's histogram, and how a `Family` makes one.
type PromHistogram = prometheus_client::metrics::histogram::Histogram;

/// The peer metrics libraries, set up once.
struct Peers {
    requests: prometheus_client::metrics::family::Family<
        PeerLabels,
        prometheus_client::metrics::counter::Counter,
    >,
    latency: prometheus_client::metrics::family::Family<
        PeerLabels,
        PromHistogram,
        fn() -> PromHistogram,
    >,
}

fn latency_histogram() -> prometheus_client::metrics::histogram::Histogram {
    prometheus_client::metrics::histogram::Histogram::new(seawall_metrics::DEFAULT_BUCKETS)
}

/// A family counter and histogram looked up per request, as a prometheus-client user writes
/// it (labels as static strings, the cheapest form `Family` allows).
fn record_prometheus_client(peers: &Peers, method: &'static str, status: &'static str, secs: f64) {
    let labels = [
        ("http_request_method", method),
        ("http_response_status_class", status),
    ];
    peers.requests.get_or_create(&labels).inc();
    peers.latency.get_or_create(&labels).observe(secs);
}

/// The same through the `metrics` facade's macros, into the Prometheus recorder.
fn record_metrics_rs(_: &Peers, method: &'static str, status: &'static str, secs: f64) {
    metrics::counter!("http_client_requests_total", "http_request_method" => method, "http_response_status_class" => status).increment(1);
    metrics::histogram!("http_client_request_duration_seconds", "http_request_method" => method, "http_response_status_class" => status).record(secs);
}

/// A tower service that times each request and hands it to a peer library.
#[derive(Clone)]
struct PeerMetrics<S> {
    inner: S,
    peers: std::sync::Arc<Peers>,
    record: RecordFn,
}

pin_project_lite::pin_project! {
    struct PeerFuture<F> {
        #[pin]
        inner: F,
        started: std::time::Instant,
        method: &'static str,
        peers: std::sync::Arc<Peers>,
        record: RecordFn,
    }
}

impl<F, B, E> std::future::Future for PeerFuture<F>
where
    F: std::future::Future<Output = Result<http::Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        let status = match &result {
            Ok(response) => {
                seawall_metrics::labels::STATUS_CLASSES
                    [usize::from(response.status().as_u16() / 100).clamp(1, 5) - 1]
            }
            Err(_) => "none",
        };
        (this.record)(
            this.peers,
            this.method,
            status,
            this.started.elapsed().as_secs_f64(),
        );
        std::task::Poll::Ready(result)
    }
}

impl<S, B> Service<Request<B>> for PeerMetrics<S>
where
    S: Service<Request<B>, Response = http::Response<()>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = PeerFuture<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let method = match *request.method() {
            http::Method::GET => "GET",
            http::Method::POST => "POST",
            _ => "_OTHER",
        };
        PeerFuture {
            started: std::time::Instant::now(),
            inner: self.inner.call(request),
            method,
            peers: std::sync::Arc::clone(&self.peers),
            record: self.record,
        }
    }
}

/// A subscriber interested in warnings and errors only, and in no span.
struct SpansFilteredOut;

impl tracing::Subscriber for SpansFilteredOut {
    fn register_callsite(
        &self,
        metadata: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if self.enabled(metadata) {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        metadata.is_event() && *metadata.level() <= tracing::Level::WARN
    }
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::WARN)
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

fn metrics(c: &mut Criterion) {
    let runtime = runtime();
    let _context = runtime.enter();
    let mut group = c.benchmark_group("metrics");
    bench_requests_dropped(&mut group, "baseline", NoopUpstream, api_request);

    let seawall = seawall_metrics::MetricsLayer::builder()
        .build()
        .expect("valid config");
    bench_requests_dropped(
        &mut group,
        "seawall",
        seawall.layer(NoopUpstream),
        api_request,
    );

    // The same layer with a subscriber installed that filters its spans out (as a `warn`
    // level filter does): what a service with logging on pays for the spans it does not keep.
    {
        let _subscriber = tracing::subscriber::set_default(SpansFilteredOut);
        bench_requests_dropped(
            &mut group,
            "seawall_traced",
            seawall.layer(NoopUpstream),
            api_request,
        );
    }

    let peers = std::sync::Arc::new(Peers {
        requests: Default::default(),
        latency: prometheus_client::metrics::family::Family::new_with_constructor(
            latency_histogram,
        ),
    });
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register("http_client_requests", "Requests.", peers.requests.clone());
    registry.register(
        "http_client_request_duration_seconds",
        "Latency.",
        peers.latency.clone(),
    );
    let prometheus_client = PeerMetrics {
        inner: NoopUpstream,
        peers: std::sync::Arc::clone(&peers),
        record: record_prometheus_client,
    };
    bench_requests_dropped(
        &mut group,
        "prometheus_client_family",
        prometheus_client,
        api_request,
    );

    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&seawall_metrics::DEFAULT_BUCKETS)
        .expect("valid buckets")
        .build_recorder();
    // A benchmark process installs its recorder once; a second install only fails.
    let _ = metrics::set_global_recorder(recorder);
    let metrics_rs = PeerMetrics {
        inner: NoopUpstream,
        peers,
        record: record_metrics_rs,
    };
    bench_requests_dropped(&mut group, "metrics_rs_macro", metrics_rs, api_request);
    group.finish();
}

/// A request as the standard stack's client takes it: an empty, replayable body.
fn stack_request() -> Request<http_body_util::Empty<Bytes>> {
    Request::get("https://api.example.com/v1/items")
        .body(http_body_util::Empty::new())
        .expect("a valid request")
}

fn stack(c: &mut Criterion) {
    let runtime = runtime();
    let _context = runtime.enter();
    let mut group = c.benchmark_group("stack");
    bench_requests_dropped(&mut group, "baseline", NoopUpstream, stack_request);

    // The facade's standard stack with its defaults, except a limit far above what the loop
    // reaches: no limit hit, a closed breaker, success at the first attempt.
    let standard = seawall::stack()
        .rate_limit(|limit| limit.per_second(1_000_000_000).burst(1_000_000))
        .build()
        .expect("valid config");
    bench_requests_dropped(
        &mut group,
        "seawall_full",
        standard.service(NoopUpstream),
        stack_request,
    );

    // tower-resilience's rate limiter, circuit breaker and retry with the same settings, over
    // the same per-attempt timeout (tower's), in the same order.
    let resilience = tower_resilience_stack(NoopUpstream).expect("valid config");
    bench_requests_dropped(&mut group, "tower_resilience_full", resilience, || {
        CloneableRequest(stack_request())
    });
    group.finish();
}

/// What admitting a request is made of, each part alone: the floor under the `rate_limit`
/// group's figures. A limiter on tokio's clock (so that it works on paused time) reads that
/// clock and turns the reading into a number it can compare and swap; governor's
/// `governor_direct` reads the time-stamp counter through `quanta` instead. Without tokio's
/// `test-util` feature (as here) tokio's clock is std's, so `tokio_clock` and `std_clock`
/// run the same code: the pair shows how far two runs of it drift. `request_clone` and
/// `alloc_free_64` are the floor under the `retry` group's: what keeping a copy of its request
/// costs when the request is cloned, and the one allocation seawall's copy takes instead.
fn floor(c: &mut Criterion) {
    let runtime = runtime();
    let _context = runtime.enter();
    let mut group = c.benchmark_group("floor");
    group.bench_function("tokio_clock", |b| b.iter(tokio::time::Instant::now));
    group.bench_function("std_clock", |b| b.iter(std::time::Instant::now));
    let quanta = quanta::Clock::new();
    group.bench_function("quanta_clock", |b| b.iter(|| quanta.now()));
    let origin = tokio::time::Instant::now();
    let later = origin + Duration::from_millis(1_500);
    group.bench_function("nanos_since_origin", |b| {
        b.iter(|| {
            black_box(later)
                .duration_since(black_box(origin))
                .as_nanos() as u64
        })
    });
    let word = std::sync::atomic::AtomicU64::new(0);
    group.bench_function("compare_exchange", |b| {
        b.iter(|| {
            let current = word.load(std::sync::atomic::Ordering::Acquire);
            black_box(word.compare_exchange(
                current,
                current + 1,
                std::sync::atomic::Ordering::AcqRel,
                std::sync::atomic::Ordering::Acquire,
            ))
        })
    });
    let counter = seawall_core::ThreadCounter::new();
    group.bench_function("thread_counter_add", |b| b.iter(|| counter.add(1)));
    let shared = std::sync::Arc::new(0u64);
    group.bench_function("arc_clone_drop", |b| {
        b.iter(|| drop(black_box(std::sync::Arc::clone(&shared))))
    });
    // The retry group's request cloned as a `tower::retry::Policy` clones it, and the clone
    // dropped: the copy that any retry layer must keep while the first attempt is sent.
    group.bench_function("request_clone", |b| {
        b.iter_batched(
            post_1k,
            |request| {
                drop(black_box(clone_request(black_box(&request))));
                request
            },
            BatchSize::SmallInput,
        )
    });
    // One small allocation and its release, which seawall's retry copy takes per request.
    group.bench_function("alloc_free_64", |b| {
        b.iter(|| drop(black_box(Vec::<u8>::with_capacity(black_box(64)))))
    });
    group.finish();
}

criterion_group!(
    layers,
    circuit_breaker,
    rate_limit,
    retry,
    metrics,
    stack,
    floor
);
criterion_main!(layers);
