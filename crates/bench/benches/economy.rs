//! The layers that spend fewer requests (caching, coalescing), each against the bare upstream
//! in the same run.
//!
//! `cargo bench -p seawall-bench --bench economy`; the group (`economy`) and id names are a
//! contract used by BENCHMARKS.md and by the issues' targets.

use std::cell::Cell;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::task::{Context, Poll};

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{BatchSize, BenchmarkGroup, Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{Empty, Full};
use seawall_bench::call_once;
use tower::{Layer, Service};

/// The upstream of `baseline` and `coalesce_single`: answers `200` with an empty body at
/// once, allocating nothing. A body type rather than `()`, since these layers pass (or keep)
/// bodies.
#[derive(Debug, Clone, Copy, Default)]
struct EmptyUpstream;

impl<B> Service<Request<B>> for EmptyUpstream {
    type Response = Response<Empty<Bytes>>;
    type Error = std::io::Error;
    type Future = Ready<Result<Self::Response, std::io::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: Request<B>) -> Self::Future {
        ready(Ok(Response::new(Empty::new())))
    }
}

/// The upstream of the cache ids: answers `200` at once with a small cacheable body (a cache
/// stores bodies, so its upstream must have one).
#[derive(Debug, Clone)]
struct BodyUpstream {
    body: Bytes,
}

impl BodyUpstream {
    fn new() -> Self {
        BodyUpstream {
            body: Bytes::from_static(br#"{"items":[1,2,3]}"#),
        }
    }
}

impl<B> Service<Request<B>> for BodyUpstream {
    type Response = Response<Full<Bytes>>;
    type Error = std::io::Error;
    type Future = Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: Request<B>) -> Self::Future {
        let mut response = Response::new(Full::new(self.body.clone()));
        response.headers_mut().insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("max-age=3600"),
        );
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        ready(Ok(response))
    }
}

/// Times one request through `service`, requests made by `request`. Requests are built, and
/// responses dropped, outside the timed section (as in the `layers` bench), so the figures are
/// the services' own cost.
fn bench_requests<S, R>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    id: &str,
    mut service: S,
    request: impl FnMut() -> R,
) where
    S: Service<R>,
{
    let request = std::cell::RefCell::new(request);
    group.bench_function(id, |b| {
        b.iter_batched(
            || (request.borrow_mut())(),
            |request| call_once(&mut service, black_box(request)),
            BatchSize::SmallInput,
        )
    });
}

/// A request to an upstream host, as a client sends it: a GET with no body.
fn api_request() -> Request<Empty<Bytes>> {
    Request::get("https://api.example.com/v1/items")
        .body(Empty::new())
        .expect("a valid request")
}

/// `baseline`: the bare upstream.
fn baseline(group: &mut BenchmarkGroup<'_, WallTime>) {
    bench_requests(group, "baseline", EmptyUpstream, api_request);
}

/// `coalesce_single`: a request with no identical one in flight (no follower): it leads its
/// call, entering and leaving the in-flight map.
fn coalesce(group: &mut BenchmarkGroup<'_, WallTime>) {
    let layer = seawall_coalesce::CoalesceLayer::builder()
        .build()
        .expect("valid config");
    bench_requests(
        group,
        "coalesce_single",
        layer.layer(EmptyUpstream),
        api_request,
    );
}

/// `cache_hit`, `cache_miss`, and the peer's hit, `http_cache_tower_hit`.
fn cache(group: &mut BenchmarkGroup<'_, WallTime>) {
    // A fresh hit: the same URL, stored by a first call outside the timed section.
    let layer = seawall_cache::CacheLayer::builder()
        .build()
        .expect("a valid cache");
    let mut hit = layer.layer(BodyUpstream::new());
    call_once(&mut hit, api_request()).expect("the first call stores the answer");
    let second = call_once(&mut hit, api_request()).expect("an answer");
    assert_eq!(
        second.extensions().get::<seawall_cache::CacheStatus>(),
        Some(&seawall_cache::CacheStatus::Hit),
        "the benchmark must time hits"
    );
    bench_requests(group, "cache_hit", hit, api_request);

    // A miss that is stored: a new URL every time (the store, bounded at its default
    // 64 MiB, evicts as it fills).
    let layer = seawall_cache::CacheLayer::builder()
        .build()
        .expect("a valid cache");
    let miss = layer.layer(BodyUpstream::new());
    let next = Cell::new(0u64);
    bench_requests(group, "cache_miss", miss, || {
        let n = next.get();
        next.set(n + 1);
        Request::get(format!("https://api.example.com/v1/items/{n}"))
            .body(Empty::<Bytes>::new())
            .expect("a valid request")
    });

    // The peer: http-cache-tower with its in-memory (moka) manager, a fresh hit.
    let manager = http_cache::MokaManager::default();
    let mut peer = http_cache_tower::HttpCacheLayer::new(manager).layer(BodyUpstream::new());
    call_once(&mut peer, api_request()).expect("the first call stores the answer");
    let second = call_once(&mut peer, api_request()).expect("an answer");
    assert_eq!(
        second.headers().get("x-cache").map(|v| v.as_bytes()),
        Some(&b"HIT"[..]),
        "the benchmark must time the peer's hits"
    );
    bench_requests(group, "http_cache_tower_hit", peer, api_request);
}

fn economy(c: &mut Criterion) {
    // Layers that read tokio's clock need a runtime entered.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let _context = runtime.enter();
    let mut group = c.benchmark_group("economy");
    baseline(&mut group);
    coalesce(&mut group);
    cache(&mut group);
    group.finish();
}

criterion_group!(benches, economy);
criterion_main!(benches);
