//! Per-attempt figures (OpenTelemetry's HTTP client metrics), the logical request's figures
//! around them, the upstream quota gauges and the bound on hosts, on paused time.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "helpers of a test: a failure should stop it"
)]

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::FutureExt;
use http::{Request, Response};
use seawall_core::QueueWait;
use seawall_metrics::{LatencyClock, MetricsLayer};
use tower::{Layer, Service, ServiceExt, service_fn};

/// The scripted upstream: the path says what to do, after how many milliseconds.
fn upstream(
    flaky: Arc<AtomicU32>,
) -> impl Service<
    Request<()>,
    Response = Response<String>,
    Error = io::Error,
    Future = impl Future<Output = Result<Response<String>, io::Error>> + Send,
> + Clone {
    service_fn(move |request: Request<()>| {
        let flaky = Arc::clone(&flaky);
        async move {
            let path = request.uri().path().to_owned();
            let (kind, millis) = path.trim_start_matches('/').split_once('/').unwrap();
            tokio::time::sleep(Duration::from_millis(millis.parse().unwrap())).await;
            let status = match kind {
                "ok" => 200,
                "flaky" if flaky.fetch_add(1, Ordering::SeqCst) == 0 => 503,
                "flaky" => 200,
                "quota" => {
                    return Ok(Response::builder()
                        .header("x-ratelimit-limit", "100")
                        .header("x-ratelimit-remaining", "97")
                        .body(String::new())
                        .unwrap());
                }
                "draft" => {
                    return Ok(Response::builder()
                        .header("ratelimit", "limit=50, remaining=7, reset=30")
                        .body(String::new())
                        .unwrap());
                }
                "timeout" => {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
                }
                "hang" => std::future::pending().await,
                other => panic!("unknown script step {other}"),
            };
            Ok(Response::builder()
                .status(status)
                .body(String::new())
                .unwrap())
        }
    })
}

/// A stand-in for the layers between the logical request and its attempts: it resends once
/// after a 503, and reports 30 ms of queue wait on the answer, as a rate limiter would.
fn resend_once<S>(
    attempts: S,
) -> impl Service<Request<()>, Response = Response<String>, Error = io::Error> + Clone
where
    S: Service<Request<()>, Response = Response<String>, Error = io::Error> + Clone + Send,
    S::Future: Send,
{
    service_fn(move |request: Request<()>| {
        let attempts = attempts.clone();
        async move {
            let copy = Request::builder()
                .method(request.method().clone())
                .uri(request.uri().clone())
                .body(())
                .unwrap();
            let mut response = attempts.clone().oneshot(request).await?;
            if response.status() == 503 {
                response = attempts.oneshot(copy).await?;
            }
            response
                .extensions_mut()
                .insert(QueueWait(Duration::from_millis(30)));
            Ok(response)
        }
    })
}

fn get(url: &str) -> Request<()> {
    Request::get(url).body(()).unwrap()
}

fn assert_lines(text: &str, lines: &[&str]) {
    for line in lines {
        assert!(text.contains(line), "missing `{line}` in\n{text}");
    }
}

#[tokio::test(start_paused = true)]
async fn each_attempt_is_one_sample_under_opentelemetry_names_and_attributes() {
    let metrics = MetricsLayer::builder()
        .clock(LatencyClock::Tokio)
        .build()
        .unwrap();
    let attempts = metrics
        .attempts()
        .layer(upstream(Arc::new(AtomicU32::new(0))));
    let client = metrics.layer(resend_once(attempts.clone()));

    // One logical request that took two attempts (503 then 200, 20 ms each).
    let response = client
        .clone()
        .oneshot(get("http://a.test/flaky/20"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    drop(response);
    // One that succeeded at once, over HTTPS on a port of its own.
    drop(
        client
            .clone()
            .oneshot(get("https://user:secret@b.test:8443/ok/10"))
            .await
            .unwrap(),
    );
    // One attempt that failed without a response, and one cancelled while in flight.
    assert!(
        attempts
            .clone()
            .oneshot(get("http://a.test/timeout/5"))
            .await
            .is_err()
    );
    let mut hanging = Box::pin(attempts.clone().oneshot(get("http://a.test/hang/0")));
    assert!((&mut hanging).now_or_never().is_none());
    let during = metrics.encode();
    drop(hanging);
    tokio::time::advance(Duration::from_millis(5)).await;

    assert_lines(
        &during,
        &[
            r#"http_client_active_requests{server_address="a.test",server_port="80",url_scheme="http"} 1"#,
        ],
    );
    let text = metrics.encode();
    assert_lines(
        &text,
        &[
            "# TYPE http_client_request_duration_seconds histogram",
            "# UNIT http_client_request_duration_seconds seconds",
            r#"http_client_request_duration_seconds_count{http_request_method="GET",http_response_status_code="503",error_type="503",server_address="a.test",server_port="80",url_scheme="http"} 1"#,
            r#"http_client_request_duration_seconds_sum{http_request_method="GET",http_response_status_code="503",error_type="503",server_address="a.test",server_port="80",url_scheme="http"} 0.02"#,
            r#"http_client_request_duration_seconds_bucket{le="0.025",http_request_method="GET",http_response_status_code="200",server_address="a.test",server_port="80",url_scheme="http"} 1"#,
            r#"http_client_request_duration_seconds_bucket{le="0.01",http_request_method="GET",http_response_status_code="200",server_address="a.test",server_port="80",url_scheme="http"} 0"#,
            r#"http_client_request_duration_seconds_count{http_request_method="GET",http_response_status_code="200",server_address="b.test",server_port="8443",url_scheme="https"} 1"#,
            r#"http_client_request_duration_seconds_sum{http_request_method="GET",http_response_status_code="200",server_address="b.test",server_port="8443",url_scheme="https"} 0.01"#,
            r#"http_client_request_duration_seconds_count{http_request_method="GET",error_type="timeout",server_address="a.test",server_port="80",url_scheme="http"} 1"#,
            r#"http_client_request_duration_seconds_count{http_request_method="GET",error_type="cancelled",server_address="a.test",server_port="80",url_scheme="http"} 1"#,
            r#"http_client_active_requests{server_address="a.test",server_port="80",url_scheme="http"} 0"#,
            r#"http_client_active_requests{server_address="b.test",server_port="8443",url_scheme="https"} 0"#,
            // The logical request: what the caller waited for, both attempts included.
            r#"seawall_http_client_request_duration_seconds_sum{http_request_method="GET",http_response_status_class="2xx"} 0.05"#,
            r#"seawall_http_client_request_duration_seconds_count{http_request_method="GET",http_response_status_class="2xx"} 2"#,
            r#"seawall_http_client_requests_total{http_request_method="GET",http_response_status_class="2xx",outcome="success"} 2"#,
            "# UNIT seawall_http_client_queue_wait_seconds seconds",
            "seawall_http_client_queue_wait_seconds_sum 0.06\n",
            "seawall_http_client_queue_wait_seconds_count 2\n",
            r#"seawall_http_client_queue_wait_seconds_bucket{le="0.025"} 0"#,
            r#"seawall_http_client_queue_wait_seconds_bucket{le="0.05"} 2"#,
            "seawall_http_client_requests_in_flight 0\n",
        ],
    );
    // Credentials never reach a label, and no quota was stated.
    assert!(!text.contains("secret") && !text.contains("user"), "{text}");
    assert!(!text.contains("seawall_upstream_quota"), "{text}");

    // The same run, as one report.
    let report = metrics.report();
    assert_eq!(report.requests.total, 2);
    assert_eq!(report.requests.mean, Duration::from_millis(25));
    assert_eq!(report.queue_wait.count, 2);
    assert_eq!(report.queue_wait.mean, Duration::from_millis(30));
    type HostRow<'a> = (&'a str, Option<u16>, &'a str, u64, u64, i64);
    let hosts: Vec<HostRow<'_>> = report
        .hosts
        .iter()
        .map(|h| {
            (
                h.address.as_str(),
                h.port,
                h.scheme,
                h.attempts,
                h.errors,
                h.active,
            )
        })
        .collect();
    assert_eq!(
        hosts,
        [
            ("a.test", Some(80), "http", 4, 3, 0),
            ("b.test", Some(8443), "https", 1, 0, 0)
        ]
    );
    // A cancel at 0 and a timeout after 5 ms in the first bucket, the 503 and the 200 after
    // 20 ms in (10 ms, 25 ms]: rank 3.8 of 4 is 0.9 of the way through that bucket.
    assert_eq!(report.hosts[0].p95, Duration::from_micros(23_500));
    let failures: Vec<(&str, &str, Option<u16>)> = report
        .recent_failures
        .iter()
        .map(|f| (f.host.as_str(), f.kind, f.status))
        .collect();
    assert_eq!(
        failures,
        [
            ("a.test", "server_error", Some(503)),
            ("a.test", "timeout", None),
            ("a.test", "cancelled", None)
        ]
    );
    assert_eq!(
        (report.retry, report.rate_limit, report.circuit_breaker),
        (None, None, None)
    );
}

#[tokio::test(start_paused = true)]
async fn the_upstreams_stated_quota_is_a_gauge_per_host() {
    let metrics = MetricsLayer::builder().build().unwrap();
    let attempts = metrics
        .attempts()
        .layer(upstream(Arc::new(AtomicU32::new(0))));
    for url in ["http://a.test/quota/0", "http://c.test:8080/draft/0"] {
        attempts.clone().oneshot(get(url)).await.unwrap();
    }
    assert_lines(
        &metrics.encode(),
        &[
            r#"seawall_upstream_quota_limit{server_address="a.test",server_port="80",url_scheme="http"} 100"#,
            r#"seawall_upstream_quota_remaining{server_address="a.test",server_port="80",url_scheme="http"} 97"#,
            r#"seawall_upstream_quota_limit{server_address="c.test",server_port="8080",url_scheme="http"} 50"#,
            r#"seawall_upstream_quota_remaining{server_address="c.test",server_port="8080",url_scheme="http"} 7"#,
        ],
    );
}

#[tokio::test(start_paused = true)]
async fn a_hundred_thousand_hosts_keep_the_scrape_within_the_bound() {
    let metrics = MetricsLayer::builder().build().unwrap();
    let mut attempts = metrics
        .attempts()
        .layer(upstream(Arc::new(AtomicU32::new(0))));
    for host in 0..100_000 {
        let request = get(&format!("http://host-{host}.test/ok/0"));
        attempts.ready().await.unwrap().call(request).await.unwrap();
    }
    let text = metrics.encode();
    let series: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("http_client_request_duration_seconds_count"))
        .collect();
    // The default bound of 100 hosts, and `_OTHER` for the 99,900 others.
    assert_eq!(series.len(), 101);
    assert!(series.contains(
        &r#"http_client_request_duration_seconds_count{http_request_method="GET",http_response_status_code="200",server_address="_OTHER",url_scheme="http"} 99900"#
    ));
    assert_eq!(
        text.lines()
            .filter(|line| line.starts_with("http_client_active_requests{"))
            .count(),
        101
    );
}

#[test]
fn the_bound_on_hosts_is_validated() {
    let error = MetricsLayer::builder().max_hosts(0).build().unwrap_err();
    assert!(error.to_string().contains("max_hosts"), "{error}");
    assert!(MetricsLayer::builder().max_hosts(10_001).build().is_err());
    assert!(MetricsLayer::builder().max_hosts(10_000).build().is_ok());
}

/// The number after `prefix` (a series' whole name and labels) in an exposition.
fn sample(text: &str, prefix: &str) -> f64 {
    let line = text
        .lines()
        .find(|line| line.starts_with(prefix))
        .unwrap_or_else(|| panic!("missing `{prefix}` in\n{text}"));
    line[prefix.len()..].trim().parse().unwrap()
}

/// On the counter clock (the default), a request whose only attempt is called in its `call`
/// and answers in its first poll is timed by the attempt's two readings: the two latencies
/// are the same number, not two readings apart.
#[tokio::test]
async fn a_request_and_its_only_attempt_share_their_readings() {
    let metrics = MetricsLayer::builder().build().unwrap();
    let answer_at_once =
        service_fn(|_: Request<()>| async { Ok::<_, io::Error>(Response::new(String::new())) });
    let client = metrics.layer(metrics.attempts().layer(answer_at_once));
    let response = client.oneshot(get("http://a.test/ok")).await.unwrap();
    assert_eq!(response.status(), 200);
    drop(response);

    let text = metrics.encode_prometheus_text();
    let request = sample(
        &text,
        r#"seawall_http_client_request_duration_seconds_sum{http_request_method="GET",http_response_status_class="2xx"}"#,
    );
    let attempt = sample(
        &text,
        r#"http_client_request_duration_seconds_sum{http_request_method="GET",http_response_status_code="200",server_address="a.test",server_port="80",url_scheme="http"}"#,
    );
    assert_eq!(request, attempt);
}

#[tokio::test(start_paused = true)]
async fn one_host_spelled_three_ways_is_one_series() {
    let metrics = MetricsLayer::builder().build().unwrap();
    let mut attempts = metrics
        .attempts()
        .layer(upstream(Arc::new(AtomicU32::new(0))));
    // As a user's code or a redirect spells it: the default port written out, capitals.
    for url in [
        "http://api.test/ok/0",
        "http://api.test:80/ok/0",
        "http://API.test/ok/0",
        "http://api.test:8080/ok/0",
    ] {
        attempts
            .ready()
            .await
            .unwrap()
            .call(get(url))
            .await
            .unwrap();
    }
    let text = metrics.encode();
    let mut counts: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("http_client_request_duration_seconds_count"))
        .collect();
    counts.sort_unstable();
    assert_eq!(
        counts,
        [
            r#"http_client_request_duration_seconds_count{http_request_method="GET",http_response_status_code="200",server_address="api.test",server_port="80",url_scheme="http"} 3"#,
            r#"http_client_request_duration_seconds_count{http_request_method="GET",http_response_status_code="200",server_address="api.test",server_port="8080",url_scheme="http"} 1"#,
        ],
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_server_answering_every_status_code_keeps_a_bounded_number_of_series() {
    let metrics = MetricsLayer::builder().build().unwrap();
    // A server that answers with the code the path names, as a hostile or broken one might.
    let mut attempts = metrics
        .attempts()
        .layer(service_fn(|request: Request<()>| async move {
            let code: u16 = request.uri().path()[1..].parse().unwrap();
            Ok::<_, io::Error>(Response::builder().status(code).body(()).unwrap())
        }));
    for code in 200..=599 {
        let request = get(&format!("http://api.test/{code}"));
        attempts.ready().await.unwrap().call(request).await.unwrap();
    }
    let text = metrics.encode();
    let counts: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("http_client_request_duration_seconds_count"))
        .collect();
    // The first 32 codes have a series each; the other 368 are counted as `_OTHER`, the 168
    // below 400 as successes, the 200 from 400 on as errors.
    assert_eq!(counts.len(), 34, "{text}");
    assert!(counts.contains(
        &r#"http_client_request_duration_seconds_count{http_request_method="GET",http_response_status_code="231",server_address="api.test",server_port="80",url_scheme="http"} 1"#
    ));
    assert!(counts.contains(
        &r#"http_client_request_duration_seconds_count{http_request_method="GET",http_response_status_code="_OTHER",server_address="api.test",server_port="80",url_scheme="http"} 168"#
    ), "{text}");
    assert!(counts.contains(
        &r#"http_client_request_duration_seconds_count{http_request_method="GET",http_response_status_code="_OTHER",error_type="_OTHER",server_address="api.test",server_port="80",url_scheme="http"} 200"#
    ), "{text}");
}
