//! The rate limiter and circuit breaker stacked over hyper-util's client, against real hyper
//! servers on 127.0.0.1, on tokio's paused clock (the servers read the same clock).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use seawall_circuit_breaker::{BreakerError, CircuitBreakerLayer, State};
use seawall_examples::{Upstream, respond};
use seawall_rate_limit::RateLimitLayer;
use seawall_rate_limit::gcra::GcraCells;
use tokio::time::Instant;
use tower::{BoxError, ServiceBuilder, ServiceExt};

fn client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn get(url: &str) -> Request<Empty<Bytes>> {
    Request::get(url)
        .body(Empty::new())
        .expect("a valid request")
}

/// When each request reached the server, measured from the test's start.
type Arrivals = Arc<Mutex<Vec<Duration>>>;

#[tokio::test(start_paused = true)]
async fn never_exceeds_a_quota_the_server_enforces() {
    // The server allows 10 requests per second, burst 2, and answers 429 beyond that.
    let start = Instant::now();
    let quota = seawall_rate_limit::Quota::per_second(10)
        .and_then(|q| q.burst(2))
        .expect("valid quota");
    let cells = Arc::new(GcraCells::new(1));
    let throttled = Arc::new(Mutex::new(0u32));
    let (count, server_cells) = (Arc::clone(&throttled), Arc::clone(&cells));
    let upstream = Upstream::start(move |_request| {
        let now = u64::try_from(start.elapsed().as_nanos()).expect("fits");
        let allowed = server_cells.try_take(&[quota], 1, now).is_ok();
        if !allowed {
            *count.lock().expect("lock") += 1;
        }
        async move {
            if allowed {
                respond(200, &[], "ok")
            } else {
                respond(429, &[("retry-after", "1")], "slow down")
            }
        }
    })
    .await
    .expect("upstream");

    let limit = RateLimitLayer::builder()
        .per_second(10)
        .burst(2)
        .build()
        .expect("valid config");
    let stack = ServiceBuilder::new()
        .layer(
            CircuitBreakerLayer::builder()
                .build()
                .expect("valid config"),
        )
        .layer(limit)
        .service(client());
    let url = upstream.url("/");
    let responses = join_all((0..30).map(|_| stack.clone().oneshot(get(&url)))).await;
    for response in responses {
        assert_eq!(response.expect("a response").status(), StatusCode::OK);
    }
    assert_eq!(
        *throttled.lock().expect("lock"),
        0,
        "the server never had to say 429"
    );
    // 2 at once, then one per 100 ms: the 30th at 2.8 s.
    assert_eq!(start.elapsed(), Duration::from_millis(2_800));
}

#[tokio::test(start_paused = true)]
async fn obeys_a_429_retry_after_exactly() {
    let start = Instant::now();
    let arrivals: Arrivals = Arc::default();
    let log = Arc::clone(&arrivals);
    let upstream = Upstream::start(move |_request| {
        let mut seen = log.lock().expect("lock");
        seen.push(start.elapsed());
        let first = seen.len() == 1;
        async move {
            if first {
                respond(429, &[("retry-after", "3")], "slow down")
            } else {
                respond(200, &[], "ok")
            }
        }
    })
    .await
    .expect("upstream");
    let breaker = CircuitBreakerLayer::builder()
        .per_host()
        .consecutive_failures(1)
        .build()
        .expect("valid");
    let breakers = breaker.handle();
    let stack = ServiceBuilder::new()
        .layer(breaker)
        .layer(
            RateLimitLayer::builder()
                .per_second(100)
                .burst(100)
                .per_host()
                .build()
                .expect("valid"),
        )
        .service(client());
    let url = upstream.url("/");
    let first = stack.clone().oneshot(get(&url)).await.expect("a response");
    assert_eq!(first.status(), StatusCode::TOO_MANY_REQUESTS);
    let second = stack.clone().oneshot(get(&url)).await.expect("a response");
    assert_eq!(second.status(), StatusCode::OK);
    let seen = arrivals.lock().expect("lock").clone();
    assert_eq!(seen, vec![Duration::ZERO, Duration::from_secs(3)]);
    // A 429 is a rate signal, not a failure: even at one failure to trip, the breaker for
    // that host stayed closed and counted the 429 as saying nothing.
    let host = seawall_core::KeyExtractor::extract_from(&seawall_core::ByHost, &get(&url));
    assert_eq!(breakers.state(&host), State::Closed);
    let stats = &breakers.stats()[0];
    assert_eq!((stats.ignored, stats.successes, stats.failures), (1, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn fails_fast_while_the_breaker_is_open() {
    let hits = Arc::new(Mutex::new(0u32));
    let count = Arc::clone(&hits);
    let upstream = Upstream::start(move |_request| {
        *count.lock().expect("lock") += 1;
        async { respond(503, &[], "down") }
    })
    .await
    .expect("upstream");
    let breaker = CircuitBreakerLayer::builder()
        .consecutive_failures(5)
        .open_duration(Duration::from_secs(30))
        .build()
        .expect("valid");
    let handle = breaker.handle();
    let stack = ServiceBuilder::new()
        .layer(breaker)
        .layer(
            RateLimitLayer::builder()
                .per_second(1_000)
                .build()
                .expect("valid"),
        )
        .timeout(Duration::from_secs(5))
        .map_err(BoxError::from)
        .service(client());
    let url = upstream.url("/");
    for _ in 0..5 {
        let response = stack.clone().oneshot(get(&url)).await.expect("a response");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(handle.state(&()), State::Open);
    let started = Instant::now();
    for _ in 0..100 {
        match stack.clone().oneshot(get(&url)).await {
            Err(BreakerError::Open(open)) => {
                assert_eq!(
                    open.retry_after(),
                    Some(Duration::from_secs(30) - started.elapsed())
                );
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    assert_eq!(
        *hits.lock().expect("lock"),
        5,
        "refused calls never reached the server"
    );
    assert_eq!(handle.stats()[0].rejected, 100);
}
