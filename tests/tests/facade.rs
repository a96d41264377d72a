//! The facade with any store, key and classifier, per-route quotas and a fallback, over
//! hyper-util's client against real hyper servers on 127.0.0.1.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "tests: a failed setup is a failed test"
)]

// The Redis store's own test support: a throwaway `redis-server` on a free port.
#[path = "support/exposition_check.rs"]
mod exposition_check;
#[path = "../../crates/rate-limit-redis/tests/support/mod.rs"]
mod redis_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use seawall::circuit_breaker::{CircuitOpen, State};
use seawall::core::RequestHead;
use seawall::rate_limit::Rejected;
use seawall::{FallbackLayer, Refusal, Refused};
use seawall_examples::{Upstream, respond};
use seawall_rate_limit_redis::RedisStore;
use tower::{Layer, ServiceExt};

/// The rate limiter's refusal in a stack's error.
fn rejected(error: &impl Refused) -> Option<&Rejected> {
    match error.refusal()? {
        Refusal::RateLimited(rejected) => Some(rejected),
        Refusal::CircuitOpen(_) => None,
    }
}

/// The circuit breaker's refusal in a stack's error.
fn circuit_open(error: &impl Refused) -> Option<&CircuitOpen> {
    match error.refusal()? {
        Refusal::CircuitOpen(open) => Some(open),
        Refusal::RateLimited(_) => None,
    }
}

/// A server answering `status` to every request, and the number it received.
async fn upstream(status: u16) -> (Upstream, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    let upstream = Upstream::start(move |_request| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move { respond(status, &[], "upstream") }
    })
    .await
    .unwrap();
    (upstream, calls)
}

fn get(url: &str) -> Request<Empty<Bytes>> {
    Request::get(url).body(Empty::new()).unwrap()
}

fn get_as(url: &str, tenant: &str) -> Request<Empty<Bytes>> {
    Request::get(url)
        .header("x-tenant", tenant)
        .body(Empty::new())
        .unwrap()
}

/// The caller's tenant, from its `x-tenant` header.
fn tenant(head: &RequestHead<'_>) -> String {
    head.headers
        .get("x-tenant")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("anonymous")
        .to_owned()
}

#[tokio::test]
async fn two_stacks_on_one_redis_store_share_one_quota() {
    let Some(server) = redis_support::server() else {
        return;
    };
    let (upstream, calls) = upstream(200).await;
    // Two processes' stacks, each with its own connection to the one Redis.
    let mut stacks = Vec::new();
    for _ in 0..2 {
        let store = RedisStore::builder(&server.url()).connect().await.unwrap();
        let stack = seawall::stack()
            .store(store)
            .rate_limit(|limit| limit.per_minute(60).burst(2).fail_fast())
            .build()
            .unwrap();
        stacks.push(stack);
    }
    let first = stacks[0].hyper_client::<Empty<Bytes>>();
    let second = stacks[1].hyper_client::<Empty<Bytes>>();
    for _ in 0..2 {
        let response = first
            .clone()
            .oneshot(get(&upstream.url("/")))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    // The burst of 2 is spent in Redis: the other stack is refused, naming the wait.
    let error = second
        .clone()
        .oneshot(get(&upstream.url("/")))
        .await
        .unwrap_err();
    let rejected = rejected(&error).unwrap();
    let &Rejected::Limited { retry_after } = rejected else {
        panic!("expected a fail-fast refusal, got {rejected:?}");
    };
    assert!(
        retry_after > Duration::ZERO && retry_after <= Duration::from_secs(1),
        "{retry_after:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(stacks[0].rate_limit().stats().admitted, 2);
    assert_eq!(stacks[1].rate_limit().stats().rejected_limited, 1);

    // A route on a shared store needs a store of its own (its own key names).
    let store = RedisStore::builder(&server.url()).connect().await.unwrap();
    let error = seawall::stack()
        .store(store.clone())
        .route("/search", |limit| limit.per_minute(10))
        .build()
        .unwrap_err();
    assert_eq!(error.field(), "route");
    let search = RedisStore::builder(&server.url())
        .prefix("search")
        .connect()
        .await
        .unwrap();
    seawall::stack()
        .store(store)
        .route_with_store("/search", search, |limit| limit.per_minute(10))
        .build()
        .unwrap();
}

#[tokio::test]
async fn a_custom_key_gives_each_tenant_its_own_quota_and_breaker() {
    let (failing, _) = upstream(500).await;
    let stack = seawall::stack()
        .key_by(tenant)
        .rate_limit(|limit| limit.per_minute(60).burst(3).fail_fast())
        .circuit_breaker(|breaker| breaker.consecutive_failures(2).no_failure_rate())
        .retry(|retry| retry.max_attempts(1))
        .build()
        .unwrap();
    let client = stack.hyper_client::<Empty<Bytes>>();
    let url = failing.url("/");
    // Alice's two failures open her breaker; Bob's is untouched.
    for _ in 0..2 {
        let response = client.clone().oneshot(get_as(&url, "alice")).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    let breakers = stack.circuit_breaker();
    assert_eq!(breakers.state(&"alice".to_owned()), State::Open);
    let error = client
        .clone()
        .oneshot(get_as(&url, "alice"))
        .await
        .unwrap_err();
    assert!(circuit_open(&error).is_some(), "{error:?}");
    assert_eq!(breakers.state(&"bob".to_owned()), State::Closed);

    // Alice spent 2 of her 3 tokens (the breaker's refusal took none); Bob has all of his.
    let response = client.clone().oneshot(get_as(&url, "bob")).await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let limits = stack.rate_limit().stats();
    assert_eq!((limits.admitted, limits.keys), (3, 2));
}

#[tokio::test]
async fn a_route_has_its_own_quota_and_the_rest_keep_theirs() {
    let (upstream, calls) = upstream(200).await;
    let stack = seawall::stack()
        .rate_limit(|limit| limit.per_minute(100).burst(5).fail_fast())
        .route("/search", |limit| limit.per_minute(10).burst(2).fail_fast())
        .build()
        .unwrap();
    let client = stack.hyper_client::<Empty<Bytes>>();
    for path in ["/search", "/search/books"] {
        let response = client
            .clone()
            .oneshot(get(&upstream.url(path)))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    // The route's burst of 2 is spent: the third search waits 6 s (10 a minute), so
    // fail-fast refuses it.
    let error = client
        .clone()
        .oneshot(get(&upstream.url("/search?q=rust")))
        .await
        .unwrap_err();
    let Some(Rejected::Limited { retry_after }) = rejected(&error) else {
        panic!("expected the route's refusal, got {error:?}");
    };
    assert!(
        *retry_after > Duration::from_millis(5_900) && *retry_after <= Duration::from_secs(6),
        "{retry_after:?}"
    );
    // The rest, `/searching` included, go by the stack's quota.
    for path in ["/items", "/searching", "/items/7"] {
        let response = client
            .clone()
            .oneshot(get(&upstream.url(path)))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    let limits = stack.rate_limit_layer();
    let search = limits.route("/search").unwrap().handle().stats();
    assert_eq!((search.admitted, search.rejected_limited), (2, 1));
    assert_eq!(stack.rate_limit().stats().admitted, 3);
    // Both limiters are in the stack's one exposition, the route's labelled with its prefix,
    // each family once.
    let text = stack.metrics().encode();
    for line in [
        "seawall_rate_limit_admitted_total 3\n",
        "seawall_rate_limit_admitted_total{route=\"/search\"} 2\n",
        "seawall_rate_limit_rejected_total{route=\"/search\",reason=\"limited\"} 1\n",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    assert_eq!(
        text.matches("# TYPE seawall_rate_limit_admitted counter")
            .count(),
        1,
        "{text}"
    );
    if let Err(error) = exposition_check::check_openmetrics(&text) {
        panic!("invalid OpenMetrics: {error}\n{text}");
    }
    let prometheus_text = stack.metrics().encode_prometheus_text();
    if let Err(error) = exposition_check::check_prometheus_text(&prometheus_text) {
        panic!("invalid Prometheus text: {error}\n{prometheus_text}");
    }
    // The report's totals are every limiter's.
    let report = stack.report();
    let limits = report.rate_limit.expect("the limiters' figures");
    assert_eq!((limits.admitted, limits.rejected), (5, 1));
}

#[tokio::test]
async fn a_fallback_serves_a_canned_answer_while_the_breaker_is_open() {
    let (failing, calls) = upstream(503).await;
    let stack = seawall::stack()
        .circuit_breaker(|breaker| {
            breaker
                .consecutive_failures(2)
                .no_failure_rate()
                .open_duration(Duration::from_secs(60))
        })
        .retry(|retry| retry.max_attempts(1))
        .build()
        .unwrap();
    // Prices while the breaker is open: yesterday's list, marked as such; other errors pass.
    let fallback = FallbackLayer::new(|parts: &http::request::Parts, error| {
        if parts.uri.path() == "/prices" && circuit_open(&error).is_some() {
            Ok(http::Response::builder()
                .header("x-fallback", "circuit-open")
                .body(Full::new(Bytes::from_static(b"[yesterday]")))
                .unwrap())
        } else {
            Err(error)
        }
    });
    let client = fallback.layer(stack.hyper_client::<Empty<Bytes>>());
    for _ in 0..2 {
        let response = client
            .clone()
            .oneshot(get(&failing.url("/prices")))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().get("x-fallback").is_none());
    }
    assert_eq!(stack.circuit_breaker().stats()[0].state, State::Open);

    let response = client
        .clone()
        .oneshot(get(&failing.url("/prices")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-fallback"], "circuit-open");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "[yesterday]");
    // Another route has no fallback: the refusal comes through.
    let error = client
        .clone()
        .oneshot(get(&failing.url("/orders")))
        .await
        .unwrap_err();
    assert!(circuit_open(&error).is_some());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn the_builder_names_what_it_cannot_build() {
    // `key_by` after an adjustment it would have to drop.
    let error = seawall::stack()
        .rate_limit(|limit| limit.per_second(5))
        .key_by(tenant)
        .build()
        .unwrap_err();
    assert_eq!(error.field(), "stack");
    assert!(error.to_string().contains("key_by"), "{error}");
    // A route is a path prefix, given once.
    let error = seawall::stack()
        .route("search", |limit| limit.per_second(1))
        .build()
        .unwrap_err();
    assert_eq!(error.field(), "route");
    let error = seawall::stack()
        .route("/search", |limit| limit.per_second(1))
        .route("/search", |limit| limit.per_second(2))
        .build()
        .unwrap_err();
    assert_eq!(error.field(), "route");
    // A route's own quota is validated like the stack's.
    let error = seawall::stack()
        .route("/search", |limit| limit)
        .build()
        .unwrap_err();
    assert_eq!(error.field(), "quota");
}
