//! The standard stack's report and exposition carry every layer, each attempt included,
//! against a real hyper server on 127.0.0.1.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use seawall_examples::{Upstream, respond};
use tower::ServiceExt;

#[tokio::test]
async fn the_stack_reports_every_layer_and_each_attempt() {
    // The second call answers 503 (retried); the others 200 with the quota left.
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    let upstream = Upstream::start(move |_request| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 1 {
                respond(503, &[], "busy")
            } else {
                respond(
                    200,
                    &[("x-ratelimit-limit", "60"), ("x-ratelimit-remaining", "57")],
                    "ok",
                )
            }
        }
    })
    .await
    .expect("upstream");
    let stack = seawall::stack()
        .retry(|retry| retry.fixed_backoff(std::time::Duration::from_millis(1)))
        .build()
        .expect("valid config");
    let client = stack.hyper_client::<Empty<Bytes>>();
    for _ in 0..3 {
        let request = Request::get(upstream.url("/items"))
            .body(Empty::new())
            .expect("valid request");
        let response = client.clone().oneshot(request).await.expect("a response");
        assert_eq!(response.status(), 200);
        response.into_body().collect().await.expect("a body");
    }

    let report = stack.report();
    assert_eq!(
        (report.requests.total, report.requests.success_rate),
        (3, 1.0)
    );
    assert_eq!(report.hosts.len(), 1);
    let host = &report.hosts[0];
    assert_eq!(
        (host.address.as_str(), host.attempts, host.errors),
        ("127.0.0.1", 4, 1)
    );
    assert_eq!(
        (host.quota_limit, host.quota_remaining),
        (Some(60), Some(57))
    );
    assert_eq!(
        report.retry.as_ref().map(|r| (r.attempts, r.retries)),
        Some((4, 1))
    );
    assert_eq!(report.rate_limit.as_ref().map(|l| l.admitted), Some(4));
    assert_eq!(report.recent_failures.len(), 1);
    assert_eq!(
        (
            report.recent_failures[0].kind,
            report.recent_failures[0].status
        ),
        ("server_error", Some(503))
    );
    let text = stack.metrics().encode();
    assert!(text.contains(r#"http_client_request_duration_seconds_count{http_request_method="GET",http_response_status_code="503",error_type="503",server_address="127.0.0.1""#), "{text}");
}
