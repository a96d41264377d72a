//! The metrics layer over in-process upstreams, on paused time.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "helpers of a test: a failure should stop it"
)]

use std::io;
use std::time::Duration;

use futures::FutureExt;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use seawall_metrics::{DEFAULT_BUCKETS, LatencyClock, MetricsBuilder, MetricsLayer};
use tower::{Layer, ServiceExt, service_fn};

/// What the scripted upstream does with a request: the path says.
async fn upstream(request: Request<()>) -> Result<Response<Full<bytes::Bytes>>, io::Error> {
    let path = request.uri().path().to_owned();
    let (kind, millis) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or(("ok", "0"));
    tokio::time::sleep(Duration::from_millis(millis.parse().unwrap())).await;
    let response = |status: u16| {
        Response::builder()
            .status(status)
            .body(Full::new(bytes::Bytes::from_static(b"body")))
            .unwrap()
    };
    match kind {
        "ok" => Ok(response(200)),
        "missing" => Ok(response(404)),
        "fail" => Ok(response(503)),
        "timeout" => Err(io::Error::new(io::ErrorKind::TimedOut, "attempt timed out")),
        "hang" => std::future::pending().await,
        other => panic!("unknown script step {other}"),
    }
}

/// A metrics layer timed by tokio's clock, which these tests pause and advance.
fn paused_clock() -> MetricsBuilder {
    MetricsLayer::builder().clock(LatencyClock::Tokio)
}

fn request(method: Method, path: &str) -> Request<()> {
    Request::builder()
        .method(method)
        .uri(format!("http://api.test{path}"))
        .body(())
        .unwrap()
}

fn count(snapshot: &seawall_metrics::Snapshot, outcome: &str) -> u64 {
    snapshot
        .by_outcome
        .iter()
        .find(|(o, _)| *o == outcome)
        .unwrap()
        .1
}

#[tokio::test(start_paused = true)]
async fn a_scripted_mix_gives_exact_counts_and_no_request_stays_in_flight() {
    let metrics = paused_clock().build().unwrap();
    let client = metrics.layer(service_fn(upstream));

    // 5 successes read to the end, 2 successes whose bodies are dropped unread, 3 × 503,
    // 1 × 404, 2 timeouts, and 3 requests cancelled while waiting.
    for _ in 0..5 {
        let response = client
            .clone()
            .oneshot(request(Method::GET, "/ok/10"))
            .await
            .unwrap();
        response.into_body().collect().await.unwrap();
    }
    for _ in 0..2 {
        let response = client
            .clone()
            .oneshot(request(Method::POST, "/ok/10"))
            .await
            .unwrap();
        assert_eq!(
            metrics.snapshot().in_flight,
            1,
            "in flight until the body is dropped"
        );
        drop(response);
    }
    for _ in 0..3 {
        client
            .clone()
            .oneshot(request(Method::PUT, "/fail/20"))
            .await
            .unwrap();
    }
    client
        .clone()
        .oneshot(request(Method::GET, "/missing/1"))
        .await
        .unwrap();
    for _ in 0..2 {
        client
            .clone()
            .oneshot(request(Method::GET, "/timeout/30"))
            .await
            .unwrap_err();
    }
    let mut hanging: Vec<_> = (0..3)
        .map(|_| Box::pin(client.clone().oneshot(request(Method::DELETE, "/hang/0"))))
        .collect();
    for future in &mut hanging {
        assert!(future.now_or_never().is_none());
    }
    assert_eq!(metrics.snapshot().in_flight, 3);
    drop(hanging);

    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.in_flight, 0);
    assert_eq!(snapshot.total, 16);
    assert_eq!(count(&snapshot, "success"), 8);
    assert_eq!(count(&snapshot, "server_error"), 3);
    assert_eq!(count(&snapshot, "timeout"), 2);
    assert_eq!(count(&snapshot, "cancelled"), 3);
    assert_eq!(snapshot.success_rate, 0.5);
    assert_eq!(snapshot.requests_per_minute, 16);

    let text = metrics.encode();
    for line in [
        r#"seawall_http_client_requests_total{http_request_method="GET",http_response_status_class="2xx",outcome="success"} 5"#,
        r#"seawall_http_client_requests_total{http_request_method="POST",http_response_status_class="2xx",outcome="success"} 2"#,
        r#"seawall_http_client_requests_total{http_request_method="PUT",http_response_status_class="5xx",outcome="server_error"} 3"#,
        r#"seawall_http_client_requests_total{http_request_method="GET",http_response_status_class="4xx",outcome="success"} 1"#,
        r#"seawall_http_client_requests_total{http_request_method="GET",http_response_status_class="none",outcome="timeout"} 2"#,
        r#"seawall_http_client_requests_total{http_request_method="DELETE",http_response_status_class="none",outcome="cancelled"} 3"#,
        r#"seawall_http_client_request_duration_seconds_count{http_request_method="PUT",http_response_status_class="5xx"} 3"#,
        r#"seawall_http_client_request_duration_seconds_sum{http_request_method="PUT",http_response_status_class="5xx"} 0.06"#,
        r#"seawall_http_client_request_duration_seconds_bucket{le="0.025",http_request_method="PUT",http_response_status_class="5xx"} 3"#,
        "seawall_http_client_requests_in_flight 0",
    ] {
        assert!(text.contains(line), "missing `{line}` in\n{text}");
    }

    // The sliding minute forgets.
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(metrics.snapshot().requests_per_minute, 0);
}

#[tokio::test(start_paused = true)]
async fn the_body_histogram_measures_to_the_end_of_the_body() {
    let metrics = paused_clock().body_duration(true).build().unwrap();
    let client = metrics.layer(service_fn(upstream));
    let response = client
        .oneshot(request(Method::GET, "/ok/40"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    response.into_body().collect().await.unwrap();
    let text = metrics.encode();
    assert!(
        text.contains("seawall_http_client_response_body_duration_seconds_sum 0.1\n"),
        "{text}"
    );
    assert!(
        text.contains(r#"seawall_http_client_response_body_duration_seconds_bucket{le="0.1"} 1"#),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn snapshot_quantiles_agree_with_recorded_latencies_within_one_bucket() {
    let metrics = paused_clock().build().unwrap();
    let client = metrics.layer(service_fn(upstream));
    // 200 latencies spread over 1 ms to 2 s, in a scrambled order.
    let mut latencies: Vec<u64> = (0..200u64).map(|i| 1 + (i * i * 7919) % 2_000).collect();
    for millis in &latencies {
        client
            .clone()
            .oneshot(request(Method::GET, &format!("/ok/{millis}")))
            .await
            .unwrap();
    }
    latencies.sort_unstable();
    let snapshot = metrics.snapshot();
    let bucket_of = |d: Duration| DEFAULT_BUCKETS.iter().position(|b| d.as_secs_f64() <= *b);
    for (q, estimate) in [
        (0.50, snapshot.p50),
        (0.95, snapshot.p95),
        (0.99, snapshot.p99),
    ] {
        let rank = ((q * latencies.len() as f64).ceil() as usize).max(1) - 1;
        let exact = Duration::from_millis(latencies[rank]);
        let (Some(a), Some(b)) = (bucket_of(exact), bucket_of(estimate)) else {
            panic!("p{q}: {exact:?} or {estimate:?} outside the buckets");
        };
        assert!(
            a.abs_diff(b) <= 1,
            "p{q}: exact {exact:?} (bucket {a}), estimate {estimate:?} (bucket {b})"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_default_clock_keeps_real_time_while_tokio_is_paused() {
    let (default, tokio) = (
        MetricsLayer::builder().build().unwrap(),
        paused_clock().build().unwrap(),
    );
    // Ten minutes on tokio's paused clock pass at once in real time.
    for metrics in [&default, &tokio] {
        let client = metrics.layer(service_fn(upstream));
        let response = client
            .oneshot(request(Method::GET, "/ok/600000"))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    // A quantile estimate lies inside the bucket the request fell in.
    assert!(
        default.snapshot().p50 <= Duration::from_millis(250),
        "{:?}",
        default.snapshot().p50
    );
    // Beyond the last bound (10 s): the estimate is that bound.
    assert_eq!(tokio.snapshot().p50, Duration::from_secs(10));
}

#[test]
fn invalid_buckets_are_a_config_error_naming_the_field() {
    for buckets in [
        vec![],
        vec![0.5, 0.1],
        vec![0.1, 0.1],
        vec![f64::NAN],
        vec![0.0],
        vec![1e9],
    ] {
        let error = MetricsLayer::builder()
            .buckets(buckets.clone())
            .build()
            .unwrap_err();
        assert_eq!(error.field(), "buckets", "{buckets:?}");
    }
}

/// A client whose `call` panics (a bug below the layer) leaves nothing in flight.
#[test]
fn a_call_that_panics_leaves_nothing_in_flight() {
    let layer = paused_clock().build().unwrap();
    let panicking = tower::service_fn(
        |_request: Request<()>| -> std::future::Ready<Result<Response<()>, io::Error>> {
            panic!("a client's call panics")
        },
    );
    let mut service = layer.layer(panicking);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        tower::Service::call(&mut service, request(Method::GET, "/"))
    }));
    assert!(result.is_err());
    assert_eq!(layer.snapshot().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn a_body_that_outlives_the_layer_and_its_services_is_still_recorded() {
    let metrics = paused_clock().build().unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    let client = metrics.layer(service_fn(upstream));
    let response = client
        .oneshot(request(Method::GET, "/ok/10"))
        .await
        .unwrap();
    drop(metrics);

    // The layer and every service are gone; the body still holds its request in flight.
    let exposition = |registry: &prometheus_client::registry::Registry| {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    };
    assert!(exposition(&registry).contains("seawall_http_client_requests_in_flight 1\n"));
    response.into_body().collect().await.unwrap();
    let after = exposition(&registry);
    assert!(
        after.contains("seawall_http_client_requests_in_flight 0\n"),
        "{after}"
    );
    assert!(
        after.contains(
            "seawall_http_client_requests_total{http_request_method=\"GET\",http_response_status_class=\"2xx\",outcome=\"success\"} 1\n"
        ),
        "{after}"
    );
}

/// A breaker's handle, as one of two upstreams' breakers reports itself.
struct Breaker(&'static str);

impl seawall_core::FigureSource for Breaker {
    fn figures(&self, visit: &mut dyn FnMut(seawall_core::Figure<'_>)) {
        visit(seawall_core::figures::gauge(
            "seawall_circuit_breaker_state",
            "Breaker state.",
            &[("key", self.0)],
            0.0,
        ));
        visit(seawall_core::figures::counter(
            "seawall_circuit_breaker_rejected",
            "Calls refused.",
            &[("key", self.0)],
            3,
        ));
    }
}

#[test]
fn two_sources_of_one_kind_give_each_name_one_family() {
    let metrics = MetricsLayer::builder().build().unwrap();
    metrics.include(Breaker("http://a.test"));
    metrics.include(Breaker("http://b.test"));
    let text = metrics.encode();
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("seawall_circuit_breaker_"))
        .collect();
    // One `HELP` and one `TYPE` per name, its series together (a second `TYPE` line is
    // refused by Prometheus' parser).
    assert_eq!(
        lines,
        [
            "# HELP seawall_circuit_breaker_state Breaker state.",
            "# TYPE seawall_circuit_breaker_state gauge",
            r#"seawall_circuit_breaker_state{key="http://a.test"} 0.0"#,
            r#"seawall_circuit_breaker_state{key="http://b.test"} 0.0"#,
            "# HELP seawall_circuit_breaker_rejected Calls refused.",
            "# TYPE seawall_circuit_breaker_rejected counter",
            r#"seawall_circuit_breaker_rejected_total{key="http://a.test"} 3"#,
            r#"seawall_circuit_breaker_rejected_total{key="http://b.test"} 3"#,
        ],
        "{text}"
    );
}
