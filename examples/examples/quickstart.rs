//! The four seawall layers over hyper-util's client, against a flaky upstream.
//!
//! `cargo run --release -p seawall-examples --example quickstart`
//!
//! An upstream on loopback enforces its own quota (20 requests/s, burst 5, answering 429 with
//! `Retry-After: 1` beyond it) and is down (503) for a while. The same workload, 4 workers
//! sending 15 requests each one after another, goes through a bare client and then through
//! the seawall stack: metrics, retry, circuit breaker and rate limiter.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::join_all;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use seawall_circuit_breaker::{BreakerError, CircuitBreakerLayer};
use seawall_examples::{Upstream, respond};
use seawall_metrics::MetricsLayer;
use seawall_rate_limit::RateLimitLayer;
use seawall_rate_limit::gcra::GcraCells;
use seawall_retry::{ReplayBody, RetryError, RetryLayer};
use tower::{Service, ServiceBuilder, ServiceExt};

/// 4 workers, each sending 15 requests one after another; the outcomes, counted. A worker
/// told by a refusal when to come back (`come_back`) waits that long before its next request.
async fn workload<S, B, E>(
    service: S,
    url: &http::Uri,
    come_back: impl Fn(&E) -> Option<Duration> + Copy,
) -> BTreeMap<String, u32>
where
    S: Service<http::Request<Empty<Bytes>>, Response = http::Response<B>, Error = E> + Clone,
    E: std::fmt::Display,
{
    let workers = (0..4).map(|_| {
        let service = service.clone();
        async move {
            let mut outcomes = Vec::new();
            for _ in 0..15 {
                let request = http::Request::get(url.clone())
                    .body(Empty::new())
                    .unwrap_or_default();
                match service.clone().oneshot(request).await {
                    Ok(response) => outcomes.push(response.status().to_string()),
                    Err(error) => match come_back(&error) {
                        Some(wait) => {
                            outcomes.push("refused at once by the open breaker".to_owned());
                            tokio::time::sleep(wait).await;
                        }
                        None => outcomes.push(format!("error: {error}")),
                    },
                }
            }
            outcomes
        }
    });
    let mut counts = BTreeMap::new();
    for outcome in join_all(workers).await.into_iter().flatten() {
        *counts.entry(outcome).or_insert(0) += 1;
    }
    counts
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quota = seawall_rate_limit::Quota::per_second(20)?.burst(5)?;
    let started = Instant::now();
    let upstream_quota = Arc::new(GcraCells::new(1));
    // Each run starts by setting this: the upstream is down from 1.0 s to 1.6 s into it.
    let run_start = Arc::new(std::sync::Mutex::new(Instant::now()));
    let run = Arc::clone(&run_start);
    let upstream = Upstream::start(move |_request| {
        let now = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let admitted = upstream_quota.try_take(&[quota], 1, now).is_ok();
        let into_run = run.lock().map_or(Duration::ZERO, |start| start.elapsed());
        let down =
            into_run > Duration::from_millis(1_000) && into_run < Duration::from_millis(1_600);
        async move {
            match (admitted, down) {
                (false, _) => respond(429, &[("retry-after", "1")], "over quota"),
                (true, true) => respond(503, &[], "down"),
                (true, false) => respond(200, &[], "ok"),
            }
        }
    })
    .await?;
    let url: http::Uri = upstream.url("/items").parse()?;
    let bare_client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();

    let restart = |run: &std::sync::Mutex<Instant>| {
        if let Ok(mut start) = run.lock() {
            *start = Instant::now();
        }
    };
    restart(&run_start);
    let bare = workload(bare_client, &url, |_| None).await;
    // Let the upstream's quota refill between the two runs.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Recorded, retried (3 attempts, 50 ms backoff or the server's Retry-After), refused
    // fast while the upstream is down (the breaker opens after 3 failures and probes again
    // after 500 ms), paced under the quota and held on a 429.
    let metrics = MetricsLayer::builder().build()?;
    let retry = RetryLayer::builder()
        .exponential_backoff(Duration::from_millis(50), Duration::from_secs(2))
        .build()?;
    let limit = RateLimitLayer::builder()
        .per_second(20)
        .burst(5)
        .per_host()
        .build()?;
    let breaker = CircuitBreakerLayer::builder()
        .per_host()
        .consecutive_failures(3)
        .open_duration(Duration::from_millis(500))
        .half_open_permits(1)
        .half_open_successes(1)
        .build()?;
    let (limits, breakers, retries) = (limit.handle(), breaker.handle(), retry.handle());
    metrics.include(retries.clone());
    metrics.include(breakers.clone());
    metrics.include(limits.clone());
    let client = Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Empty<Bytes>>>();
    let stack = ServiceBuilder::new()
        .layer(metrics.clone())
        .layer(retry)
        .layer(breaker)
        .layer(limit)
        .timeout(Duration::from_secs(10))
        .service(client);
    restart(&run_start);
    let guarded = workload(stack, &url, |error: &RetryError<BreakerError<_>>| {
        error.inner().as_open().and_then(|open| open.retry_after())
    })
    .await;

    for (name, counts) in [("bare hyper-util client", bare), ("seawall stack", guarded)] {
        println!("{name}:");
        for (outcome, count) in counts {
            println!("  {count:>3} × {outcome}");
        }
    }
    let snapshot = metrics.snapshot();
    println!(
        "metrics: {} requests, {:.0} % succeeded, p50 {:.1} ms, p99 {:.1} ms",
        snapshot.total,
        snapshot.success_rate * 100.0,
        snapshot.p50.as_secs_f64() * 1e3,
        snapshot.p99.as_secs_f64() * 1e3
    );
    let retried = retries.stats();
    println!(
        "retry: {} attempts for {} requests, {} gave up",
        retried.attempts(),
        retried.requests,
        retried.gave_up()
    );
    let limiter = limits.stats();
    println!(
        "limiter: {} admitted, {} after waiting ({:.2}s in all), {} server pauses",
        limiter.admitted,
        limiter.admitted_after_wait,
        limiter.wait_total.as_secs_f64(),
        limiter.pauses
    );
    for stats in breakers.stats() {
        println!(
            "breaker {}: {}, {} failures, {} refused, {} transitions",
            stats.key, stats.state, stats.failures, stats.rejected, stats.transitions
        );
    }
    // The same figures as a Prometheus scrape would read them.
    let exposition = std::env::temp_dir().join("seawall-quickstart.prom");
    std::fs::write(&exposition, metrics.encode())?;
    println!("OpenMetrics exposition written to {}", exposition.display());
    Ok(())
}
