//! The layer over the Redis store: waiting, priorities and queue bounds behave as with the
//! in-process store, and a fail-closed outage reaches the caller as `StoreUnavailable`.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed setup is a failed test"
)]

mod support;

use std::future::ready;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use http::{Request, Response};
use seawall_rate_limit::{Priority, RateLimitError, RateLimitLayer, Rejected};
use seawall_rate_limit_redis::RedisStore;
use support::{server, until};
use tower::{Service, ServiceExt, service_fn};

type Log = Arc<Mutex<Vec<u32>>>;

/// An upstream that answers 200 at once and logs which request (by its body) arrived.
fn upstream() -> (
    Log,
    impl Service<Request<u32>, Response = Response<()>, Error = std::io::Error, Future: Send>
    + Clone
    + Send
    + 'static,
) {
    let log: Log = Arc::default();
    let sink = Arc::clone(&log);
    let service = service_fn(move |request: Request<u32>| {
        sink.lock().unwrap().push(*request.body());
        ready(Ok::<_, std::io::Error>(Response::new(())))
    });
    (log, service)
}

fn request(id: u32, priority: Option<u8>) -> Request<u32> {
    let mut request = Request::new(id);
    if let Some(priority) = priority {
        request.extensions_mut().insert(Priority(priority));
    }
    request
}

#[tokio::test]
async fn waiters_queue_in_order_within_bounds_and_priority_goes_first() {
    let Some(server) = server() else { return };
    let store = RedisStore::builder(&server.url()).connect().await.unwrap();
    let layer = RateLimitLayer::builder()
        .per_second(5)
        .burst(1)
        .wait(2, Duration::from_secs(10))
        .store(store.clone())
        .build_with_store()
        .unwrap();
    let handle = layer.handle();
    let (log, upstream) = upstream();
    let client = tower::ServiceBuilder::new().layer(layer).service(upstream);

    client.clone().oneshot(request(1, None)).await.unwrap();
    let low = tokio::spawn(client.clone().oneshot(request(2, None)));
    until(|| handle.stats().queue_depth == 1).await;
    let high = tokio::spawn(client.clone().oneshot(request(3, Some(9))));
    until(|| handle.stats().queue_depth == 2).await;

    // The queue holds 2: a third waiter is refused on the spot, with the bound it hit.
    let refused = client.clone().oneshot(request(4, None)).now_or_never();
    match refused {
        Some(Err(RateLimitError::Rejected(Rejected::QueueFull { max_waiting }))) => {
            assert_eq!(max_waiting, 2)
        }
        other => panic!("expected an immediate QueueFull, got {other:?}"),
    }

    high.await.unwrap().unwrap();
    low.await.unwrap().unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        [1, 3, 2],
        "the later, higher priority went first"
    );
    let stats = handle.stats();
    assert_eq!(
        (
            stats.admitted,
            stats.admitted_after_wait,
            stats.rejected_queue_full
        ),
        (3, 2, 1)
    );
    assert_eq!(stats.queue_depth, 0);
    let store = store.stats();
    assert_eq!(
        store.remote_admitted, 3,
        "Redis admitted every request itself"
    );
    assert!(
        store.remote_waits >= 1,
        "the first waiter was told to wait by Redis"
    );
}

#[tokio::test]
async fn a_request_asked_for_more_than_its_max_wait_is_refused_at_once() {
    let Some(server) = server() else { return };
    let store = RedisStore::builder(&server.url()).connect().await.unwrap();
    let layer = RateLimitLayer::builder()
        .per_minute(1)
        .wait(10, Duration::from_secs(1))
        .store(store)
        .build_with_store()
        .unwrap();
    let (log, upstream) = upstream();
    let client = tower::ServiceBuilder::new().layer(layer).service(upstream);
    client.clone().oneshot(request(1, None)).await.unwrap();
    match client.clone().oneshot(request(2, None)).await {
        Err(RateLimitError::Rejected(Rejected::WaitTooLong {
            predicted,
            max_wait,
        })) => {
            assert_eq!(max_wait, Duration::from_secs(1));
            assert!(predicted > Duration::from_secs(59), "{predicted:?}");
        }
        other => panic!("expected WaitTooLong, got {other:?}"),
    }
    assert_eq!(*log.lock().unwrap(), [1]);
}

#[tokio::test]
async fn a_fail_closed_outage_reaches_the_caller_as_store_unavailable() {
    let Some(server) = server() else { return };
    let store = RedisStore::builder(&server.url()).connect().await.unwrap();
    let layer = RateLimitLayer::builder()
        .per_second(100)
        .store(store)
        .build_with_store()
        .unwrap();
    let handle = layer.handle();
    let (log, upstream) = upstream();
    let client = tower::ServiceBuilder::new().layer(layer).service(upstream);
    client.clone().oneshot(request(1, None)).await.unwrap();
    server.kill().unwrap();
    match client.clone().oneshot(request(2, None)).await {
        Err(RateLimitError::Rejected(Rejected::StoreUnavailable(error))) => {
            assert!(error.to_string().contains("Redis"), "{error}")
        }
        other => panic!("expected StoreUnavailable, got {other:?}"),
    }
    assert_eq!(
        *log.lock().unwrap(),
        [1],
        "nothing is sent while the quota cannot be checked"
    );
    assert_eq!(handle.stats().rejected_store_unavailable, 1);
}

#[tokio::test]
async fn a_rate_the_script_cannot_keep_exactly_is_refused_naming_the_rate() {
    let Some(server) = server() else { return };
    let store = RedisStore::builder(&server.url()).connect().await.unwrap();
    // The script's clock holds quarter-microsecond steps: 62,500 a second (16 µs apart) is
    // kept within 1 %; ten million a second would never move the schedule.
    assert!(
        RateLimitLayer::builder()
            .per_second(62_500)
            .store(store.clone())
            .build_with_store()
            .is_ok()
    );
    for rate in [62_501, 10_000_000] {
        let error = RateLimitLayer::builder()
            .per_second(rate)
            .store(store.clone())
            .build_with_store()
            .map(drop)
            .unwrap_err();
        assert_eq!(error.field(), "rate", "{error}");
    }
    // A tier's quotas are held to it too.
    let error = RateLimitLayer::builder()
        .per_second(10)
        .tier(
            "fast",
            [seawall_rate_limit::Quota::per_second(1_000_000).unwrap()],
        )
        .store(store)
        .build_with_store()
        .map(drop)
        .unwrap_err();
    assert_eq!(error.field(), "rate");
}
