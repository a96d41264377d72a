//! The layers that spend fewer requests: coalescing (and caching, batching), each against the
//! bare upstream in the same run.
//!
//! `cargo bench -p seawall-bench --bench economy`; the group (`economy`) and id names are a
//! contract used by BENCHMARKS.md and by the issues' targets.

use std::future::{Ready, ready};
use std::hint::black_box;
use std::task::Poll;

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{BatchSize, BenchmarkGroup, Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::Empty;
use seawall_bench::call_once;
use tower::{Layer, Service};

/// The upstream of this group: answers `200` with an empty body at once, allocating
/// nothing. A body type rather than `()`, since these layers pass (or keep) bodies.
#[derive(Debug, Clone, Copy, Default)]
struct EmptyUpstream;

impl<B> Service<Request<B>> for EmptyUpstream {
    type Response = Response<Empty<Bytes>>;
    type Error = std::io::Error;
    type Future = Ready<Result<Self::Response, std::io::Error>>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: Request<B>) -> Self::Future {
        ready(Ok(Response::new(Empty::new())))
    }
}

/// Times one request through `service`, built (and its response dropped) outside the timed
/// section, as in the `layers` bench.
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

fn economy(c: &mut Criterion) {
    let mut group = c.benchmark_group("economy");
    baseline(&mut group);
    coalesce(&mut group);
    group.finish();
}

criterion_group!(benches, economy);
criterion_main!(benches);
