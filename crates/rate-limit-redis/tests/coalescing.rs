//! Admissions of one key that arrive while its call to Redis is out travel together in the
//! next call, decided in order exactly as separate calls at that instant would be.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed setup is a failed test"
)]

mod support;

use std::time::Duration;

use futures::future::join_all;
use seawall_rate_limit::{Decision, Quota, RateStore};
use seawall_rate_limit_redis::{RedisSlot, RedisStore};
use support::{ask, local_clock, quota, server, until, wait_ms};
use tokio::time::Instant;

/// Asks for admissions of `costs` at `at`, all queued before the key's sending task first
/// runs, and returns their answers in order.
async fn together(
    store: &RedisStore,
    slot: &RedisSlot,
    quotas: &[Quota],
    costs: impl IntoIterator<Item = u32>,
    at: Instant,
) -> Vec<Decision> {
    let answers: Vec<_> = costs
        .into_iter()
        .map(|cost| store.acquire(slot, quotas, cost, at))
        .collect();
    join_all(answers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test]
async fn admissions_queued_together_are_decided_in_order_in_one_call() {
    let Some(server) = server() else { return };
    let store = local_clock(&server).connect().await.unwrap();
    let quotas = [quota(10, 40)];
    let slot = store.new_slot(&"together");
    let start = Instant::now();
    let answers = together(&store, &slot, &quotas, [1; 64], start).await;
    assert!(answers[..40].iter().all(|d| *d == Decision::Admitted));
    // Nothing is taken for a refused admission, so each of the rest waits one interval.
    assert!(
        answers[40..].iter().all(|d| *d == wait_ms(100)),
        "{answers:?}"
    );
    let stats = store.stats();
    assert_eq!(
        (stats.remote_calls, stats.answered_calls),
        (1, 1),
        "one call, answered"
    );
    assert_eq!((stats.remote_admitted, stats.remote_waits), (40, 24));
    assert_eq!(
        ask(&store, &slot, &quotas, 1, start, 100).await,
        Decision::Admitted
    );
}

#[tokio::test]
async fn a_batch_is_at_most_256_admissions() {
    let Some(server) = server() else { return };
    let store = local_clock(&server).connect().await.unwrap();
    let quotas = [quota(1_000, 1_000)];
    let slot = store.new_slot(&"large");
    let start = Instant::now();
    let answers = together(&store, &slot, &quotas, [1; 300], start).await;
    assert!(answers.iter().all(|answer| *answer == Decision::Admitted));
    let stats = store.stats();
    assert_eq!((stats.remote_calls, stats.remote_admitted), (2, 300));
}

#[tokio::test]
async fn a_batch_with_several_quotas_stops_at_the_tightest() {
    let Some(server) = server() else { return };
    let store = local_clock(&server).connect().await.unwrap();
    // 100/s with a burst of 10, and 1/s with a burst of 3: the second binds first.
    let quotas = [quota(100, 10), quota(1, 3)];
    let slot = store.new_slot(&"several");
    let start = Instant::now();
    let answers = together(&store, &slot, &quotas, [1, 1, 2, 1, 1], start).await;
    // 1 and 1 fit; 2 does not (one token left), and takes nothing; the next 1 takes the last.
    assert_eq!(
        answers,
        [
            Decision::Admitted,
            Decision::Admitted,
            wait_ms(1_000),
            Decision::Admitted,
            wait_ms(1_000),
        ]
    );
    assert_eq!(store.stats().remote_calls, 1);
}

#[tokio::test]
async fn a_caller_gone_before_its_call_is_sent_takes_nothing() {
    let Some(server) = server() else { return };
    let store = local_clock(&server).connect().await.unwrap();
    let quotas = [quota(10, 5)];
    let slot = store.new_slot(&"gone");
    let start = Instant::now();
    let mut kept = Vec::new();
    for at in 0..10 {
        let answer = store.acquire(&slot, &quotas, 1, start);
        // Every other caller gives up before the call goes out.
        if at % 2 == 0 {
            kept.push(answer);
        }
    }
    for answer in join_all(kept).await {
        assert_eq!(answer.unwrap(), Decision::Admitted);
    }
    // Exactly five tokens were taken: the burst is spent, the next waits one interval.
    assert_eq!(ask(&store, &slot, &quotas, 1, start, 0).await, wait_ms(100));
    let stats = store.stats();
    assert_eq!((stats.remote_calls, stats.remote_admitted), (2, 5));
}

#[tokio::test]
async fn a_lease_is_topped_up_before_it_runs_dry() {
    let Some(server) = server() else { return };
    let store = local_clock(&server).lease(10).connect().await.unwrap();
    let quotas = [quota(1_000, 1_000)];
    let slot = store.new_slot(&"topped");
    let start = Instant::now();
    // The first admission leases ten: its own and nine for the pool.
    assert_eq!(
        ask(&store, &slot, &quotas, 1, start, 0).await,
        Decision::Admitted
    );
    assert_eq!(store.stats().leased_tokens, 9);
    // Four more from the pool leave five: at least half a lease, so nothing is asked.
    for _ in 0..4 {
        assert_eq!(
            ask(&store, &slot, &quotas, 1, start, 0).await,
            Decision::Admitted
        );
    }
    tokio::task::yield_now().await;
    assert_eq!(store.stats().remote_calls, 1);
    // The next leaves four, and asks Redis for the six that fill the pool again.
    assert_eq!(
        ask(&store, &slot, &quotas, 1, start, 0).await,
        Decision::Admitted
    );
    until(|| store.stats().leased_tokens == 15).await;
    let stats = store.stats();
    assert_eq!(
        (
            stats.remote_calls,
            stats.remote_admitted,
            stats.lease_admitted,
            stats.lease_dropped
        ),
        (2, 1, 5, 0)
    );
    let now = start + Duration::from_millis(0);
    assert_eq!(store.peek(&slot, &quotas, 10, now), Some(Duration::ZERO));
    assert_eq!(store.peek(&slot, &quotas, 11, now), None);
}
