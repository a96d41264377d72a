//! The exposition of the whole stack (metrics, retry, breaker, rate limiter over hyper-util's
//! client, against a real hyper server on 127.0.0.1) passes `promtool check metrics`, which
//! lints the Prometheus text format (the OpenMetrics form differs only in how counter
//! families are named and in its `# EOF`).
//!
//! `promtool` comes with Debian's `prometheus` package; `.ci/run` installs it when missing.

use std::io::Write;
use std::process::{Command, Stdio};
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
async fn the_full_stack_exposition_passes_promtool() {
    // Every third request fails with 503, so every figure has something to show.
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    let upstream = Upstream::start(move |_request| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if n % 3 == 2 {
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
        .build()
        .expect("valid config");
    let breaker = CircuitBreakerLayer::builder()
        .per_host()
        .build()
        .expect("valid config");
    let limit = RateLimitLayer::builder()
        .per_second(100)
        .build()
        .expect("valid config");
    metrics.include(retry.handle());
    metrics.include(breaker.handle());
    metrics.include(limit.handle());
    let client = Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Empty<Bytes>>>();
    let stack = ServiceBuilder::new()
        .layer(metrics.clone())
        .layer(retry)
        .layer(breaker)
        .layer(limit)
        .service(client);

    for _ in 0..20 {
        let request = Request::get(upstream.url("/items"))
            .body(Empty::new())
            .expect("valid request");
        let response = stack.clone().oneshot(request).await.expect("a response");
        response.into_body().collect().await.expect("a body");
    }
    let text = metrics.encode();
    for name in [
        "http_client_request_duration_seconds_bucket",
        "seawall_retry_retries_total{reason=\"server_error\"}",
        "seawall_circuit_breaker_state{key=\"http://127.0.0.1",
        "seawall_rate_limit_admitted_total",
    ] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package `prometheus`; `.ci/run` installs it)");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(metrics.encode_prometheus_text().as_bytes())
        .expect("write exposition");
    let output = promtool.wait_with_output().expect("promtool ran");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "promtool failed:\n{report}\n{text}"
    );
    assert_eq!(report.trim(), "", "promtool warnings:\n{report}");
}
