//! Window quotas, tiers, settled costs, the wait hook and priority aging, through the layer
//! on paused time.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test fixtures: a poisoned log, bad fixture or unexpected answer must fail the test loudly"
)]

mod support;
use support::{logging_upstream, ms};
#[path = "../../metrics/tests/support/capture.rs"]
mod capture;
use capture::Capture;

use std::future::ready;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use http::{Request, Response};
use seawall_rate_limit::conformance::run_window_golden_table;
use seawall_rate_limit::{InMemoryStore, RateLimitError, RateLimitLayer, Rejected};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[tokio::test(start_paused = true)]
async fn window_golden_table_in_process() {
    run_window_golden_table(&InMemoryStore::new(1), tokio::time::advance)
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_window_admits_exactly_n_in_the_first_minute_where_gcra_admits_more() {
    // What a server counting "20 in any minute" sees: the window sends 20, then the 21st
    // exactly when the first leaves the minute.
    let start = Instant::now();
    let (log, upstream) = logging_upstream(start);
    let window = RateLimitLayer::builder()
        .window(20, secs(60))
        .wait(100, secs(300))
        .build()
        .unwrap();
    let mut service = window.layer(upstream);
    let calls: Vec<_> = (0..41u32).map(|i| service.call(Request::new(i))).collect();
    join_all(calls).await;
    let times: Vec<Duration> = log.lock().unwrap().iter().map(|(_, at)| *at).collect();
    assert_eq!(&times[..20], &[Duration::ZERO; 20]);
    assert_eq!(&times[20..40], &[secs(60); 20]);
    assert_eq!(times[40], secs(120));

    // `per_minute(20).burst(20)` lets 20 go at once and one every 3 s after: 39 in the
    // first minute, and 40 counting its last instant.
    let start = Instant::now();
    let (log, upstream) = logging_upstream(start);
    let gcra = RateLimitLayer::builder()
        .per_minute(20)
        .burst(20)
        .build()
        .unwrap();
    let mut service = gcra.layer(upstream);
    let calls: Vec<_> = (0..41u32).map(|i| service.call(Request::new(i))).collect();
    join_all(calls).await;
    let log = log.lock().unwrap();
    let first_minute = log.iter().filter(|(_, at)| *at < secs(60)).count();
    assert_eq!(first_minute, 39);
    assert_eq!(log.iter().filter(|(_, at)| *at <= secs(60)).count(), 40);
}

#[tokio::test(start_paused = true)]
async fn windows_combine_and_all_must_admit() {
    // 2 in any second and 3 in any 10 s.
    let start = Instant::now();
    let (log, upstream) = logging_upstream(start);
    let layer = RateLimitLayer::builder()
        .window(2, secs(1))
        .window(3, secs(10))
        .build()
        .unwrap();
    let mut service = layer.layer(upstream);
    let calls: Vec<_> = (0..6u32).map(|i| service.call(Request::new(i))).collect();
    join_all(calls).await;
    let times: Vec<Duration> = log.lock().unwrap().iter().map(|(_, at)| *at).collect();
    assert_eq!(
        times,
        vec![secs(0), secs(0), secs(1), secs(10), secs(10), secs(11)]
    );
}

#[tokio::test(start_paused = true)]
async fn max_wait_is_judged_on_when_the_window_next_admits() {
    let (_, upstream) = logging_upstream(Instant::now());
    let layer = RateLimitLayer::builder()
        .window(2, secs(1))
        .wait(100, ms(1_500))
        .build()
        .unwrap();
    let mut service = layer.layer(upstream);
    let first = service.call(Request::new(0));
    let second = service.call(Request::new(1));
    // Predicted at 1 s (when the first two leave the window): within 1.5 s.
    let third = service.call(Request::new(2));
    let fourth = service.call(Request::new(3));
    // Predicted at 2 s: refused at once with that figure.
    match service.call(Request::new(4)).await {
        Err(RateLimitError::Rejected(Rejected::WaitTooLong {
            predicted,
            max_wait,
        })) => {
            assert_eq!(predicted, secs(2));
            assert_eq!(max_wait, ms(1_500));
        }
        other => panic!("expected WaitTooLong, got {other:?}"),
    }
    let started = Instant::now();
    for call in [first, second, third, fourth] {
        call.await.unwrap();
    }
    assert_eq!(started.elapsed(), secs(1));
}

#[test]
fn absurd_windows_are_refused_with_the_field() {
    let error = RateLimitLayer::builder()
        .window(100_001, secs(60))
        .build()
        .unwrap_err();
    assert_eq!(error.field(), "window");
    let error = RateLimitLayer::builder()
        .window(0, secs(60))
        .build()
        .unwrap_err();
    assert_eq!(error.field(), "window");
    let error = RateLimitLayer::builder()
        .window(10, Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(error.field(), "period");
    let error = RateLimitLayer::builder()
        .window(10, secs(60))
        .burst(5)
        .build()
        .unwrap_err();
    assert_eq!(error.field(), "burst");
}

#[tokio::test(start_paused = true)]
async fn a_window_key_is_kept_while_its_window_counts() {
    let layer = RateLimitLayer::builder()
        .window(1, secs(60))
        .key_by(|request: &seawall_core::RequestHead<'_>| request.uri.path().to_owned())
        .idle_after(secs(1))
        .build()
        .unwrap();
    let handle = layer.handle();
    let (_, upstream) = logging_upstream(Instant::now());
    let mut service = layer.layer(upstream);
    let request = || Request::builder().uri("/a").body(0u32).unwrap();
    service
        .ready()
        .await
        .unwrap()
        .call(request())
        .await
        .unwrap();
    tokio::time::advance(secs(30)).await;
    // Idle for 30 s, past `idle_after`, but its window still holds the admission: a second
    // request waits for it to leave instead of finding a fresh key.
    let started = Instant::now();
    service
        .ready()
        .await
        .unwrap()
        .call(request())
        .await
        .unwrap();
    assert_eq!(started.elapsed(), secs(30));
    assert_eq!(handle.stats().admitted_after_wait, 1);
}

/// Counts how many of `n` requests with API key `key` are admitted at once, and the
/// `retry_after` of the first refused.
async fn admitted_at_once<S>(service: &mut S, key: &str, n: usize) -> (usize, Option<Duration>)
where
    S: Service<Request<u32>, Response = Response<()>, Error = RateLimitError<std::io::Error>>,
{
    let mut admitted = 0;
    let mut retry_after = None;
    for _ in 0..n {
        let request = Request::builder()
            .header("x-api-key", key)
            .body(0u32)
            .unwrap();
        match service.call(request).await {
            Ok(_) => admitted += 1,
            Err(RateLimitError::Rejected(Rejected::Limited { retry_after: after })) => {
                retry_after.get_or_insert(after);
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    (admitted, retry_after)
}

#[tokio::test(start_paused = true)]
async fn two_api_keys_on_two_tiers_each_get_exactly_their_own_quota() {
    let api_key = |head: &seawall_core::RequestHead<'_>| {
        head.headers
            .get("x-api-key")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let layer = RateLimitLayer::builder()
        .per_minute(10)
        .burst(10)
        .tier(
            "pro",
            [seawall_rate_limit::Quota::window(100, secs(60)).unwrap()],
        )
        .tier(
            "team",
            [
                seawall_rate_limit::Quota::per_second(1).unwrap(),
                seawall_rate_limit::Quota::window(3, secs(60)).unwrap(),
            ],
        )
        .fail_fast()
        .key_by(api_key)
        .tier_of(|key: &String| {
            if key.starts_with("pro-") {
                "pro"
            } else if key.starts_with("team-") {
                "team"
            } else {
                "free"
            }
        })
        .build()
        .unwrap();
    let handle = layer.handle();
    let (_, upstream) = logging_upstream(Instant::now());
    let mut service = layer.layer(upstream);
    // "free" names no tier: the layer's own 10 a minute, burst 10, then one per 6 s.
    assert_eq!(
        admitted_at_once(&mut service, "free-1", 30).await,
        (10, Some(secs(6)))
    );
    // The pro key: its window of 100 in any minute, whatever the free key spent.
    assert_eq!(
        admitted_at_once(&mut service, "pro-1", 130).await,
        (100, Some(secs(60)))
    );
    // A second free key has cells of its own.
    assert_eq!(
        admitted_at_once(&mut service, "free-2", 12).await,
        (10, Some(secs(6)))
    );
    // Both of a tier's quotas must admit.
    assert_eq!(
        admitted_at_once(&mut service, "team-1", 5).await,
        (1, Some(secs(1)))
    );
    tokio::time::advance(secs(2)).await;
    assert_eq!(
        admitted_at_once(&mut service, "team-1", 5).await,
        (1, Some(secs(1)))
    );
    assert_eq!(handle.tokens_available("pro-1".to_owned()), Some(0));
    assert_eq!(handle.tokens_available("free-2".to_owned()), Some(0));
    assert_eq!(handle.tokens_available("team-1".to_owned()), Some(0));
    tokio::time::advance(secs(60)).await;
    assert_eq!(handle.tokens_available("pro-1".to_owned()), Some(100));
    assert_eq!(handle.tokens_available("team-1".to_owned()), Some(1));
    assert_eq!(handle.stats().keys, 4);
}

#[test]
fn a_resolver_for_another_key_or_a_bad_tier_is_refused() {
    let error = RateLimitLayer::builder()
        .per_second(1)
        .tier_of(|_: &()| "pro")
        .per_host()
        .build()
        .unwrap_err();
    assert_eq!(error.field(), "tier_of");
    let error = RateLimitLayer::builder()
        .per_second(1)
        .tier("pro", [])
        .build()
        .unwrap_err();
    assert_eq!(error.field(), "tier");
    let one = seawall_rate_limit::Quota::per_second(1).unwrap();
    let error = RateLimitLayer::builder()
        .per_second(1)
        .tier("pro", [one])
        .tier("pro", [one])
        .build()
        .unwrap_err();
    assert_eq!(error.field(), "tier");
}

/// An upstream that reports, in `x-tokens-used`, the number its request carries.
fn token_counting_upstream()
-> impl Service<Request<u32>, Response = Response<()>, Error = std::io::Error, Future: Send> + Clone
{
    service_fn(|request: Request<u32>| {
        let response = Response::builder()
            .header("x-tokens-used", request.body().to_string())
            .body(())
            .unwrap();
        ready(Ok::<_, std::io::Error>(response))
    })
}

fn costing(cost: u32, actual: u32) -> Request<u32> {
    let mut request = Request::new(actual);
    request
        .extensions_mut()
        .insert(seawall_rate_limit::Cost(cost));
    request
}

/// 100 tokens a second (one per 10 ms), 100 at once, settling from `x-tokens-used`.
fn token_budget() -> RateLimitLayer {
    RateLimitLayer::builder()
        .per_second(100)
        .burst(100)
        .settle_costs(Some(http::HeaderName::from_static("x-tokens-used")))
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_request_that_cost_more_than_its_estimate_is_debited() {
    let layer = token_budget();
    let handle = layer.handle();
    let mut service = layer.layer(token_counting_upstream());
    // Estimated 100, really 300: the next admission waits for the 200 over the burst.
    service.call(costing(100, 300)).await.unwrap();
    assert_eq!(handle.tokens_available(()), Some(0));
    let started = Instant::now();
    service.call(costing(1, 1)).await.unwrap();
    assert_eq!(started.elapsed(), ms(2_010));
}

/// How long the request after one the server says took four billion tokens waits, under
/// `quotas` settled from `x-tokens-used` (with a wait allowed of 10 minutes), and the
/// warnings the cut logged: the figure settled and the tokens taken.
async fn wait_after_an_absurd_settlement(
    quotas: seawall_rate_limit::RateLimitBuilder,
) -> (Duration, Vec<(String, String)>) {
    let capture = Capture::default();
    let _logging = tracing::subscriber::set_default(capture.clone());
    let layer = quotas
        .settle_costs(Some(http::HeaderName::from_static("x-tokens-used")))
        .wait(10, Duration::from_secs(600))
        .build()
        .unwrap();
    let mut service = layer.layer(token_counting_upstream());
    service.call(costing(1, u32::MAX)).await.unwrap();
    let started = Instant::now();
    service.call(costing(1, 1)).await.unwrap();
    let cuts = capture
        .captured
        .lock()
        .unwrap()
        .events_named("a settled cost larger than the key's quotas can hold was cut")
        .into_iter()
        .map(|(_, fields)| {
            assert_eq!(fields["cuts"], "1");
            (fields["settled"].clone(), fields["taken"].clone())
        })
        .collect();
    (started.elapsed(), cuts)
}

#[tokio::test(start_paused = true)]
async fn an_absurd_settled_cost_holds_the_key_five_minutes_at_most() {
    // Four billion tokens at 100 a second would hold the key for 490 days. A settlement
    // takes at most what holds it for the hint policy's `max_delay` (5 minutes), as a
    // `Retry-After` may: 30,000 tokens here. The schedule moved 10 ms for the request and
    // 300 s for the settlement; the next one goes once it is within the burst's second of it.
    let quotas = RateLimitLayer::builder().per_second(100).burst(100);
    let (wait, cuts) = wait_after_an_absurd_settlement(quotas).await;
    assert_eq!(wait, ms(299_020));
    // Said in the log: the request's one token and 30,000 for the settlement.
    assert_eq!(cuts, [(u32::MAX.to_string(), "30001".to_owned())]);
}

#[tokio::test(start_paused = true)]
async fn a_settled_cost_beyond_u32_is_cut_as_an_absurd_one_not_ignored() {
    // A server's `x-tokens-used: 5000000000` (past `u32`), or a figure past `u64`: ignored,
    // the request would keep its estimate of one token and the next would go at once.
    for figure in ["5000000000", "99999999999999999999999"] {
        let layer = RateLimitLayer::builder()
            .per_second(100)
            .burst(100)
            .settle_costs(Some(http::HeaderName::from_static("x-tokens-used")))
            .wait(10, Duration::from_secs(600))
            .build()
            .unwrap();
        let mut service = layer.layer(service_fn(|request: Request<&'static str>| {
            let response = Response::builder()
                .header("x-tokens-used", *request.body())
                .body(())
                .unwrap();
            ready(Ok::<_, std::io::Error>(response))
        }));
        service.call(Request::new(figure)).await.unwrap();
        let started = Instant::now();
        service.call(Request::new("1")).await.unwrap();
        // As for `u32::MAX` tokens: held the hint policy's five minutes, less the burst's
        // second.
        assert_eq!(started.elapsed(), ms(299_020), "{figure}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_absurd_settled_cost_holds_every_quota_of_a_key_five_minutes_at_most() {
    // 100 a second (30,000 tokens in 5 minutes) and one a second (300): the settlement takes
    // the fewer, so the slower quota too is held 5 minutes, not 8 hours. Its schedule stands
    // 301 s ahead: 1 s for the request, 300 s for the settlement.
    let quotas = RateLimitLayer::builder()
        .per_second(100)
        .burst(100)
        .per_second(1)
        .burst(1)
        .store(seawall_rate_limit::InMemoryStore::new(2));
    let (wait, cuts) = wait_after_an_absurd_settlement(quotas).await;
    assert_eq!(wait, ms(301_000));
    assert_eq!(cuts, [(u32::MAX.to_string(), "301".to_owned())]);
}

#[tokio::test(start_paused = true)]
async fn a_request_that_cost_less_than_its_estimate_is_refunded() {
    let layer = token_budget();
    let handle = layer.handle();
    let mut service = layer.layer(token_counting_upstream());
    // Estimated 100, really 20: 80 come back at once.
    service.call(costing(100, 20)).await.unwrap();
    assert_eq!(handle.tokens_available(()), Some(80));
    let started = Instant::now();
    service.call(costing(80, 80)).await.unwrap();
    assert_eq!(started.elapsed(), Duration::ZERO);
    service.call(costing(1, 1)).await.unwrap();
    assert_eq!(started.elapsed(), ms(10));
}

/// A layer of `quotas` whose requests wait up to 10 s, over an upstream that names no cost
/// (costs are settled through the handle), and its handle.
fn settled_through_the_handle(
    quotas: seawall_rate_limit::RateLimitBuilder,
) -> (
    seawall_rate_limit::RateLimitHandle<(), InMemoryStore>,
    impl Service<Request<u32>, Response = Response<()>, Error: std::fmt::Debug>,
) {
    let layer = quotas.wait(10, Duration::from_secs(10)).build().unwrap();
    (layer.handle(), layer.layer(token_counting_upstream()))
}

/// A settled request gives back only the tokens its quota still holds: those the quota has
/// refilled since the request's admission went to later requests. A user of a token budget
/// whose answers stream for longer than the budget takes to refill.
#[tokio::test(start_paused = true)]
async fn a_late_refund_gives_back_only_what_the_rate_quota_still_holds() {
    let (handle, mut service) =
        settled_through_the_handle(RateLimitLayer::builder().per_second(10).burst(10));
    let start = Instant::now();
    // A takes the whole burst at 0 s; by 1 s the quota has refilled, and B takes it again.
    service.call(costing(10, 0)).await.unwrap();
    tokio::time::advance(ms(1_000)).await;
    service.call(costing(10, 0)).await.unwrap();
    // At 1.5 s A turns out to have cost 1: its 9 other tokens came back by 0.9 s and went to
    // B. C, for the whole burst, waits for the 5 tokens that B's 10 leave missing.
    tokio::time::advance(ms(500)).await;
    handle.settle((), 10, 1, start);
    let before = Instant::now();
    service.call(costing(10, 0)).await.unwrap();
    assert_eq!(before.elapsed(), ms(500));

    // A refund while the quota still holds the request: what the clock has not refilled
    // comes back. D takes the burst at 3 s and costs 1; at 3.2 s 2 tokens have refilled
    // anyway, and the other 8 come back, so the burst is whole again.
    tokio::time::advance(ms(1_000)).await;
    let admitted = Instant::now();
    service.call(costing(10, 0)).await.unwrap();
    tokio::time::advance(ms(200)).await;
    handle.settle((), 10, 1, admitted);
    assert_eq!(handle.tokens_available(()), Some(10));
}

/// A window quota takes a refund off the request's own admission, which leaves the window
/// first: taken off the newest admissions instead, the window would free room when the
/// request's admission left it, and admit more than its count in one period.
#[tokio::test(start_paused = true)]
async fn a_refund_comes_off_the_window_s_own_admission_not_the_newest() {
    let (handle, mut service) =
        settled_through_the_handle(RateLimitLayer::builder().window(10, Duration::from_secs(1)));
    let start = Instant::now();
    service.call(costing(5, 0)).await.unwrap();
    tokio::time::advance(ms(500)).await;
    service.call(costing(5, 0)).await.unwrap();
    // The first turns out to have cost 1: 4 tokens back, off its own admission at 0 s (a
    // caller's reading of when it sent it, a little after the limiter's, finds it too).
    handle.settle((), 5, 1, start + ms(100));
    service.call(costing(4, 0)).await.unwrap();
    assert_eq!(start.elapsed(), ms(500), "4 fit at once");
    // At 1 s the first's 1 token leaves; 5 more need the 5 of 0.5 s gone too (at 1.5 s):
    // [0.5 s, 1.5 s) then holds 4 + 5.
    tokio::time::advance(ms(500)).await;
    let before = Instant::now();
    service.call(costing(5, 0)).await.unwrap();
    assert_eq!(before.elapsed(), ms(500));
}

#[tokio::test(start_paused = true)]
async fn a_cost_known_later_is_settled_through_the_handle_or_the_response() {
    let layer = RateLimitLayer::builder()
        .per_second(100)
        .burst(100)
        .settle_costs(None)
        .build()
        .unwrap();
    let handle = layer.handle();
    // The service below reports the cost as an extension of its response.
    let upstream = service_fn(|request: Request<u32>| {
        let mut response = Response::new(());
        if *request.body() > 0 {
            response
                .extensions_mut()
                .insert(seawall_rate_limit::ActualCost(*request.body()));
        }
        ready(Ok::<_, std::io::Error>(response))
    });
    let mut service = layer.layer(upstream);
    service.call(costing(100, 40)).await.unwrap();
    assert_eq!(handle.tokens_available(()), Some(60));
    // No figure on the answer: the estimate stands until the caller reports the cost.
    service.call(costing(60, 0)).await.unwrap();
    assert_eq!(handle.tokens_available(()), Some(0));
    handle.settle((), 60, 160, Instant::now());
    let started = Instant::now();
    service.call(costing(1, 0)).await.unwrap();
    assert_eq!(started.elapsed(), ms(1_010));
}

#[tokio::test(start_paused = true)]
async fn on_wait_is_called_once_per_waiter_with_its_figures() {
    type Calls = Arc<Mutex<Vec<(String, Duration, u64, Option<u64>)>>>;
    let calls: Calls = Arc::default();
    let sink = Arc::clone(&calls);
    let by_path = |head: &seawall_core::RequestHead<'_>| head.uri.path().to_owned();
    let layer = RateLimitLayer::builder()
        .per_second(10)
        .burst(2)
        .key_by(by_path)
        .on_wait(move |key: &String, predicted, ahead, tokens_left| {
            sink.lock()
                .unwrap()
                .push((key.clone(), predicted, ahead, tokens_left));
        })
        .build()
        .unwrap();
    let (log, upstream) = logging_upstream(Instant::now());
    let mut service = layer.layer(upstream);
    let request = |path: &str, cost: u32| {
        let mut request = Request::builder().uri(path).body(0u32).unwrap();
        request
            .extensions_mut()
            .insert(seawall_rate_limit::Cost(cost));
        request
    };
    let first = service.call(request("/a", 1));
    let second = service.call(request("/a", 2));
    let third = service.call(request("/a", 1));
    join_all([first, second, third]).await;
    assert_eq!(log.lock().unwrap().len(), 3);
    assert_eq!(
        *calls.lock().unwrap(),
        vec![
            ("/a".to_owned(), ms(100), 0, Some(1)),
            ("/a".to_owned(), ms(200), 2, Some(1)),
        ]
    );
}

#[test]
fn a_wait_hook_given_before_key_by_is_refused() {
    let error = RateLimitLayer::builder()
        .per_second(1)
        .on_wait(|_: &(), _, _, _| {})
        .per_host()
        .build()
        .unwrap_err();
    assert_eq!(error.field(), "on_wait");
    let error = RateLimitLayer::builder()
        .per_second(1)
        .priority_aging(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(error.field(), "priority_aging");
}

/// One request of priority 0 at 0 ms behind one admitted at once, and one of priority 255
/// every 100 ms from 50 ms, against 10 a second: when the low one is admitted.
async fn low_priority_admitted_at(aging: Option<Duration>) -> Duration {
    let start = Instant::now();
    let (log, upstream) = logging_upstream(start);
    let mut builder = RateLimitLayer::builder().per_second(10);
    if let Some(aging) = aging {
        builder = builder.priority_aging(aging);
    }
    let layer = builder.build().unwrap();
    let service = layer.layer(upstream);
    let with_priority = |body: u32, priority: u8| {
        let mut request = Request::new(body);
        request
            .extensions_mut()
            .insert(seawall_rate_limit::Priority(priority));
        request
    };
    service.clone().oneshot(with_priority(0, 0)).await.unwrap();
    let low = tokio::spawn(service.clone().oneshot(with_priority(1, 0)));
    let mut highs = Vec::new();
    for k in 0..15u64 {
        tokio::time::sleep_until(start + ms(50 + 100 * k)).await;
        let high = with_priority(100 + u32::try_from(k).unwrap(), 255);
        highs.push(tokio::spawn(service.clone().oneshot(high)));
    }
    low.await.unwrap().unwrap();
    for high in highs {
        high.await.unwrap().unwrap();
    }
    let log = log.lock().unwrap();
    log.iter().find(|(body, _)| *body == 1).unwrap().1
}

#[tokio::test(start_paused = true)]
async fn priority_aging_admits_a_low_priority_waiter_within_its_bound() {
    // Strict priorities: every high one that comes while it waits goes first.
    assert_eq!(low_priority_admitted_at(None).await, ms(1_600));
    // Aged over 1 s: only the 10 high ones that joined within 1 s after it go first.
    assert_eq!(low_priority_admitted_at(Some(secs(1))).await, ms(1_100));
    // Aged over 300 ms: 3 of them.
    assert_eq!(low_priority_admitted_at(Some(ms(300))).await, ms(400));
}

/// An upstream that throttles the request carrying 1 with a bare 429, the one carrying 2
/// with a 429 and `Retry-After: 2`, and answers the rest.
fn throttling_upstream()
-> impl Service<Request<u32>, Response = Response<()>, Error = std::io::Error, Future: Send> + Clone
{
    service_fn(|request: Request<u32>| {
        let mut response = Response::builder();
        match *request.body() {
            1 => response = response.status(429),
            2 => response = response.status(429).header("retry-after", "2"),
            _ => {}
        }
        ready(Ok::<_, std::io::Error>(response.body(()).unwrap()))
    })
}

#[tokio::test(start_paused = true)]
async fn an_adaptive_rate_drops_on_a_bare_429_and_climbs_back_to_the_quota() {
    let layer = RateLimitLayer::builder()
        .per_second(100)
        .adaptive()
        .build()
        .unwrap();
    let handle = layer.handle();
    let service = layer.layer(throttling_upstream());
    assert_eq!(handle.current_rate(()), Some(100.0));
    let start = Instant::now();
    let response = service.clone().oneshot(Request::new(1)).await.unwrap();
    assert_eq!(response.status(), 429);
    // Nothing measured yet: 0.7 of the rate in force, a request every 14,285,715 ns.
    let paced = Duration::from_nanos(14_285_715);
    let rate = handle.current_rate(()).unwrap();
    assert!((rate - 70.0).abs() < 1e-4, "{rate}");
    // The quota's next slot is at 10 ms; the adaptive pace then holds the next one.
    service.clone().oneshot(Request::new(0)).await.unwrap();
    assert_eq!(start.elapsed(), ms(10));
    service.clone().oneshot(Request::new(0)).await.unwrap();
    // 10 ms + 14.285715 ms, which tokio's timer (a millisecond wheel) rounds up.
    assert_eq!(paced, Duration::from_nanos(14_285_715));
    assert_eq!(start.elapsed(), ms(25));

    // A 429 with a reset: the pause wins, and the rate is not cut: it is the curve's, read
    // at this instant (from the plateau of 100, K = cbrt(100 × 0.3 / 0.4) s after the cut).
    service.clone().oneshot(Request::new(2)).await.unwrap();
    let paused_at = start.elapsed();
    let k = (100.0f64 * 0.3 / 0.4).cbrt();
    let on_the_curve = 100.0 - 0.4 * (k - paused_at.as_secs_f64()).powi(3);
    let rate = handle.current_rate(()).unwrap();
    assert!(
        (rate - on_the_curve).abs() < 1e-9,
        "{rate} vs {on_the_curve}"
    );
    assert!(rate > 70.0);
    service.clone().oneshot(Request::new(0)).await.unwrap();
    assert_eq!(start.elapsed(), paused_at + secs(2));

    // Successes climb back along the cubic: K = cbrt(100 × 0.3 / 0.4) ≈ 4.2 s after the
    // throttle the rate is back at the quota's, and never above it.
    for _ in 0..600 {
        service.clone().oneshot(Request::new(0)).await.unwrap();
        assert!(handle.current_rate(()).unwrap() <= 100.0);
    }
    assert!(start.elapsed() > secs(6));
    assert_eq!(handle.current_rate(()), Some(100.0));
}

#[tokio::test(start_paused = true)]
async fn without_adaptive_there_is_no_rate_figure() {
    let layer = RateLimitLayer::builder().per_second(100).build().unwrap();
    assert_eq!(layer.handle().current_rate(()), None);
}
