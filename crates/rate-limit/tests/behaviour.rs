//! The limiter's behaviour on paused time: fairness, bounds, cancellation, server pauses,
//! sharing across clones, bounded keys, and configuration errors.

#![allow(
    clippy::unwrap_used,
    reason = "test fixtures: a poisoned log or bad fixture must fail the test loudly"
)]

mod support;
use support::{Log, logging_upstream, ms};

use std::future::ready;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use http::{Request, Response};
use seawall_core::ByHost;
use seawall_rate_limit::conformance::run_golden_table;
use seawall_rate_limit::{InMemoryStore, Priority, RateLimitError, RateLimitLayer, Rejected};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

/// A limit per host far above what the server-pause tests send: only a pause holds a request.
fn hundred_per_second_per_host() -> RateLimitLayer<ByHost> {
    RateLimitLayer::builder()
        .per_second(100)
        .burst(100)
        .per_host()
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn golden_table_in_process() {
    run_golden_table(&InMemoryStore::new(1), tokio::time::advance)
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_waiters_fifo_on_schedule() {
    let start = Instant::now();
    let (log, upstream) = logging_upstream(start);
    let layer = RateLimitLayer::builder()
        .per_second(1_000)
        .burst(10)
        .wait(20_000, Duration::from_secs(60))
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut service = layer.layer(upstream);
    // Each call joins the queue in call order.
    let calls: Vec<_> = (0..10_000u32)
        .map(|i| service.call(Request::new(i)))
        .collect();
    assert_eq!(handle.stats().queue_depth, 9_990);
    let results = join_all(calls).await;
    assert!(results.iter().all(Result::is_ok));

    let log = log.lock().unwrap();
    assert_eq!(log.len(), 10_000);
    for (position, (index, at)) in log.iter().enumerate() {
        assert_eq!(*index as usize, position, "FIFO order");
        let expected = if position < 10 {
            0
        } else {
            position as u64 - 9
        };
        assert_eq!(*at, ms(expected), "request {index}");
    }
    assert_eq!(log.last().unwrap().1, ms(9_990));
    let stats = handle.stats();
    assert_eq!(stats.admitted, 10_000);
    assert_eq!(stats.admitted_after_wait, 9_990);
    assert_eq!(stats.queue_depth, 0);
    // Each waiter was woken exactly once, at its slot.
    assert_eq!(stats.wakeups, 9_990);
}

#[tokio::test(start_paused = true)]
async fn a_higher_priority_queued_later_goes_first() {
    let start = Instant::now();
    let (log, upstream) = logging_upstream(start);
    let layer = RateLimitLayer::builder().per_second(10).build().unwrap();
    let mut service = layer.layer(upstream);
    let mut calls: Vec<_> = (0..5u32).map(|i| service.call(Request::new(i))).collect();
    let mut urgent = Request::new(99);
    urgent.extensions_mut().insert(Priority(5));
    calls.push(service.call(urgent));
    join_all(calls).await;
    let log = log.lock().unwrap();
    let order: Vec<u32> = log.iter().map(|(i, _)| *i).collect();
    assert_eq!(order, vec![0, 99, 1, 2, 3, 4]);
    let times: Vec<Duration> = log.iter().map(|(_, at)| *at).collect();
    assert_eq!(
        times,
        vec![ms(0), ms(100), ms(200), ms(300), ms(400), ms(500)]
    );
}

#[tokio::test(start_paused = true)]
async fn refusals_are_immediate_and_carry_their_figures() {
    let (_, upstream) = logging_upstream(Instant::now());
    let layer = RateLimitLayer::builder()
        .per_second(10)
        .wait(2, ms(250))
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut service = layer.layer(upstream.clone());
    let _first = service.call(Request::new(0)); // admitted at once
    let _second = service.call(Request::new(1)); // waits 100 ms
    let _third = service.call(Request::new(2)); // waits 200 ms
    let started = Instant::now();
    match service.call(Request::new(3)).await {
        Err(RateLimitError::Rejected(Rejected::QueueFull { max_waiting })) => {
            assert_eq!(max_waiting, 2)
        }
        other => panic!("expected QueueFull, got {other:?}"),
    }
    assert_eq!(started.elapsed(), Duration::ZERO);

    let layer = RateLimitLayer::builder()
        .per_second(10)
        .wait(100, ms(250))
        .build()
        .unwrap();
    let mut service = layer.layer(upstream);
    let _held: Vec<_> = (0..3).map(|i| service.call(Request::new(i))).collect();
    match service.call(Request::new(3)).await {
        Err(RateLimitError::Rejected(Rejected::WaitTooLong {
            predicted,
            max_wait,
        })) => {
            assert_eq!((predicted, max_wait), (ms(300), ms(250)));
        }
        other => panic!("expected WaitTooLong, got {other:?}"),
    }
    assert_eq!(started.elapsed(), Duration::ZERO);
    let stats = handle.stats();
    assert_eq!((stats.rejected_queue_full, stats.queue_depth), (1, 2));
}

#[tokio::test(start_paused = true)]
async fn fail_fast_refuses_with_the_time_until_a_token() {
    let (_, upstream) = logging_upstream(Instant::now());
    let layer = RateLimitLayer::builder()
        .per_second(4)
        .fail_fast()
        .build()
        .unwrap();
    let mut service = layer.layer(upstream);
    service.call(Request::new(0)).await.unwrap();
    match service.call(Request::new(1)).await {
        Err(RateLimitError::Rejected(Rejected::Limited { retry_after })) => {
            assert_eq!(retry_after, ms(250))
        }
        other => panic!("expected Limited, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn dropping_half_the_waiters_keeps_the_rest_on_schedule() {
    let start = Instant::now();
    let (log, upstream) = logging_upstream(start);
    let layer = RateLimitLayer::builder()
        .per_second(1_000)
        .wait(10_000, Duration::from_secs(60))
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut service = layer.layer(upstream);
    let calls: Vec<_> = (0..1_000u32)
        .map(|i| (i, service.call(Request::new(i))))
        .collect();
    // A seeded half: those whose scrambled index is odd, including the head (index 1).
    let scramble = |i: u32| i.wrapping_mul(2_654_435_761).rotate_left(7);
    let (dropped, kept): (Vec<_>, Vec<_>) = calls
        .into_iter()
        .partition(|(i, _)| scramble(*i) % 2 == 1 && *i != 0);
    let dropped_count = dropped.len();
    drop(dropped);
    assert_eq!(handle.stats().queue_depth, 999 - dropped_count);
    assert_eq!(handle.stats().cancelled, dropped_count as u64);
    let kept_ids: Vec<u32> = kept.iter().map(|(i, _)| *i).collect();
    join_all(kept.into_iter().map(|(_, call)| call)).await;

    let log = log.lock().unwrap();
    let order: Vec<u32> = log.iter().map(|(i, _)| *i).collect();
    assert_eq!(order, kept_ids, "the rest keep their order");
    for (position, (_, at)) in log.iter().enumerate() {
        assert_eq!(
            *at,
            ms(position as u64),
            "the freed slots go to those behind"
        );
    }
    assert_eq!(handle.stats().queue_depth, 0);
}

#[tokio::test(start_paused = true)]
async fn a_429_holds_its_host_only() {
    let start = Instant::now();
    let log: Log = Arc::default();
    let sink = Arc::clone(&log);
    let upstream = service_fn(move |request: Request<u32>| {
        let host_a = request.uri().host() == Some("a.example");
        let id = *request.body();
        sink.lock().unwrap().push((id, start.elapsed()));
        let mut response = Response::new(());
        if host_a && id == 0 {
            *response.status_mut() = http::StatusCode::TOO_MANY_REQUESTS;
            response
                .headers_mut()
                .insert("retry-after", http::HeaderValue::from_static("2"));
        }
        ready(Ok::<_, std::io::Error>(response))
    });
    let layer = hundred_per_second_per_host();
    let handle = layer.handle();
    let service = layer.layer(upstream);
    let to = |host: &str, id: u32| {
        Request::builder()
            .uri(format!("http://{host}/"))
            .body(id)
            .unwrap()
    };
    let throttled = service.clone().oneshot(to("a.example", 0)).await.unwrap();
    assert_eq!(throttled.status(), 429);
    assert_eq!(handle.stats().paused_keys, 1);
    let a = tokio::spawn(service.clone().oneshot(to("a.example", 1)));
    let b = service.clone().oneshot(to("b.example", 2)).await.unwrap();
    assert_eq!(b.status(), 200);
    a.await.unwrap().unwrap();
    let log = log.lock().unwrap();
    assert_eq!(*log, vec![(0, ms(0)), (2, ms(0)), (1, ms(2_000))]);
}

/// A success that says the quota is spent (each header family a server may use) holds its
/// host until the reset; a success with other fields holds nothing.
#[tokio::test(start_paused = true)]
async fn a_success_saying_the_quota_is_spent_holds_its_host_until_the_reset() {
    let families: [&[(&str, &str)]; 5] = [
        &[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset-after", "3"),
        ],
        &[
            ("x-ratelimit-limit", "10"),
            ("x-ratelimit-used", "10"),
            ("x-ratelimit-reset-after", "3"),
        ],
        &[("ratelimit", "limit=10, remaining=0, reset=3")],
        &[("ratelimit-remaining", "0"), ("ratelimit-reset", "3")],
        &[("content-type", "text/plain"), ("x-request-id", "7")],
    ];
    for (index, fields) in families.into_iter().enumerate() {
        let start = Instant::now();
        let log: Log = Arc::default();
        let sink = Arc::clone(&log);
        let upstream = service_fn(move |request: Request<u32>| {
            let id = *request.body();
            sink.lock().unwrap().push((id, start.elapsed()));
            let mut response = Response::new(());
            if id == 0 {
                for (name, value) in fields {
                    response.headers_mut().insert(
                        http::HeaderName::from_static(name),
                        http::HeaderValue::from_static(value),
                    );
                }
            }
            ready(Ok::<_, std::io::Error>(response))
        });
        let layer = hundred_per_second_per_host();
        let handle = layer.handle();
        let service = layer.layer(upstream);
        let to = |id: u32| {
            Request::builder()
                .uri("http://a.example/")
                .body(id)
                .unwrap()
        };
        service.clone().oneshot(to(0)).await.unwrap();
        let held = index < 4;
        assert_eq!(handle.stats().paused_keys, usize::from(held), "{fields:?}");
        service.clone().oneshot(to(1)).await.unwrap();
        let second = if held { ms(3_000) } else { ms(0) };
        assert_eq!(
            *log.lock().unwrap(),
            vec![(0, ms(0)), (1, second)],
            "{fields:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_hundred_clones_share_one_limit() {
    let start = Instant::now();
    let (log, upstream) = logging_upstream(start);
    let layer = RateLimitLayer::builder().per_second(5).build().unwrap();
    let service = layer.layer(upstream);
    let clones: Vec<_> = (0..100).map(|_| service.clone()).collect();
    let calls = clones
        .into_iter()
        .enumerate()
        .map(|(i, clone)| clone.oneshot(Request::new(i as u32)));
    join_all(calls).await;
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 100);
    for (position, (_, at)) in log.iter().enumerate() {
        assert_eq!(*at, ms(200 * position as u64));
    }
}

#[tokio::test(start_paused = true)]
async fn a_million_distinct_keys_stay_within_max_keys() {
    let (_, upstream) = logging_upstream(Instant::now());
    let layer = RateLimitLayer::builder()
        .per_second(10)
        .key_by(|head: &seawall_core::RequestHead<'_>| head.uri.path().to_owned())
        .max_keys(1_000)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut service = layer.layer(upstream);
    let mut peak = 0;
    for i in 0..1_000_000u32 {
        let request = Request::builder().uri(format!("/k{i}")).body(i).unwrap();
        service.call(request).await.unwrap();
        if i % 997 == 0 {
            peak = peak.max(handle.stats().keys);
        }
    }
    assert!(peak <= 1_000, "peak {peak} keys");
    assert!(handle.stats().keys <= 1_000);
    let _ = ByHost;
}

#[test]
fn every_invalid_config_names_its_field() {
    let b = RateLimitLayer::builder;
    let cases = [
        (b().build().map(drop), "quota"),
        (b().per_second(0).build().map(drop), "rate"),
        (
            b().per(1_000_000_000, Duration::from_millis(1))
                .build()
                .map(drop),
            "rate",
        ),
        (b().burst(3).per_second(1).build().map(drop), "burst"),
        (b().per_second(1).burst(0).build().map(drop), "burst"),
        (
            b().per_second(1).wait(0, ms(10)).build().map(drop),
            "max_waiting",
        ),
        (
            b().per_second(1).wait(10, Duration::ZERO).build().map(drop),
            "max_wait",
        ),
        (
            b().per_second(1).per_host().max_keys(0).build().map(drop),
            "max_keys",
        ),
        (
            b().per_second(1).idle_after(ms(1)).build().map(drop),
            "idle_after",
        ),
        (
            b().per_second(1)
                .per_second(1)
                .per_second(1)
                .per_second(1)
                .per_second(1)
                .per_second(1)
                .per_second(1)
                .per_second(1)
                .per_second(1)
                .build()
                .map(drop),
            "quota",
        ),
    ];
    let period = seawall_rate_limit::Quota::per(1, Duration::from_secs(100_000)).unwrap_err();
    assert_eq!(period.field(), "period");
    for (result, field) in cases {
        let error = result.expect_err(field);
        assert_eq!(error.field(), field, "{error}");
    }
}

/// At `max_keys`, the keys dropped to make room are the idle ones first: a key a server
/// paused (`Retry-After`) is kept over one used since whose quota has refilled, so its
/// next request still waits out the pause instead of finding a fresh burst.
#[tokio::test(start_paused = true)]
async fn at_max_keys_a_paused_key_outlasts_an_idle_one_used_since() {
    let start = Instant::now();
    let (log, upstream) = logging_upstream(start);
    let layer = RateLimitLayer::builder()
        .per_second(100)
        .burst(1)
        .key_by(|head: &seawall_core::RequestHead<'_>| head.uri.path().to_owned())
        .max_keys(2)
        .wait(10, Duration::from_secs(60))
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut service = layer.layer(upstream);
    let call = |path: &str, n: u32| Request::builder().uri(path).body(n).unwrap();
    handle.pause("/a".to_owned(), Duration::from_secs(30));
    tokio::time::advance(ms(20)).await;
    service
        .ready()
        .await
        .unwrap()
        .call(call("/b", 1))
        .await
        .unwrap();
    tokio::time::advance(ms(20)).await;
    // A third key: one of the two must go, and b's quota has refilled.
    service
        .ready()
        .await
        .unwrap()
        .call(call("/c", 2))
        .await
        .unwrap();
    service
        .ready()
        .await
        .unwrap()
        .call(call("/a", 3))
        .await
        .unwrap();
    let log = log.lock().unwrap();
    assert_eq!(
        log.last().map(|(n, at)| (*n, *at)),
        Some((3, ms(30_000))),
        "a waited out its pause"
    );
    assert_eq!(handle.stats().keys, 2);
}

#[tokio::test(start_paused = true)]
async fn a_head_that_is_never_polled_does_not_wedge_the_queue() {
    let start = Instant::now();
    let (log, upstream) = logging_upstream(start);
    let layer = RateLimitLayer::builder().per_second(10).build().unwrap();
    let mut service = layer.layer(upstream);
    service.call(Request::new(0)).await.unwrap();
    // The head of the queue is held by its caller but never polled.
    let _forgotten = service.call(Request::new(1));
    service.call(Request::new(2)).await.unwrap();
    // Its slot was 100 ms; after 100 ms + one interval of grace the head counts as stalled,
    // and the next goes ahead when its own timer, set at its slot (200 ms) plus the same
    // grace, finds it so.
    assert_eq!(*log.lock().unwrap(), vec![(0, ms(0)), (2, ms(400))]);
}

#[tokio::test(start_paused = true)]
async fn an_idle_key_whose_quota_has_not_refilled_is_not_forgotten() {
    let (_, upstream) = logging_upstream(Instant::now());
    let layer = RateLimitLayer::builder()
        .per_hour(2)
        .burst(2)
        .fail_fast()
        .key_by(|head: &seawall_core::RequestHead<'_>| head.uri.path().to_owned())
        .idle_after(Duration::from_secs(1))
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut service = layer.layer(upstream);
    let to = |path: &str| Request::builder().uri(path).body(0).unwrap();
    service.call(to("/spent")).await.unwrap();
    service.call(to("/spent")).await.unwrap();
    drop(service.call(to("/idle")).await.unwrap());
    tokio::time::advance(Duration::from_secs(5)).await;
    // A new key triggers a sweep of keys idle for over a second.
    service.call(to("/new")).await.unwrap();
    // "/idle" refilled a little but not whole: it is kept; the spent key is kept too.
    assert_eq!(handle.stats().keys, 3);
    match service.call(to("/spent")).await {
        Err(RateLimitError::Rejected(Rejected::Limited { retry_after })) => {
            // Half an hour for one token at 2/h, less the 5 s that passed.
            assert_eq!(retry_after, Duration::from_secs(1_800 - 5));
        }
        other => panic!("the spent quota was forgotten: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn waiters_sleep_through_a_pause_set_after_they_joined() {
    let start = Instant::now();
    let (log, upstream) = logging_upstream(start);
    let layer = RateLimitLayer::builder()
        .per_second(10)
        .burst(1)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut service = layer.layer(upstream);
    // One admitted at once, nine queued for 100 ms ... 900 ms.
    let calls: Vec<_> = (0..10u32)
        .map(|i| tokio::spawn(service.call(Request::new(i))))
        .collect();
    tokio::time::sleep(ms(50)).await;
    // The server then asks for 10 s of quiet, as a 429 with `Retry-After: 10` would.
    handle.pause((), Duration::from_secs(10));
    for call in calls {
        call.await.unwrap().unwrap();
    }

    let log = log.lock().unwrap();
    let expected: Vec<(u32, Duration)> = (0..10)
        .map(|i| match i {
            0 => (0, ms(0)),
            // From the pause's end, one every 100 ms.
            _ => (i, ms(10_050 + 100 * (u64::from(i) - 1))),
        })
        .collect();
    assert_eq!(*log, expected);
    // 18 wake-ups for nine waiters (33 before the queue's head timer; 338 when they looked
    // every 250 ms through the pause): the head twice (at its slot, to find the pause, and at
    // the pause's end); the eight behind it once each when their own timers (slot + 200 ms)
    // found the pause and moved on past the head's new slot, and once each when the head's
    // timer woke them at their turn.
    assert_eq!(handle.stats().wakeups, 18);
}

#[tokio::test(start_paused = true)]
async fn a_pause_of_duration_max_refuses_at_once_without_panicking() {
    let layer = RateLimitLayer::builder().per_second(10).build().unwrap();
    let handle = layer.handle();
    handle.pause((), Duration::MAX);
    let start = Instant::now();
    let refused = layer
        .layer(service_fn(|_request: Request<u32>| {
            ready(Ok::<_, std::io::Error>(Response::new(())))
        }))
        .oneshot(Request::new(0))
        .await;
    match refused {
        Err(RateLimitError::Rejected(Rejected::WaitTooLong { max_wait, .. })) => {
            assert_eq!(max_wait, Duration::from_secs(60));
        }
        other => panic!("expected an immediate WaitTooLong, got {other:?}"),
    }
    assert_eq!(start.elapsed(), Duration::ZERO);
}
