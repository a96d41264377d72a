//! Configurations and requests at the edges: quotas whose schedule would overflow, a store
//! made for fewer quotas than the layer has, a request that says it costs nothing, and one
//! that costs more than any wait can free.

#![allow(
    clippy::unwrap_used,
    reason = "test fixtures: a bad fixture must fail the test loudly"
)]

use std::future::ready;
use std::time::Duration;

use futures::FutureExt;
use http::{Request, Response};
use seawall_rate_limit::{Cost, InMemoryStore, Quota, RateLimitError, RateLimitLayer, Rejected};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

const DAY: Duration = Duration::from_secs(86_400);

/// An upstream that answers every request at once.
fn answering() -> impl Service<
    Request<()>,
    Response = Response<()>,
    Error = std::io::Error,
    Future = std::future::Ready<Result<Response<()>, std::io::Error>>,
> + Clone {
    service_fn(|_: Request<()>| ready(Ok(Response::new(()))))
}

/// Sends `n` requests of one token through `service`, one after another.
async fn send<S>(service: &mut S, n: usize)
where
    S: Service<Request<()>, Response = Response<()>>,
    S::Error: std::fmt::Debug,
{
    for _ in 0..n {
        service
            .ready()
            .await
            .unwrap()
            .call(Request::new(()))
            .await
            .unwrap();
    }
}

#[test]
fn a_burst_whose_span_would_overflow_is_refused_naming_the_burst() {
    // One a day with a burst of a million: a schedule 2,700 years ahead of the clock.
    let quota = Quota::per(1, DAY).unwrap().burst(1_000_000).unwrap_err();
    assert_eq!((quota.field(), quota.value()), ("burst", "1000000"));
    let layer = RateLimitLayer::builder()
        .per(1, DAY)
        .burst(1_000_000)
        .build()
        .map(drop)
        .unwrap_err();
    assert_eq!(layer.field(), "burst");
    // A century's span is the most allowed: 36,500 a day for one a day.
    assert!(Quota::per(1, DAY).unwrap().burst(36_500).is_ok());
    assert_eq!(
        Quota::per(1, DAY)
            .unwrap()
            .burst(36_501)
            .unwrap_err()
            .field(),
        "burst"
    );
}

#[test]
fn a_store_made_for_fewer_quotas_than_the_layer_has_is_refused() {
    let error = RateLimitLayer::builder()
        .per_second(10)
        .per_hour(100)
        .store(InMemoryStore::new(1))
        .build()
        .map(drop)
        .unwrap_err();
    assert_eq!((error.field(), error.value()), ("store", "1"));
    assert!(
        RateLimitLayer::builder()
            .per_second(10)
            .per_hour(100)
            .store(InMemoryStore::new(2))
            .build()
            .is_ok()
    );
}

#[tokio::test(start_paused = true)]
async fn a_store_made_for_two_quotas_enforces_both() {
    let start = Instant::now();
    let layer = RateLimitLayer::builder()
        .per_second(10)
        .burst(10)
        .per_minute(2)
        .burst(2)
        .store(InMemoryStore::new(2))
        .build()
        .unwrap();
    let mut service = layer.layer(answering());
    send(&mut service, 3).await;
    // The third waited for the per-minute quota, not the per-second one.
    assert_eq!(start.elapsed(), Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn a_cost_of_zero_counts_as_one() {
    let start = Instant::now();
    let layer = RateLimitLayer::builder().per_second(1).build().unwrap();
    let mut service = layer.layer(answering());
    let mut sent = Vec::new();
    for _ in 0..3 {
        let mut request = Request::new(());
        request.extensions_mut().insert(Cost(0));
        service.ready().await.unwrap().call(request).await.unwrap();
        sent.push(start.elapsed());
    }
    assert_eq!(
        sent,
        [
            Duration::ZERO,
            Duration::from_secs(1),
            Duration::from_secs(2)
        ]
    );
    assert_eq!(Cost(0).tokens(), 1);
    assert_eq!(Cost(5).tokens(), 5);
}

#[tokio::test(start_paused = true)]
async fn an_acquire_of_zero_tokens_takes_one() {
    let start = Instant::now();
    let layer = RateLimitLayer::builder().per_second(1).build().unwrap();
    let mut taken = Vec::new();
    for _ in 0..3 {
        let _permit = layer.acquire(&(), 0).await.unwrap();
        taken.push(start.elapsed());
    }
    assert_eq!(
        taken,
        [
            Duration::ZERO,
            Duration::from_secs(1),
            Duration::from_secs(2)
        ]
    );
}

/// A request of `cost` tokens.
fn costing(cost: u32) -> Request<()> {
    let mut request = Request::new(());
    request.extensions_mut().insert(Cost(cost));
    request
}

#[tokio::test(start_paused = true)]
async fn a_cost_over_the_burst_is_refused_at_once_while_others_wait() {
    // Ten a second with a burst of one: a cost of two can never be admitted.
    let layer = RateLimitLayer::builder()
        .per_second(10)
        .burst(1)
        .build()
        .unwrap();
    let mut service = layer.layer(answering());
    // The first takes the token; the second waits its turn (100 ms).
    let first = service.ready().await.unwrap().call(Request::new(()));
    let mut second = Box::pin(service.ready().await.unwrap().call(Request::new(())));
    first.await.unwrap();
    assert!(second.as_mut().now_or_never().is_none(), "the second waits");
    let oversize = service
        .ready()
        .await
        .unwrap()
        .call(costing(2))
        .now_or_never()
        .expect("refused without waiting");
    assert!(
        matches!(
            oversize,
            Err(RateLimitError::Rejected(Rejected::Oversize { cost: 2 }))
        ),
        "{oversize:?}"
    );
    // It took no place in the queue: the second is admitted on time.
    let start = Instant::now();
    second.await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    let stats = layer.handle().stats();
    assert_eq!((stats.rejected_oversize, stats.queue_depth), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_cost_over_a_window_is_refused_at_once_not_with_a_wait() {
    // Ten a minute, all at once: a cost of twenty would be promised a wait a caller obeys.
    let layer = RateLimitLayer::builder()
        .per_minute(10)
        .burst(10)
        .build()
        .unwrap();
    let mut service = layer.layer(answering());
    send(&mut service, 10).await;
    let waiting = service.ready().await.unwrap().call(Request::new(()));
    let refused = service
        .ready()
        .await
        .unwrap()
        .call(costing(20))
        .now_or_never()
        .expect("refused without waiting");
    match refused {
        Err(RateLimitError::Rejected(rejected @ Rejected::Oversize { cost: 20 })) => {
            assert_eq!(rejected.retry_after(), None, "no wait admits it");
        }
        other => panic!("expected Oversize, got {other:?}"),
    }
    drop(waiting);
}
