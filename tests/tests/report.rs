//! One report of every layer (metrics, retry, circuit breaker, rate limiter, each attempt)
//! over hyper-util's client against a real hyper server on 127.0.0.1, with exact values for
//! a scripted run; and the same report's table.

#[path = "support/every_layer.rs"]
mod every_layer;

use every_layer::every_layer;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use seawall_circuit_breaker::CircuitBreakerLayer;
use seawall_examples::{Upstream, respond};
use seawall_metrics::MetricsLayer;
use seawall_rate_limit::RateLimitLayer;
use seawall_retry::{ReplayBody, RetryLayer};
use tower::{ServiceBuilder, ServiceExt};

#[tokio::test(start_paused = true)]
async fn one_report_holds_every_layers_figures_with_exact_values() {
    // Calls 2 and 5 (the third request's first attempt and the fifth's) answer 503, with the
    // quota the upstream has left; the others 200.
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    let upstream = Upstream::start(move |_request| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let left = (100 - n).to_string();
            let headers = [
                ("x-ratelimit-limit", "100"),
                ("x-ratelimit-remaining", left.as_str()),
            ];
            if n == 2 || n == 5 {
                respond(503, &headers, "busy")
            } else {
                respond(200, &headers, "ok")
            }
        }
    })
    .await
    .expect("upstream");

    let metrics = MetricsLayer::builder().build().expect("valid config");
    let limit = RateLimitLayer::builder()
        .per_second(100)
        .build()
        .expect("valid config");
    let stack = every_layer(&metrics, limit);

    for _ in 0..6 {
        let request = Request::get(upstream.url("/items"))
            .body(Empty::new())
            .expect("valid request");
        let response = stack.clone().oneshot(request).await.expect("a response");
        assert_eq!(response.status(), 200);
        response.into_body().collect().await.expect("a body");
    }

    let report = metrics.report();
    assert_eq!(report.requests.total, 6);
    assert_eq!(report.requests.success_rate, 1.0);
    assert_eq!(report.requests.in_flight, 0);
    assert_eq!(report.requests.requests_per_minute, 6);
    assert_eq!(report.queue_wait.count, 6);
    // Two of the six were resent once.
    assert_eq!((report.attempts.requests, report.attempts.attempts), (6, 8));
    assert_eq!(report.attempts.mean, 8.0 / 6.0);

    assert_eq!(report.hosts.len(), 1, "{report:#?}");
    let host = &report.hosts[0];
    let port = upstream
        .url("/")
        .parse::<http::Uri>()
        .expect("a URL")
        .port_u16();
    assert_eq!(
        (host.address.as_str(), host.port, host.scheme),
        ("127.0.0.1", port, "http")
    );
    assert_eq!((host.attempts, host.errors, host.active), (8, 2, 0));
    assert_eq!(
        (host.quota_limit, host.quota_remaining),
        (Some(100), Some(93))
    );

    let retry = report.retry.as_ref().expect("the retry layer is included");
    assert_eq!(
        (
            retry.requests,
            retry.attempts,
            retry.retries,
            retry.budget_exhausted,
            retry.gave_up
        ),
        (6, 8, 2, 0, 0)
    );
    assert!(retry.budget_left.is_some());

    let limit = report.rate_limit.as_ref().expect("the limiter is included");
    assert_eq!(
        (limit.admitted, limit.rejected, limit.queue_depth),
        (8, 0, 0)
    );

    let breaker = report
        .circuit_breaker
        .as_ref()
        .expect("the breaker is included");
    assert_eq!(
        (
            breaker.open,
            breaker.half_open,
            breaker.trips,
            breaker.transitions
        ),
        (0, 0, 0, 0)
    );
    assert_eq!(breaker.keys.len(), 1);
    let key = &breaker.keys[0];
    assert_eq!(
        (
            key.key.as_str(),
            key.state.as_str(),
            key.trips,
            key.failures,
            key.rejected
        ),
        (
            format!("http://127.0.0.1:{}", port.expect("a port")).as_str(),
            "closed",
            0,
            2,
            0
        )
    );

    let failures: Vec<(&str, &str, Option<u16>)> = report
        .recent_failures
        .iter()
        .map(|f| (f.host.as_str(), f.kind, f.status))
        .collect();
    assert_eq!(
        failures,
        [
            ("127.0.0.1", "server_error", Some(503)),
            ("127.0.0.1", "server_error", Some(503))
        ]
    );

    let table = report.to_string();
    for line in [
        "requests    6 done, 100.0% ok, 0 in flight, 6/min",
        "retry       8 attempts, 2 retries, 0 budget exhausted, 0 gave up, budget left ",
        "rate limit  8 admitted, 7 waited, 0 rejected, queue 0, 0 paused",
        "breakers    0 open, 0 half-open, 0 trips, 0 transitions, 0 rejected",
        "attempts    1.33 per request (8 over 6)",
        "host                             attempts  errors active      p95  quota left",
        "closed     0           0        2        0",
        "recent failures (newest last)",
    ] {
        assert!(table.contains(line), "missing `{line}` in\n{table}");
    }
    assert!(table.contains(&format!("http://127.0.0.1:{}", port.expect("a port"))));
    assert!(table.contains("       8       2      0"), "{table}");
    assert!(table.contains("      93/100\n"), "{table}");
}

/// A port nothing listens on.
fn closed_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
}

#[tokio::test(start_paused = true)]
async fn attempts_per_logical_request_count_the_failed_ones() {
    // The first call answers 503, every other 200.
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    let upstream = Upstream::start(move |_request| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                respond(503, &[], "busy")
            } else {
                respond(200, &[], "ok")
            }
        }
    })
    .await
    .expect("upstream");

    let metrics = MetricsLayer::builder().build().expect("valid config");
    let retry = RetryLayer::builder()
        .fixed_backoff(Duration::from_millis(5))
        .max_attempts(3)
        .build()
        .expect("valid config");
    let client = Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Empty<Bytes>>>();
    let stack = ServiceBuilder::new()
        .layer(metrics.clone())
        .layer(retry)
        .service(client);

    // 503 then 200: two attempts.
    let request = Request::get(upstream.url("/items"))
        .body(Empty::new())
        .expect("valid request");
    let response = stack.clone().oneshot(request).await.expect("a response");
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.expect("a body");
    // 200 at once: one attempt.
    let request = Request::get(upstream.url("/items"))
        .body(Empty::new())
        .expect("valid request");
    let response = stack.clone().oneshot(request).await.expect("a response");
    response.into_body().collect().await.expect("a body");
    // Refused three times: an error that made three attempts.
    let request = Request::get(format!("http://{}/items", closed_port()))
        .body(Empty::new())
        .expect("valid request");
    let error = stack.clone().oneshot(request).await.expect_err("refused");
    assert_eq!(error.attempts(), 3);

    let report = metrics.report();
    assert_eq!((report.attempts.requests, report.attempts.attempts), (3, 6));
    assert_eq!(report.attempts.mean, 2.0);
    assert!(
        report
            .to_string()
            .contains("attempts    2.00 per request (6 over 3)\n"),
        "{report}"
    );

    let text = metrics.encode();
    let family: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("seawall_http_client_request_attempts"))
        .collect();
    assert_eq!(
        family,
        [
            "# HELP seawall_http_client_request_attempts Attempts per logical request that ended in a response or an error, the first included.",
            "# TYPE seawall_http_client_request_attempts histogram",
            "seawall_http_client_request_attempts_sum 6.0",
            "seawall_http_client_request_attempts_count 3",
            "seawall_http_client_request_attempts_bucket{le=\"1.0\"} 1",
            "seawall_http_client_request_attempts_bucket{le=\"2.0\"} 2",
            "seawall_http_client_request_attempts_bucket{le=\"3.0\"} 3",
            "seawall_http_client_request_attempts_bucket{le=\"4.0\"} 3",
            "seawall_http_client_request_attempts_bucket{le=\"5.0\"} 3",
            "seawall_http_client_request_attempts_bucket{le=\"10.0\"} 3",
            "seawall_http_client_request_attempts_bucket{le=\"+Inf\"} 3",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn the_report_shows_each_hosts_tokens_and_queue() {
    let upstream = Upstream::start(|_request| async { respond(200, &[], "ok") })
        .await
        .expect("upstream");
    let metrics = MetricsLayer::builder().build().expect("valid config");
    // One token a second, five at once: three requests leave two.
    let limit = RateLimitLayer::builder()
        .per_minute(60)
        .burst(5)
        .per_host()
        .build()
        .expect("valid config");
    metrics.include(limit.handle());
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let stack = ServiceBuilder::new()
        .layer(metrics.clone())
        .layer(limit)
        .service(client);
    for _ in 0..3 {
        let request = Request::get(upstream.url("/items"))
            .body(Empty::new())
            .expect("valid request");
        let response = stack.clone().oneshot(request).await.expect("a response");
        response.into_body().collect().await.expect("a body");
    }

    let report = metrics.report();
    let key = format!(
        "http://127.0.0.1:{}",
        upstream
            .url("/")
            .parse::<http::Uri>()
            .expect("a URL")
            .port_u16()
            .expect("a port")
    );
    let limit = report.rate_limit.as_ref().expect("the limiter is included");
    assert_eq!(
        limit.per_key,
        [(
            key.clone(),
            vec![("queue_depth", 0.0), ("tokens_available", 2.0)]
        )]
    );
    let table = report.to_string();
    assert!(
        table.contains(&format!(
            "rate limit key                      tokens       queue\n{key:<32}         2           0\n"
        )),
        "{table}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_report_shows_each_hosts_breaker_trips() {
    // Every answer is a 503: the breaker of the host trips on its second failure.
    let upstream = Upstream::start(|_request| async { respond(503, &[], "busy") })
        .await
        .expect("upstream");
    let metrics = MetricsLayer::builder().build().expect("valid config");
    let breaker = CircuitBreakerLayer::builder()
        .per_host()
        .consecutive_failures(2)
        .open_duration(Duration::from_secs(5))
        .build()
        .expect("valid config");
    let handle = breaker.handle();
    metrics.include(breaker.handle());
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let stack = ServiceBuilder::new()
        .layer(metrics.clone())
        .layer(breaker)
        .service(client);
    let send = || {
        let request = Request::get(upstream.url("/items"))
            .body(Empty::new())
            .expect("valid request");
        stack.clone().oneshot(request)
    };
    // Two failures trip it; the third call is refused.
    for _ in 0..2 {
        let response = send().await.expect("a response");
        assert_eq!(response.status(), 503);
        response.into_body().collect().await.expect("a body");
    }
    assert!(send().await.is_err());
    // After the open time a probe fails: open again, a second trip.
    tokio::time::advance(Duration::from_secs(5)).await;
    let response = send().await.expect("the probe is let through");
    assert_eq!(response.status(), 503);
    response.into_body().collect().await.expect("a body");

    let key = format!(
        "http://127.0.0.1:{}",
        upstream
            .url("/")
            .parse::<http::Uri>()
            .expect("a URL")
            .port_u16()
            .expect("a port")
    );
    assert_eq!(
        handle.stats().iter().map(|s| s.trips).collect::<Vec<_>>(),
        [2]
    );
    let report = metrics.report();
    let summary = report
        .circuit_breaker
        .as_ref()
        .expect("the breaker is included");
    assert_eq!(
        (
            summary.open,
            summary.trips,
            summary.transitions,
            summary.rejected
        ),
        (1, 2, 3, 1)
    );
    assert_eq!(summary.keys.len(), 1);
    let row = &summary.keys[0];
    assert_eq!(
        (
            row.key.as_str(),
            row.state.as_str(),
            row.trips,
            row.transitions,
            row.failures,
            row.rejected
        ),
        (key.as_str(), "open", 2, 3, 3, 1)
    );
    let table = report.to_string();
    for line in [
        "breakers    1 open, 0 half-open, 2 trips, 3 transitions, 1 rejected\n".to_owned(),
        format!("{key:<32}      open     2           3        3        1\n"),
    ] {
        assert!(table.contains(&line), "missing `{line}` in\n{table}");
    }
}

/// A user with one breaker per dependency, neither keyed, in one exposition: the two report
/// the same series, which a scrape would partly refuse. Each series is written once, and
/// each breaker included with a label of its own gives series of its own.
#[test]
fn two_breakers_that_are_not_keyed_give_one_series_each_or_one_labelled_each() {
    let payments = CircuitBreakerLayer::builder().build().unwrap();
    let search = CircuitBreakerLayer::builder().build().unwrap();
    search.handle().force_open(&());
    let state_lines = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|line| line.starts_with("seawall_circuit_breaker_state{"))
            .map(str::to_owned)
            .collect()
    };

    let metrics = MetricsLayer::builder().build().unwrap();
    metrics.include(payments.handle());
    metrics.include(search.handle());
    let text = metrics.encode();
    let lines = state_lines(&text);
    let mut unique = lines.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(lines.len(), unique.len(), "no series twice:\n{text}");
    assert!(
        lines.contains(&r#"seawall_circuit_breaker_state{state="closed"} 1.0"#.to_owned()),
        "the first source's:\n{text}"
    );

    let metrics = MetricsLayer::builder().build().unwrap();
    metrics.include(seawall_core::Labelled::new(
        "breaker",
        "payments",
        payments.handle(),
    ));
    metrics.include(seawall_core::Labelled::new(
        "breaker",
        "search",
        search.handle(),
    ));
    let text = metrics.encode();
    let lines = state_lines(&text);
    for line in [
        r#"seawall_circuit_breaker_state{breaker="payments",state="closed"} 1.0"#,
        r#"seawall_circuit_breaker_state{breaker="search",state="forced_open"} 1.0"#,
    ] {
        assert!(lines.contains(&line.to_owned()), "{line} in:\n{text}");
    }
}
