//! The facade's economy service (`Stack::economy_service`) over hyper-util's client and a
//! hyper server on 127.0.0.1: a cache hit and a coalesced follower spend no rate-limit token
//! and never meet the breaker; a stale answer stands in while the breaker is open.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "a failed setup is a failed test"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use seawall::{CacheStatus, ReplayBody};
use seawall_core::{ByHost, KeyExtractor};
use seawall_examples::{Upstream, respond};
use tokio::sync::Notify;
use tower::ServiceExt;

fn get(url: &str) -> Request<Full<Bytes>> {
    Request::get(url).body(Full::new(Bytes::new())).unwrap()
}

fn status_of<B>(response: &Response<B>) -> CacheStatus {
    *response.extensions().get::<CacheStatus>().unwrap()
}

#[tokio::test]
async fn a_cache_hit_spends_no_token_and_a_stale_answer_stands_in_for_an_open_breaker() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let server = Upstream::start(move |_request| {
        counted.fetch_add(1, Ordering::SeqCst);
        async {
            respond(
                200,
                &[("cache-control", "max-age=0, stale-if-error=3600")],
                "v1",
            )
        }
    })
    .await
    .unwrap();
    let fresh_calls = Arc::new(AtomicUsize::new(0));
    let fresh_counted = Arc::clone(&fresh_calls);
    let fresh_server = Upstream::start(move |_request| {
        fresh_counted.fetch_add(1, Ordering::SeqCst);
        async { respond(200, &[("cache-control", "max-age=3600")], "fresh") }
    })
    .await
    .unwrap();

    let stack = seawall::stack()
        .rate_limit(|limit| limit.per_second(100).burst(10))
        .build()
        .unwrap();
    let client = stack.economy_service(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<ReplayBody<Full<Bytes>>>(),
    );

    // A fresh answer is stored; the second request is a hit: one call, one token.
    let first = client
        .clone()
        .oneshot(get(&fresh_server.url("/items")))
        .await
        .unwrap();
    assert_eq!(status_of(&first), CacheStatus::Miss);
    drop(first);
    let hit = client
        .clone()
        .oneshot(get(&fresh_server.url("/items")))
        .await
        .unwrap();
    assert_eq!(status_of(&hit), CacheStatus::Hit);
    assert_eq!(hit.into_body().collect().await.unwrap().to_bytes(), "fresh");
    assert_eq!(fresh_calls.load(Ordering::SeqCst), 1);
    assert_eq!(stack.rate_limit().stats().admitted, 1);
    assert_eq!(stack.cache().handle().stats().hits, 1);

    // An answer stale at once, with a long stale-if-error allowance, is stored.
    let stored = client
        .clone()
        .oneshot(get(&server.url("/item")))
        .await
        .unwrap();
    assert_eq!(status_of(&stored), CacheStatus::Miss);
    drop(stored);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(stack.rate_limit().stats().admitted, 2);

    // The breaker of that host opens: the stale entry answers, the server is not called and
    // no token is spent.
    let key = ByHost.extract_from(&get(&server.url("/item")));
    stack.circuit_breaker().force_open(&key);
    let stale = client
        .clone()
        .oneshot(get(&server.url("/item")))
        .await
        .unwrap();
    assert_eq!(status_of(&stale), CacheStatus::Stale);
    assert_eq!(stale.into_body().collect().await.unwrap().to_bytes(), "v1");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(stack.rate_limit().stats().admitted, 2);
    assert_eq!(stack.cache().handle().stats().stale_served, 1);

    // Every figure is in the one exposition.
    let exposition = stack.metrics().encode();
    assert!(
        exposition.contains("seawall_cache_hits_total 1"),
        "{exposition}"
    );
    assert!(
        exposition.contains("seawall_cache_stale_served_total 1"),
        "{exposition}"
    );
}

#[tokio::test]
async fn identical_requests_in_flight_share_one_call_and_one_token() {
    const REQUESTS: usize = 50;
    let calls = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Notify::new());
    let counted = Arc::clone(&calls);
    let held = Arc::clone(&release);
    // The server holds its answer until every request has joined the call in flight; no
    // cache headers, so the cache stores nothing.
    let server = Upstream::start(move |_request| {
        counted.fetch_add(1, Ordering::SeqCst);
        let held = Arc::clone(&held);
        async move {
            held.notified().await;
            respond(200, &[], "shared")
        }
    })
    .await
    .unwrap();
    let stack = seawall::stack().build().unwrap();
    let client = stack.economy_service(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<ReplayBody<Full<Bytes>>>(),
    );

    let mut answers = Vec::new();
    for _ in 0..REQUESTS {
        answers.push(tokio::spawn(
            client.clone().oneshot(get(&server.url("/report"))),
        ));
    }
    // On this one-threaded runtime the spawned requests are first polled in order, each
    // joining the call in flight in its `call`; the leader's call reaches the server only
    // after all of them have been polled.
    let coalesce = stack.coalesce().handle();
    while calls.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    assert_eq!(coalesce.stats().in_flight, 1);
    release.notify_one();
    for answer in answers {
        let response = answer.await.unwrap().unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(status_of(&response), CacheStatus::Miss);
        assert_eq!(
            response.into_body().collect().await.unwrap().to_bytes(),
            "shared"
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(stack.rate_limit().stats().admitted, 1);
    let figures = coalesce.stats();
    assert_eq!(
        (figures.leaders, figures.coalesced),
        (1, (REQUESTS - 1) as u64)
    );
    assert_eq!(stack.metrics().snapshot().total, REQUESTS as u64);
}
