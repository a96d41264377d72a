//! The events of the layers between a logical request and its attempts (retry decisions,
//! rate limiter waits and refusals, breaker transitions and refusals) land inside the
//! request's span, with their fields. Real layers over an in-process upstream, on paused time.

#[path = "../../crates/metrics/tests/support/capture.rs"]
mod capture;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Empty;
use seawall_circuit_breaker::CircuitBreakerLayer;
use seawall_metrics::MetricsLayer;
use seawall_rate_limit::RateLimitLayer;
use seawall_retry::{Jitter, ReplayBody, RetryLayer};
use tower::{ServiceBuilder, ServiceExt, service_fn};

use capture::Capture;

fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn get() -> Request<Empty<Bytes>> {
    Request::get("http://api.test/items")
        .body(Empty::new())
        .expect("valid request")
}

#[tokio::test(start_paused = true)]
async fn retry_limiter_and_breaker_events_are_inside_the_request_span() {
    let capture = Capture::default();
    let _default = tracing::subscriber::set_default(capture.clone());

    let metrics = MetricsLayer::builder().build().expect("valid config");
    let retry = RetryLayer::builder()
        .max_attempts(2)
        .fixed_backoff(Duration::from_millis(10))
        .jitter(Jitter::None)
        .build()
        .expect("valid config");
    let breaker = CircuitBreakerLayer::builder()
        .consecutive_failures(2)
        .no_failure_rate()
        .build()
        .expect("valid config");
    // One token every 100 ms, none saved up.
    let limit = RateLimitLayer::builder()
        .per_second(10)
        .burst(1)
        .build()
        .expect("valid config");
    let upstream = service_fn(|_request: Request<ReplayBody<Empty<Bytes>>>| async {
        Ok::<_, std::io::Error>(Response::builder().status(503).body(()).expect("response"))
    });
    let stack = ServiceBuilder::new()
        .layer(metrics.clone())
        .layer(retry)
        .layer(breaker)
        .layer(limit)
        .layer(metrics.attempts())
        .service(upstream);

    // The first attempt takes the token and gets a 503; the retry waits 10 ms, then the
    // limiter 90 ms more for the next token; its 503 trips the breaker.
    let response = stack.clone().oneshot(get()).await.expect("a response");
    assert_eq!(response.status(), 503);
    // The breaker, open, refuses the next request.
    assert!(stack.oneshot(get()).await.is_err());

    let captured = capture.captured.lock().expect("not poisoned");
    let request = Some("http.client.request");
    assert_eq!(
        captured.events_named("retrying request"),
        [(
            request,
            fields(&[
                ("message", "retrying request"),
                ("attempt", "1"),
                ("delay_ms", "10"),
                ("reason", "server_error")
            ])
        )]
    );
    assert_eq!(
        captured.events_named("waiting in the rate limiter's queue"),
        [(
            request,
            fields(&[
                ("message", "waiting in the rate limiter's queue"),
                ("predicted_wait_ms", "90"),
                ("position", "0")
            ])
        )]
    );
    let transitions = captured.events_named("circuit breaker transition");
    assert_eq!(transitions.len(), 1, "{transitions:?}");
    assert_eq!(transitions[0].0, request);
    assert_eq!(
        (
            transitions[0].1["from"].as_str(),
            transitions[0].1["to"].as_str()
        ),
        ("closed", "open")
    );
    assert_eq!(
        captured.events_named("circuit breaker refused a call"),
        [(
            request,
            fields(&[
                ("message", "circuit breaker refused a call"),
                ("state", "open")
            ])
        )]
    );
    // Two logical requests, the first with two attempts; the second never reached one.
    let names: Vec<&str> = captured.spans.values().map(|s| s.name).collect();
    assert_eq!(
        names,
        [
            "http.client.request",
            "http.client.attempt",
            "http.client.attempt",
            "http.client.request"
        ]
    );
    let last = captured.spans.values().last().expect("a span");
    assert_eq!(last.fields["error.type"], "rejected");
}

#[tokio::test(start_paused = true)]
async fn a_rate_limiter_refusal_is_an_event_with_its_reason() {
    let capture = Capture::default();
    let _default = tracing::subscriber::set_default(capture.clone());
    let metrics = MetricsLayer::builder().build().expect("valid config");
    let limit = RateLimitLayer::builder()
        .per_second(1)
        .burst(1)
        .fail_fast()
        .build()
        .expect("valid config");
    let upstream = service_fn(|_request: Request<Empty<Bytes>>| async {
        Ok::<_, std::io::Error>(Response::new(()))
    });
    let stack = ServiceBuilder::new()
        .layer(metrics.clone())
        .layer(limit)
        .service(upstream);
    assert!(stack.clone().oneshot(get()).await.is_ok());
    assert!(stack.oneshot(get()).await.is_err());

    let captured = capture.captured.lock().expect("not poisoned");
    assert_eq!(
        captured.events_named("rate limiter refused a request"),
        [(
            Some("http.client.request"),
            fields(&[
                ("message", "rate limiter refused a request"),
                ("reason", "limited")
            ])
        )]
    );
}
