//! Configurations and requests at the edges: quotas whose schedule would overflow, a store
//! made for fewer quotas than the layer has, and a request that says it costs nothing.

#![allow(
    clippy::unwrap_used,
    reason = "test fixtures: a bad fixture must fail the test loudly"
)]

use std::future::ready;
use std::time::Duration;

use http::{Request, Response};
use seawall_rate_limit::{Cost, InMemoryStore, Quota, RateLimitLayer};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

const DAY: Duration = Duration::from_secs(86_400);

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
    let mut service = layer.layer(service_fn(|_: Request<()>| {
        ready(Ok::<_, std::io::Error>(Response::new(())))
    }));
    for _ in 0..3 {
        service
            .ready()
            .await
            .unwrap()
            .call(Request::new(()))
            .await
            .unwrap();
    }
    // The third waited for the per-minute quota, not the per-second one.
    assert_eq!(start.elapsed(), Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn a_cost_of_zero_counts_as_one() {
    let start = Instant::now();
    let layer = RateLimitLayer::builder().per_second(1).build().unwrap();
    let mut service = layer.layer(service_fn(|_: Request<()>| {
        ready(Ok::<_, std::io::Error>(Response::new(())))
    }));
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
