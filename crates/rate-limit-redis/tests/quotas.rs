//! Window quotas, tiers and settled costs in the Redis store.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: a failed setup or an unexpected answer is a failed test"
)]

mod support;

use std::future::ready;
use std::time::Duration;

use http::{Request, Response};
use seawall_rate_limit::{
    Decision, Quota, RateLimitError, RateLimitLayer, RateStore, Refund, Rejected,
};
use support::{ask, local_clock, quota, server, wait_ms};
use tokio::time::Instant;
use tower::{Layer, ServiceExt, service_fn};

/// Asks until the answer is no longer `before` (the settlement, sent in the background, has
/// landed), within 5 s, and returns the new answer.
async fn once_settled<St: RateStore>(
    store: &St,
    slot: &St::Slot,
    quotas: &[Quota],
    cost: u32,
    start: Instant,
    before: Decision,
) -> Decision {
    let since = std::time::Instant::now();
    loop {
        let decision = ask(store, slot, quotas, cost, start, 0).await;
        if decision != before {
            return decision;
        }
        assert!(since.elapsed() < Duration::from_secs(5), "never settled");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_debit_and_a_refund_reach_redis() {
    let Some(server) = server() else { return };
    let store = local_clock(&server).connect().await.unwrap();
    // 100 a second (10 ms a token), 100 at once.
    let quotas = [quota(100, 100)];
    let start = Instant::now();

    let slot = store.new_slot(&"debited");
    assert_eq!(
        ask(&store, &slot, &quotas, 100, start, 0).await,
        Decision::Admitted
    );
    // Estimated 100, really 300: the next token comes 2 s after it would have.
    store.settle(&slot, &quotas, 200, start);
    let after = once_settled(&store, &slot, &quotas, 1, start, wait_ms(10)).await;
    assert_eq!(after, wait_ms(2_010));

    let slot = store.new_slot(&"refunded");
    assert_eq!(
        ask(&store, &slot, &quotas, 100, start, 0).await,
        Decision::Admitted
    );
    // Estimated 100, really 20: 80 come back.
    store.settle(&slot, &quotas, -80, start);
    let after = once_settled(&store, &slot, &quotas, 80, start, wait_ms(800)).await;
    assert_eq!(after, Decision::Admitted);
    assert_eq!(ask(&store, &slot, &quotas, 1, start, 0).await, wait_ms(10));
}

#[tokio::test]
async fn a_window_settles_in_redis() {
    let Some(server) = server() else { return };
    let store = local_clock(&server).connect().await.unwrap();
    let quotas = [Quota::window(10, Duration::from_secs(1)).unwrap()];
    let start = Instant::now();
    let slot = store.new_slot(&"window refunded");
    assert_eq!(
        ask(&store, &slot, &quotas, 10, start, 0).await,
        Decision::Admitted
    );
    // 4 of the 10 given back: their room comes back at once.
    store.settle(&slot, &quotas, -4, start);
    let after = once_settled(&store, &slot, &quotas, 4, start, wait_ms(1_000)).await;
    assert_eq!(after, Decision::Admitted);
    assert_eq!(
        ask(&store, &slot, &quotas, 1, start, 0).await,
        wait_ms(1_000)
    );

    // 6 taken at 0 ms and 4 at 500 ms; 3 more settled at 700 ms: a request of 5 at 700 ms
    // then waits for 8 of the 13 to leave (the 6 of 0 ms and 2 of 500 ms), not 5.
    let slot = store.new_slot(&"window debited");
    assert_eq!(
        ask(&store, &slot, &quotas, 6, start, 0).await,
        Decision::Admitted
    );
    assert_eq!(
        ask(&store, &slot, &quotas, 4, start, 500).await,
        Decision::Admitted
    );
    let at = start + Duration::from_millis(700);
    store.settle(&slot, &quotas, 3, at);
    let probe = |before| once_settled(&store, &slot, &quotas, 5, at, before);
    assert_eq!(probe(wait_ms(300)).await, wait_ms(800));
}

/// A refund comes off the request's own admission in Redis too: taken off a later
/// admission (which leaves the window later), the window would free room early and admit
/// more than its count in one period.
#[tokio::test]
async fn a_window_refund_in_redis_comes_off_the_request_s_own_admission() {
    let Some(server) = server() else { return };
    let store = local_clock(&server).connect().await.unwrap();
    let quotas = [Quota::window(10, Duration::from_secs(1)).unwrap()];
    let start = Instant::now();
    let slot = store.new_slot(&"window refunded late");
    // R takes 5 at 0 ms, Q 5 at 500 ms; at 600 ms R turns out to have cost 1.
    for at in [0, 500] {
        assert_eq!(
            ask(&store, &slot, &quotas, 5, start, at).await,
            Decision::Admitted
        );
    }
    let at = start + Duration::from_millis(600);
    let refund = Refund {
        estimate: 5,
        tokens: 4,
        admitted: start,
    };
    store.refund(&slot, &quotas, refund, at);
    let probe = |before| once_settled(&store, &slot, &quotas, 4, at, before);
    assert_eq!(
        probe(wait_ms(400)).await,
        Decision::Admitted,
        "4 fit at 600 ms"
    );
    // At 1 s R's 1 token leaves; 5 more need Q's 5 gone too (at 1.5 s).
    assert_eq!(
        ask(&store, &slot, &quotas, 5, start, 1_000).await,
        wait_ms(500)
    );
}

#[tokio::test]
async fn a_window_beside_a_gcra_quota_in_redis() {
    let Some(server) = server() else { return };
    let store = local_clock(&server).connect().await.unwrap();
    // 2 in any second, and 10 a second one at a time.
    let quotas = [
        Quota::window(2, Duration::from_secs(1)).unwrap(),
        Quota::per_second(10).unwrap(),
    ];
    let slot = store.new_slot(&"window and gcra");
    let start = Instant::now();
    assert_eq!(
        ask(&store, &slot, &quotas, 1, start, 0).await,
        Decision::Admitted
    );
    assert_eq!(ask(&store, &slot, &quotas, 1, start, 0).await, wait_ms(100));
    assert_eq!(
        ask(&store, &slot, &quotas, 1, start, 100).await,
        Decision::Admitted
    );
    // The window is full until the first admission leaves it; GCRA took nothing.
    assert_eq!(
        ask(&store, &slot, &quotas, 1, start, 200).await,
        wait_ms(800)
    );
    assert_eq!(
        ask(&store, &slot, &quotas, 1, start, 1_000).await,
        Decision::Admitted
    );
    assert_eq!(
        ask(&store, &slot, &quotas, 1, start, 1_000).await,
        wait_ms(100)
    );
}

#[tokio::test]
async fn two_api_keys_on_two_tiers_share_a_redis_layer() {
    let Some(server) = server() else { return };
    let store = seawall_rate_limit_redis::RedisStore::builder(&server.url())
        .connect()
        .await
        .unwrap();
    let api_key = |head: &seawall_core::RequestHead<'_>| {
        head.headers
            .get("x-api-key")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let layer = RateLimitLayer::builder()
        .per_minute(3)
        .burst(3)
        .tier("pro", [Quota::window(8, Duration::from_secs(60)).unwrap()])
        .fail_fast()
        .key_by(api_key)
        .tier_of(|key: &String| {
            if key.starts_with("pro-") {
                "pro"
            } else {
                "free"
            }
        })
        .store(store)
        .build_with_store()
        .unwrap();
    let upstream = service_fn(|_: Request<()>| ready(Ok::<_, std::io::Error>(Response::new(()))));
    let service = layer.layer(upstream);
    for (key, admitted) in [("free-1", 3), ("pro-1", 8), ("free-2", 3)] {
        let mut count = 0;
        for _ in 0..12 {
            let request = Request::builder()
                .header("x-api-key", key)
                .body(())
                .unwrap();
            match service.clone().oneshot(request).await {
                Ok(_) => count += 1,
                Err(RateLimitError::Rejected(Rejected::Limited { .. })) => {}
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(count, admitted, "{key}");
    }
}
