//! Admissions out with a Redis that does not answer are bounded: they count toward the
//! limiter's `max_waiting`, none waits past its `max_wait`, and the store's queue of a key's
//! admissions has a bound of its own.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed setup is a failed test"
)]

mod support;

use std::future::{Future, ready};
use std::pin::Pin;
use std::time::Duration;

use futures::FutureExt;
use http::{Request, Response};
use seawall_core::FigureSource;
use seawall_rate_limit::{RateLimitError, RateLimitLayer, RateStore, Rejected};
use seawall_rate_limit_redis::RedisStore;
use support::{hung_server, quota, until};
use tokio::time::Instant;
use tower::{Service, ServiceExt, service_fn};

/// Far beyond every wait here: nothing in these tests waits for the store's timeout.
const STORE_TIMEOUT: Duration = Duration::from_secs(10);

type Answer = Result<Response<()>, RateLimitError<std::io::Error>>;

async fn hung_store() -> RedisStore {
    RedisStore::builder(&hung_server())
        .timeout(STORE_TIMEOUT)
        .connect()
        .await
        .unwrap()
}

/// A client limited by `store`, waiting in line within `max_waiting` and `max_wait`.
fn client(
    store: RedisStore,
    max_waiting: usize,
    max_wait: Duration,
) -> impl Service<Request<()>, Response = Response<()>, Error = RateLimitError<std::io::Error>> + Clone
{
    let layer = RateLimitLayer::builder()
        .per_second(5)
        .burst(1)
        .wait(max_waiting, max_wait)
        .store(store)
        .build_with_store()
        .unwrap();
    let upstream = service_fn(|_request: Request<()>| ready(Ok(Response::new(()))));
    tower::ServiceBuilder::new().layer(layer).service(upstream)
}

/// Calls `client` (which asks the store at once) and returns the answer's future.
async fn call<S>(client: &S) -> Pin<Box<dyn Future<Output = Answer>>>
where
    S: Service<Request<()>, Response = Response<()>, Error = RateLimitError<std::io::Error>>
        + Clone
        + 'static,
    S::Future: 'static,
{
    let mut client = client.clone();
    let future = client.ready().await.unwrap().call(Request::new(()));
    Box::pin(future)
}

#[tokio::test]
async fn admissions_pending_on_the_store_count_toward_max_waiting() {
    let store = hung_store().await;
    let client = client(store.clone(), 3, Duration::from_secs(60));
    let mut pending = Vec::new();
    for _ in 0..3 {
        let mut answer = call(&client).await;
        assert!(
            (&mut answer).now_or_never().is_none(),
            "Redis never answers"
        );
        pending.push(answer);
    }
    // Three are out with Redis: a fourth is refused on the spot, with the bound it hit.
    match call(&client).await.now_or_never() {
        Some(Err(RateLimitError::Rejected(Rejected::QueueFull { max_waiting }))) => {
            assert_eq!(max_waiting, 3)
        }
        other => panic!("expected an immediate QueueFull, got {other:?}"),
    }
    // One caller gives up: its place is free again.
    drop(pending.pop());
    let mut answer = call(&client).await;
    assert!(
        (&mut answer).now_or_never().is_none(),
        "out with Redis again"
    );
    // The first call is still out; nothing has failed or timed out.
    until(|| store.stats().remote_calls == 1).await;
    let stats = store.stats();
    assert_eq!(
        (stats.answered_calls, stats.timeouts, stats.errors),
        (0, 0, 0)
    );
    assert_eq!(
        store.pending(&store.new_slot(&())),
        0,
        "another key has none"
    );
}

#[tokio::test(start_paused = true)]
async fn an_admission_pending_on_the_store_is_refused_at_max_wait() {
    let store = hung_store().await;
    let max_wait = Duration::from_millis(100);
    let client = client(store.clone(), 10, max_wait);
    let start = Instant::now();
    let answer = call(&client).await.await;
    assert_eq!(start.elapsed(), max_wait, "refused exactly at max_wait");
    match answer {
        Err(RateLimitError::Rejected(Rejected::WaitTooLong {
            predicted,
            max_wait: bound,
        })) => assert_eq!((predicted, bound), (max_wait, max_wait)),
        other => panic!("expected WaitTooLong, got {other:?}"),
    }
    assert_eq!(
        store.stats().timeouts,
        0,
        "the store's own timeout is far off"
    );
}

#[tokio::test]
async fn the_stores_queue_of_a_key_never_grows_past_its_bound() {
    let store = hung_store().await;
    let quotas = [quota(10, 1)];
    let slot = store.new_slot(&"bounded");
    // The first admission's call hangs; every later one queues behind it.
    let first = store.acquire(&slot, &quotas, 1, Instant::now());
    until(|| store.stats().remote_calls == 1).await;
    // Callers that give up at once (a `max_wait` of a few milliseconds, say) leave their
    // admissions behind in the queue.
    for _ in 0..20_000 {
        drop(store.acquire(&slot, &quotas, 1, Instant::now()));
    }
    assert!(slot.queued() <= 10_000, "{} queued", slot.queued());
    drop(first);
}

#[tokio::test]
async fn past_max_pending_the_failure_policy_answers_at_once() {
    let store = RedisStore::builder(&hung_server())
        .timeout(STORE_TIMEOUT)
        .max_pending(4)
        .connect()
        .await
        .unwrap();
    let quotas = [quota(10, 1)];
    let slot = store.new_slot(&"full");
    let first = store.acquire(&slot, &quotas, 1, Instant::now());
    until(|| store.stats().remote_calls == 1).await;
    let mut queued: Vec<_> = (0..4)
        .map(|_| store.acquire(&slot, &quotas, 1, Instant::now()))
        .collect();
    assert_eq!((slot.queued(), store.pending(&slot)), (4, 5));
    // The fifth behind the call finds the queue full: fail-closed refuses it on the spot.
    let refused = store
        .acquire(&slot, &quotas, 1, Instant::now())
        .now_or_never()
        .expect("answered at once")
        .unwrap_err();
    assert!(refused.to_string().contains("max_pending"), "{refused}");
    let stats = store.stats();
    assert_eq!((stats.queue_full, stats.closed_refused), (1, 1));
    let mut figure = None;
    store.figures(&mut |f| {
        if f.name == "seawall_rate_limit_store_queue_full" {
            figure = Some(f.value);
        }
    });
    assert_eq!(figure, Some(1.0));
    // A caller that gives up frees its place for the next.
    drop(queued.pop());
    assert_eq!(store.pending(&slot), 4);
    queued.push(store.acquire(&slot, &quotas, 1, Instant::now()));
    assert_eq!((slot.queued(), store.pending(&slot)), (4, 5));
    drop((first, queued));
    assert_eq!(store.pending(&slot), 0);
}
