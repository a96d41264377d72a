//! Misuse: a service called without `poll_ready`, a service used again after an error,
//! settings at their extremes, and a clock decades on. Each gives a clear error or works;
//! none panics or hangs.

#![allow(
    clippy::unwrap_used,
    reason = "a test reports a broken fixture by panicking"
)]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use seawall::{Stack, StackBuilder};
use tower::{Service, ServiceExt, service_fn};

const DAY: Duration = Duration::from_secs(86_400);

fn get() -> Request<String> {
    Request::get("http://api.test/items")
        .body(String::new())
        .unwrap()
}

/// An upstream that answers 503 to every third request and 200 to the rest.
fn flaky() -> impl Service<
    Request<seawall::ReplayBody<String>>,
    Response = Response<String>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    let calls = Arc::new(AtomicU64::new(0));
    service_fn(move |_request| {
        let n = calls.fetch_add(1, Ordering::Relaxed);
        async move {
            let mut response = Response::new(String::new());
            if n % 3 == 2 {
                *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            }
            Ok::<_, Infallible>(response)
        }
    })
}

#[tokio::test(start_paused = true)]
async fn the_stack_answers_when_called_without_poll_ready() {
    let stack = seawall::stack()
        .rate_limit(|limit| limit.per_second(1).burst(1))
        .retry(|retry| retry.seed(7))
        .build()
        .unwrap();
    let mut service = stack.service(flaky());
    let started = tokio::time::Instant::now();
    // `call` straight away, as a careless caller would: each request still waits its turn.
    for _ in 0..3 {
        let response = service.call(get()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    // The third call met a 503 and was retried: four attempts, four tokens at one per second
    // with the first free, so the last admitted at 3 s (its backoff, under 1 s, ran inside
    // that wait).
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    assert_eq!(stack.rate_limit().stats().admitted, 4);
}

#[tokio::test(start_paused = true)]
async fn a_service_keeps_working_after_an_error() {
    let stack = seawall::stack()
        .circuit_breaker(|breaker| breaker.open_duration(Duration::from_secs(10)))
        .build()
        .unwrap();
    let mut service = stack.service(flaky());
    let host = seawall::core::KeyExtractor::extract_from(&seawall::core::ByHost, &get());
    stack.circuit_breaker().force_open(&host);
    let refused = service.ready().await.unwrap().call(get()).await;
    let error = refused.unwrap_err();
    assert!(
        error.inner().as_open().is_some(),
        "expected the open breaker's refusal, got {error}"
    );
    stack.circuit_breaker().reset(&host);
    let response = service.ready().await.unwrap().call(get()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// One setting pushed to an extreme: what it does to the stack's builder.
struct Case {
    name: &'static str,
    configure: fn(StackBuilder) -> StackBuilder,
    /// The field a `ConfigError` must name, or `None` when the setting is valid.
    rejected_field: Option<&'static str>,
}

macro_rules! case {
    ($name:literal, $field:expr, |$stack:ident| $configure:expr) => {
        Case {
            name: $name,
            configure: |$stack| $configure,
            rejected_field: $field,
        }
    };
}

fn cases() -> Vec<Case> {
    vec![
        case!("zero per second", Some("rate"), |s| s
            .rate_limit(|l| l.per_second(0))),
        case!("u32::MAX per second", Some("rate"), |s| s
            .rate_limit(|l| l.per_second(u32::MAX))),
        case!("u32::MAX burst", Some("burst"), |s| s
            .rate_limit(|l| l.per_second(1).burst(u32::MAX))),
        case!("zero burst", Some("burst"), |s| s
            .rate_limit(|l| l.per_second(1).burst(0))),
        case!("the most per second", None, |s| s
            .rate_limit(|l| l.per_second(1_000_000_000).burst(1_000_000))),
        case!("one per day", None, |s| s.rate_limit(|l| l.per(1, DAY))),
        case!("one per hour", None, |s| s.rate_limit(|l| l.per_hour(1))),
        case!("a quota over a century", Some("period"), |s| s
            .rate_limit(|l| l.per(1, DAY * 36_500))),
        case!("a quota over Duration::MAX", Some("period"), |s| s
            .rate_limit(|l| l.per(1, Duration::MAX))),
        case!("zero waiters", Some("max_waiting"), |s| s
            .rate_limit(|l| l.per_second(1).wait(0, DAY))),
        case!("usize::MAX waiters", Some("max_waiting"), |s| s
            .rate_limit(|l| l.per_second(1).wait(usize::MAX, DAY))),
        case!("a wait of Duration::MAX", Some("max_wait"), |s| s
            .rate_limit(|l| l.per_second(1).wait(10, Duration::MAX))),
        case!("zero keys", Some("max_keys"), |s| s
            .rate_limit(|l| l.per_second(1).max_keys(0))),
        case!("zero idle time", Some("idle_after"), |s| s
            .rate_limit(|l| l.per_second(1).idle_after(Duration::ZERO))),
        case!(
            "zero consecutive failures",
            Some("consecutive_failures"),
            |s| s.circuit_breaker(|b| b.consecutive_failures(0))
        ),
        case!(
            "u32::MAX consecutive failures",
            Some("consecutive_failures"),
            |s| s.circuit_breaker(|b| b.consecutive_failures(u32::MAX))
        ),
        case!("a NaN failure rate", Some("failure_rate"), |s| s
            .circuit_breaker(|b| b.failure_rate(f64::NAN))),
        case!("a failure rate over 100 %", Some("failure_rate"), |s| s
            .circuit_breaker(|b| b.failure_rate(100.5))),
        case!("a zero count window", Some("window"), |s| s
            .circuit_breaker(|b| b.count_window(0))),
        case!("a u32::MAX count window", Some("window"), |s| s
            .circuit_breaker(|b| b.count_window(u32::MAX))),
        case!("a zero time window", Some("window"), |s| s
            .circuit_breaker(|b| b.time_window(Duration::ZERO, 10))),
        case!("a Duration::MAX time window", Some("window"), |s| s
            .circuit_breaker(|b| b.time_window(Duration::MAX, u32::MAX))),
        case!("the widest windows", None, |s| s.circuit_breaker(|b| b
            .count_window(10_000)
            .time_window(Duration::from_secs(3_600), 1_000))),
        case!("a zero open duration", Some("open_duration"), |s| s
            .circuit_breaker(|b| b.open_duration(Duration::ZERO))),
        case!(
            "an open duration of Duration::MAX",
            Some("open_duration"),
            |s| s.circuit_breaker(|b| b.open_duration(Duration::MAX))
        ),
        case!("zero probes", Some("half_open_permits"), |s| s
            .circuit_breaker(|b| b.half_open_permits(0))),
        case!(
            "more successes than probes",
            Some("half_open_successes"),
            |s| s.circuit_breaker(|b| b.half_open_permits(2).half_open_successes(3))
        ),
        case!("a NaN slow-call rate", Some("slow_call_rate"), |s| s
            .circuit_breaker(
                |b| b.slow_calls(Duration::from_secs(1), f64::NAN)
            )),
        case!("zero attempts", Some("max_attempts"), |s| s
            .retry(|r| r.max_attempts(0))),
        case!("u32::MAX attempts", Some("max_attempts"), |s| s
            .retry(|r| r.max_attempts(u32::MAX))),
        case!("a backoff base over its cap", Some("backoff_cap"), |s| s
            .retry(|r| r.exponential_backoff(
                Duration::from_secs(10),
                Duration::from_secs(1)
            ))),
        case!("a backoff of Duration::MAX", Some("backoff_base"), |s| {
            s.retry(|r| r.exponential_backoff(Duration::MAX, Duration::MAX))
        }),
        case!("a zero fixed backoff", None, |s| s
            .retry(|r| r.fixed_backoff(Duration::ZERO))),
        case!("a zero deadline", Some("deadline"), |s| s
            .retry(|r| r.deadline(Duration::ZERO))),
        case!("a NaN budget", Some("budget_percent"), |s| s
            .retry(|r| r.budget(Duration::from_secs(10), 10, f64::NAN))),
        case!(
            "a budget of a billion percent",
            Some("budget_min_per_sec"),
            |s| s.retry(|r| r.budget(Duration::from_secs(10), u32::MAX, 1e9))
        ),
        case!("no replay buffer", None, |s| s
            .retry(|r| r.max_replay_bytes(0))),
        case!("no histogram buckets", Some("buckets"), |s| s
            .metrics(|m| m.buckets([]))),
        case!("NaN histogram buckets", Some("buckets"), |s| s
            .metrics(|m| m.buckets([0.1, f64::NAN]))),
        case!("descending histogram buckets", Some("buckets"), |s| s
            .metrics(|m| m.buckets([1.0, 0.5]))),
        case!("a zero attempt timeout", Some("attempt_timeout"), |s| s
            .attempt_timeout(Duration::ZERO)),
        case!(
            "an attempt timeout of Duration::MAX",
            Some("attempt_timeout"),
            |s| s.attempt_timeout(Duration::MAX)
        ),
    ]
}

#[tokio::test(start_paused = true)]
async fn extreme_settings_are_refused_by_name_or_work() {
    let mut wrong = Vec::new();
    for case in cases() {
        let built: Result<Stack, _> = (case.configure)(seawall::stack()).build();
        match (built, case.rejected_field) {
            (Err(error), Some(field)) if error.field() == field => {}
            (Err(error), _) => wrong.push(format!("{}: refused as {error}", case.name)),
            (Ok(_), Some(field)) => {
                wrong.push(format!(
                    "{}: accepted; expected `{field}` refused",
                    case.name
                ));
            }
            (Ok(stack), None) => {
                // Valid, however odd: requests finish, with a response or a typed error, in
                // bounded time.
                let service = stack.service(flaky());
                for _ in 0..3 {
                    let outcome = tokio::time::timeout(DAY, service.clone().oneshot(get())).await;
                    if outcome.is_err() {
                        wrong.push(format!("{}: a request hung", case.name));
                    }
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[tokio::test(start_paused = true)]
async fn the_stack_works_decades_after_it_was_built() {
    let stack = seawall::stack().build().unwrap();
    let service = stack.service(flaky());
    let response = service.clone().oneshot(get()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // Fifty years on the paused clock: no clock arithmetic overflows.
    tokio::time::advance(DAY * 365 * 50).await;
    for _ in 0..5 {
        let response = service.clone().oneshot(get()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    // Six requests, two of which met a 503 and were retried: eight attempts, each admitted.
    assert_eq!(stack.rate_limit().stats().admitted, 8);
}
