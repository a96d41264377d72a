//! Memory per waiting request and per idle key, counted by the allocator.
//!
//! `cargo run --release -p seawall-bench --bin memory -- --json`
//!
//! The last line is a JSON object:
//! - `waiter_heap_bytes`: heap the rate limiter holds per queued request (its place in the
//!   queue), over 10,000 waiters;
//! - `waiter_future_bytes` and `request_bytes`: the size of a waiting request's future, which
//!   the caller holds, and of the `http::Request<()>` inside it;
//! - `waiter_bytes_beyond_request`: heap plus future, less the request (target ≤ 256);
//! - `limiter_key_bytes` and `breaker_key_bytes`: heap per idle key, over 100,000 hosts;
//! - `stack_future_bytes` and `stack_over_hyper_future_bytes`: the size of the standard
//!   stack's response future over the no-op upstream (as the `stack` group's `seawall_full`)
//!   and over hyper-util's client. Each layer's `call` moves the future of the layer below
//!   into its own, so these bytes are copied about once per layer on every request.

use std::alloc::System;
use std::future::Future;
use std::task::{Context, Waker};
use std::time::Duration;

use http::Request;
use seawall_bench::{NoopUpstream, call_once, complete};
use seawall_circuit_breaker::CircuitBreakerLayer;
use seawall_rate_limit::RateLimitLayer;
use serde_json::json;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tower::{Layer, Service, ServiceExt};

/// Counts every allocation of this process.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const WAITERS: usize = 10_000;
const KEYS: usize = 100_000;

/// Live heap bytes now (the counters fold reallocations into allocated and freed).
fn live() -> i64 {
    let stats = GLOBAL.stats();
    i64::try_from(stats.bytes_allocated).unwrap_or(i64::MAX)
        - i64::try_from(stats.bytes_deallocated).unwrap_or(i64::MAX)
}

/// The size of `future`'s type, without keeping it.
fn size_of_future<F: Future>(_future: &F) -> usize {
    std::mem::size_of::<F>()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let json_only = seawall_bench::json_only();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    let _guard = runtime.enter();
    let mut cx = Context::from_waker(Waker::noop());

    // Waiters: one token a second and no time passing, so every request after the first
    // queues (the last predicted at 10,000 s, inside the 1-day wait budget).
    let limit = RateLimitLayer::builder()
        .per_second(1)
        .wait(WAITERS + 1, Duration::from_secs(86_400))
        .build()?;
    let mut service = limit.layer(NoopUpstream);
    call_once(&mut service, Request::new(()))?;
    let mut futures = Vec::with_capacity(WAITERS);
    let future_bytes = size_of_future(&service.call(Request::new(())));
    let slots = futures.capacity();
    let before = live();
    for _ in 0..WAITERS {
        let mut future = Box::pin(service.call(Request::new(())));
        if future.as_mut().poll(&mut cx).is_ready() {
            return Err("a request was answered at once; expected it to wait".into());
        }
        futures.push(future);
    }
    let queued = limit.handle().stats().queue_depth;
    // The boxes hold the futures themselves; what remains is the limiter's.
    let waiter_heap = (live() - before - (WAITERS * future_bytes) as i64) / WAITERS as i64;
    assert_eq!(
        slots,
        futures.capacity(),
        "the vector of futures did not grow"
    );
    drop(futures);
    let request_bytes = std::mem::size_of::<Request<()>>();

    // Idle keys: one request to each of 100,000 hosts, then nothing.
    let limit = RateLimitLayer::builder()
        .per_second(1_000)
        .per_host()
        .max_keys(KEYS * 2)
        .build()?;
    let breaker = CircuitBreakerLayer::builder()
        .per_host()
        .max_keys(KEYS * 2)
        .build()?;
    let requests: Vec<Request<()>> = (0..KEYS)
        .map(|i| Request::get(format!("http://host-{i}.test/")).body(()))
        .collect::<Result<_, _>>()?;
    let mut limited = limit.layer(NoopUpstream);
    let mut guarded = breaker.layer(NoopUpstream);
    let before = live();
    for request in requests.iter().cloned() {
        call_once(&mut limited, request)?;
    }
    let limiter_key = (live() - before) / KEYS as i64;
    let before = live();
    for request in requests {
        call_once(&mut guarded, request).map_err(|error| error.to_string())?;
    }
    let breaker_key = (live() - before) / KEYS as i64;

    let beyond = waiter_heap + (future_bytes as i64 - request_bytes as i64);

    // The standard stack's future, built as the `stack` group and the `e2e` bin build it.
    let stack = seawall::stack()
        .rate_limit(|limit| limit.per_second(1_000_000_000).burst(1_000_000))
        .build()?;
    type Body = http_body_util::Empty<bytes::Bytes>;
    let empty = || Request::new(Body::new());
    let mut over_noop = stack.service(NoopUpstream);
    complete(ServiceExt::<Request<Body>>::ready(&mut over_noop)).map_err(|e| e.to_string())?;
    let stack_future = size_of_future(&over_noop.call(empty()));
    let mut over_hyper = stack.hyper_client::<Body>();
    complete(ServiceExt::<Request<Body>>::ready(&mut over_hyper)).map_err(|e| e.to_string())?;
    // Never polled: nothing is sent.
    let stack_over_hyper_future = size_of_future(&over_hyper.call(empty()));
    let summary = json!({
        "waiters": queued,
        "waiter_heap_bytes": waiter_heap,
        "waiter_future_bytes": future_bytes,
        "request_bytes": request_bytes,
        "waiter_bytes_beyond_request": beyond,
        "target_bytes_beyond_request": 256,
        "limiter_key_bytes": limiter_key,
        "breaker_key_bytes": breaker_key,
        "stack_future_bytes": stack_future,
        "stack_over_hyper_future_bytes": stack_over_hyper_future,
    });
    if !json_only {
        println!("{WAITERS} waiters queued, {KEYS} idle hosts per layer");
    }
    println!("{summary}");
    Ok(())
}
