//! The facade's standard stack, with its defaults, over hyper-util's client against real
//! hyper servers on 127.0.0.1, on tokio's paused clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Empty;
use seawall::circuit_breaker::State;
use seawall_examples::{Upstream, respond};
use tokio::time::Instant;
use tower::ServiceExt;

/// A server that answers `script[n]` to its n-th request (the last entry repeats), and the
/// number of requests it has received.
async fn scripted(script: &'static [(u16, &'static str)]) -> (Upstream, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    let upstream = Upstream::start(move |_request| {
        let n = counter.fetch_add(1, Ordering::SeqCst) as usize;
        let (status, retry_after) = script[n.min(script.len() - 1)];
        async move {
            if retry_after.is_empty() {
                respond(status, &[], "")
            } else {
                respond(status, &[("retry-after", retry_after)], "")
            }
        }
    })
    .await
    .expect("upstream");
    (upstream, calls)
}

fn get(upstream: &Upstream) -> Request<Empty<Bytes>> {
    Request::get(upstream.url("/items"))
        .body(Empty::new())
        .expect("valid request")
}

#[tokio::test(start_paused = true)]
async fn recovers_from_a_burst_of_503s() {
    let (upstream, calls) = scripted(&[(503, ""), (503, ""), (200, "")]).await;
    let stack = seawall::stack().build().expect("defaults are valid");
    let client = stack.hyper_client::<Empty<Bytes>>();
    let response = client.oneshot(get(&upstream)).await.expect("a response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    drop(response);
    let retries = stack.retry().stats();
    assert_eq!((retries.requests, retries.attempts()), (1, 3));
    let snapshot = stack.metrics().snapshot();
    assert_eq!(
        (snapshot.total, snapshot.success_rate, snapshot.in_flight),
        (1, 1.0, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn obeys_a_429_retry_after_exactly() {
    let (upstream, calls) = scripted(&[(429, "3"), (200, "")]).await;
    let stack = seawall::stack().build().expect("defaults are valid");
    let client = stack.hyper_client::<Empty<Bytes>>();
    let started = Instant::now();
    let response = client.oneshot(get(&upstream)).await.expect("a response");
    let waited = started.elapsed();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // The retry waits for the server's 3 s (longer than any 1 s backoff), and the limiter
    // holds the host for the same 3 s: the second attempt goes out at 3 s, not before.
    assert!(
        waited >= Duration::from_secs(3) && waited < Duration::from_millis(3_050),
        "{waited:?}"
    );
    assert_eq!(stack.rate_limit().stats().pauses, 1);
}

#[tokio::test(start_paused = true)]
async fn fails_fast_while_the_breaker_is_open() {
    let (upstream, calls) = scripted(&[(503, "")]).await;
    let stack = seawall::stack().build().expect("defaults are valid");
    let client = stack.hyper_client::<Empty<Bytes>>();
    // 3 attempts, then 2 more: the fifth consecutive failure opens the breaker, and the
    // second request's third attempt is refused without reaching the upstream.
    let first = client
        .clone()
        .oneshot(get(&upstream))
        .await
        .expect("a response");
    assert_eq!(first.status(), StatusCode::SERVICE_UNAVAILABLE);
    let second = client
        .clone()
        .oneshot(get(&upstream))
        .await
        .expect_err("refused");
    assert!(second.inner().as_open().is_some(), "{second}");
    assert_eq!(second.attempts(), 3);
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    let key = stack.circuit_breaker().stats()[0].key.clone();
    assert_eq!(stack.circuit_breaker().state(&key), State::Open);

    let started = Instant::now();
    let third = client.oneshot(get(&upstream)).await.expect_err("refused");
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(third.attempts(), 1);
    assert!(third.inner().as_open().is_some());
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    // No limiter token was spent on a refused attempt.
    assert_eq!(stack.rate_limit().stats().admitted, 5);
}
