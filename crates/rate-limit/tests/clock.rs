//! The limiter on the time-stamp counter (`Clock::tsc`), in real time: admissions, refusals
//! and waiting requests woken by tokio's timer from deadlines worked out on the counter.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "helpers of a test: a failure should stop it"
)]

mod support;

use std::time::Duration;

use http::Request;
use seawall_core::Clock;
use seawall_rate_limit::{RateLimitError, RateLimitLayer, Rejected};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use support::logging_upstream;

#[tokio::test]
async fn waiters_on_the_counter_are_woken_by_tokios_timer_in_their_order() {
    // Five a second, one at a time: the calls below take far less than the 200 ms between
    // two tokens, so the first goes at once and the other three wait their turns.
    let layer = RateLimitLayer::builder()
        .per_second(5)
        .clock(Clock::tsc())
        .build()
        .unwrap();
    let handle = layer.handle();
    let (log, upstream) = logging_upstream(Instant::now());
    let mut service = layer.layer(upstream);
    let mut calls = Vec::new();
    for body in 0..4 {
        service.ready().await.unwrap();
        calls.push(service.call(Request::new(body)));
    }
    // A deadline mistaken on the way to tokio's timer would leave a waiter asleep: the guard
    // turns that into a failure rather than a hang.
    let answers = tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(calls))
        .await
        .expect("every waiter is woken");
    assert!(answers.iter().all(Result::is_ok));
    let order: Vec<u32> = log.lock().unwrap().iter().map(|(body, _)| *body).collect();
    assert_eq!(order, [0, 1, 2, 3]);
    let stats = handle.stats();
    assert_eq!((stats.admitted, stats.admitted_after_wait), (4, 3));
    assert_eq!((stats.queue_depth, stats.cancelled), (0, 0));
}

#[tokio::test]
async fn a_spent_quota_on_the_counter_refuses_with_the_wait_for_its_next_token() {
    let layer = RateLimitLayer::builder()
        .per_minute(1)
        .burst(2)
        .clock(Clock::tsc())
        .fail_fast()
        .build()
        .unwrap();
    let handle = layer.handle();
    let (log, upstream) = logging_upstream(Instant::now());
    let mut service = layer.layer(upstream);
    for body in 0..2 {
        service
            .ready()
            .await
            .unwrap()
            .call(Request::new(body))
            .await
            .unwrap();
    }
    let refused = service.ready().await.unwrap().call(Request::new(2)).await;
    let Err(RateLimitError::Rejected(Rejected::Limited { retry_after })) = refused else {
        panic!("the third is refused: {refused:?}");
    };
    assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(60));
    assert_eq!(log.lock().unwrap().len(), 2);
    let stats = handle.stats();
    assert_eq!((stats.admitted, stats.rejected_limited), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn paused_time_does_not_move_the_counter() {
    // The trade-off the clock's docs state: tokio's clock would refill this quota in a minute
    // of paused time; the counter sees (next to) no time pass, and still refuses.
    let limiter = |clock: Clock| {
        RateLimitLayer::builder()
            .per_minute(1)
            .clock(clock)
            .fail_fast()
            .build()
            .unwrap()
    };
    let (tokio_layer, tsc_layer) = (limiter(Clock::tokio()), limiter(Clock::tsc()));
    let (_, upstream) = logging_upstream(Instant::now());
    let mut on_tokio = tokio_layer.layer(upstream.clone());
    let mut on_tsc = tsc_layer.layer(upstream);
    for service in [&mut on_tokio, &mut on_tsc] {
        service
            .ready()
            .await
            .unwrap()
            .call(Request::new(0))
            .await
            .unwrap();
    }
    tokio::time::advance(Duration::from_secs(120)).await;
    let again_on_tokio = on_tokio.ready().await.unwrap().call(Request::new(1)).await;
    let again_on_tsc = on_tsc.ready().await.unwrap().call(Request::new(1)).await;
    assert!(again_on_tokio.is_ok());
    assert!(matches!(
        again_on_tsc,
        Err(RateLimitError::Rejected(Rejected::Limited { .. }))
    ));
}
