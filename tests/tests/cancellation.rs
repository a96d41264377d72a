//! Cancellation everywhere: requests through the standard stack are dropped at random points,
//! after a random number of polls or at a random instant, whatever they were waiting on (the
//! limiter's queue, a backoff, a half-open probe, the upstream, the body); on tokio's paused
//! clock against the seeded chaos upstream.
//!
//! CI runs 10,000 requests; `SEAWALL_CANCEL_REQUESTS` sets another count.

#![allow(
    clippy::unwrap_used,
    reason = "a test reports a broken fixture by panicking"
)]

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::Request;
use http_body_util::{BodyExt, Empty};
use seawall::circuit_breaker::State;
use seawall_examples::chaos::{ChaosMix, ChaosUpstream, draw};
use tower::ServiceExt;

const SEED: u64 = 0xCA_9CE1;
const CONCURRENCY: usize = 256;
/// 100 requests per second offered, as much as the quota allows.
const ARRIVAL_INTERVAL: Duration = Duration::from_millis(10);

/// How long the test waits after the run before checking that nothing is wedged: over the
/// longest pause the upstream asks for (`Retry-After: 1`) and the breaker's open time (500 ms,
/// no growth, no jitter), and far below every timeout that would release a held slot by
/// itself.
const IDLE_AFTER_THE_RUN: Duration = Duration::from_secs(2);

/// Polls `future` until it finishes or has been left pending `polls + 1` times, then drops it.
async fn within_polls<F: Future>(future: F, polls: u32) -> Option<F::Output> {
    let mut future = pin!(future);
    let mut left = polls;
    poll_fn(|cx| match future.as_mut().poll(cx) {
        Poll::Ready(output) => Poll::Ready(Some(output)),
        Poll::Pending if left == 0 => Poll::Ready(None),
        Poll::Pending => {
            left -= 1;
            Poll::Pending
        }
    })
    .await
}

/// How a simulated caller gives up on request `n`.
#[derive(Debug, Clone, Copy)]
enum Caller {
    /// Waits for the response and reads the whole body.
    Patient,
    /// Drops the request after it has been left pending this many times.
    AfterPolls(u32),
    /// Drops the request at this instant after sending it.
    AtDeadline(Duration),
    /// Waits for the response, then drops its body unread.
    DropsBody,
    /// Waits for the response, reads one frame and drops the rest.
    ReadsOneFrame,
}

fn caller(n: u64) -> Caller {
    let roll = draw(SEED, n);
    match roll % 5 {
        0 => Caller::Patient,
        1 => Caller::AfterPolls(u32::try_from((roll >> 8) % 12).unwrap()),
        2 => Caller::AtDeadline(Duration::from_millis((roll >> 8) % 3_000)),
        3 => Caller::DropsBody,
        _ => Caller::ReadsOneFrame,
    }
}

fn requests_to_send() -> u64 {
    std::env::var("SEAWALL_CANCEL_REQUESTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000)
}

#[tokio::test(start_paused = true)]
async fn requests_dropped_anywhere_leave_nothing_behind() {
    let sent = requests_to_send();
    let mix = ChaosMix {
        slow_for: Duration::from_secs(2),
        latency: Duration::from_millis(300),
        ..ChaosMix::default()
    };
    let upstream = ChaosUpstream::start(SEED, mix).await.unwrap();
    // A quota the callers fill, so requests queue behind retries and pauses; short backoffs
    // and a short open breaker, so cancellations land in every state.
    let stack = seawall::stack()
        .rate_limit(|limit| limit.per_second(100).burst(5))
        .retry(|retry| {
            retry
                .seed(SEED)
                .exponential_backoff(Duration::from_millis(50), Duration::from_secs(1))
        })
        .circuit_breaker(|breaker| {
            breaker
                .jitter_seed(SEED)
                .open_duration(Duration::from_millis(500))
        })
        .attempt_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let client = stack.hyper_client::<Empty<Bytes>>();
    let url = upstream.url("/items");

    let start = tokio::time::Instant::now();
    let cancelled: u64 = futures::stream::iter(0..sent)
        .map(|n| {
            let client = client.clone();
            let request = Request::get(url.as_str()).body(Empty::new()).unwrap();
            let at = start + ARRIVAL_INTERVAL * u32::try_from(n).unwrap();
            async move {
                tokio::time::sleep_until(at).await;
                let call = client.oneshot(request);
                let response = match caller(n) {
                    Caller::AfterPolls(polls) => match within_polls(call, polls).await {
                        Some(response) => response,
                        None => return 1,
                    },
                    Caller::AtDeadline(deadline) => {
                        match tokio::time::timeout(deadline, call).await {
                            Ok(response) => response,
                            Err(_) => return 1,
                        }
                    }
                    _ => call.await,
                };
                let Ok(response) = response else { return 0 };
                let mut body = response.into_body();
                match caller(n) {
                    Caller::DropsBody => drop(body),
                    Caller::ReadsOneFrame => drop(body.frame().await),
                    _ => drop(body.collect().await),
                }
                0
            }
        })
        .buffer_unordered(CONCURRENCY)
        .fold(0, |total, cancelled| async move { total + cancelled })
        .await;

    // Every request was recorded once, each dropped one as cancelled, and nothing is left
    // waiting or in flight.
    let snapshot = stack.metrics().snapshot();
    let limiter = stack.rate_limit().stats();
    println!("cancelled {cancelled} of {sent}; {snapshot:?}; {limiter:?}");
    assert_eq!(snapshot.total, sent);
    let cancelled_outcome = snapshot
        .by_outcome
        .iter()
        .find(|(outcome, _)| *outcome == "cancelled")
        .unwrap()
        .1;
    assert_eq!(cancelled_outcome, cancelled);
    assert!(cancelled > sent / 10, "only {cancelled} cancelled");
    assert!(
        limiter.cancelled > 0,
        "no request was cancelled while queued"
    );
    assert_eq!(limiter.queue_depth, 0);
    assert_eq!(snapshot.in_flight, 0);

    // Nothing is wedged: with the upstream healthy, once the longest wait the run can leave
    // behind is over (a server's pause of 1 s, the breaker's fixed 500 ms open time), requests
    // are admitted on the quota's schedule and every breaker closes. The idle time is no
    // longer than that, so that nothing held is given the time to be released by a timeout of
    // its own (minutes: a hung half-open probe's, a clamped pause's, an idle key's).
    upstream.set_healthy(true);
    tokio::time::sleep(IDLE_AFTER_THE_RUN).await;
    let started = tokio::time::Instant::now();
    for n in 0..20 {
        let request = Request::get(url.as_str()).body(Empty::new()).unwrap();
        match client.clone().oneshot(request).await {
            Ok(response) => assert_eq!(response.status(), 200, "request {n} after the run"),
            Err(error) => panic!("request {n} after the run failed: {error:?}"),
        }
    }
    // Burst 5 at once, then one per 10 ms for the other 15.
    assert_eq!(started.elapsed(), Duration::from_millis(150));
    for breaker in stack.circuit_breaker().stats() {
        assert_eq!(breaker.state, State::Closed, "{breaker:?}");
    }
}
