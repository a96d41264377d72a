//! The spans of logical requests and attempts, and the events inside them, captured by a
//! subscriber of the test's own.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "helpers of a test: a failure should stop it"
)]

#[path = "support/capture.rs"]
mod capture;

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use capture::{Capture, CapturedSpan};
use futures::FutureExt;
use http::{Request, Response};
use seawall_metrics::MetricsLayer;
use tower::{Layer, Service, ServiceExt, service_fn};

fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// An upstream that answers 503 to its first call and 200 after, and a stand-in for a retry
/// layer that resends once after a 503 with an event saying so (as the retry layer's own).
fn resending_client(
    metrics: &MetricsLayer,
) -> impl Service<
    Request<()>,
    Response = Response<seawall_metrics::MetricsBody<String>>,
    Error = io::Error,
> + Clone {
    let calls = Arc::new(AtomicU64::new(0));
    let upstream = service_fn(move |_request: Request<()>| {
        let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            tracing::info!(upstream = "called");
            let status = if first { 503 } else { 200 };
            Ok::<_, io::Error>(
                Response::builder()
                    .status(status)
                    .body(String::new())
                    .unwrap(),
            )
        }
    });
    let attempts = metrics.attempts().layer(upstream);
    metrics.layer(service_fn(move |request: Request<()>| {
        let attempts = attempts.clone();
        async move {
            let mut copy = Request::builder()
                .method(request.method().clone())
                .uri(request.uri().clone())
                .body(())
                .unwrap();
            *copy.extensions_mut() = request.extensions().clone();
            let response = attempts.clone().oneshot(request).await?;
            if response.status() != 503 {
                return Ok(response);
            }
            tracing::debug!(delay_ms = 5u64, reason = "server_error", "retrying request");
            tokio::time::sleep(Duration::from_millis(5)).await;
            attempts.oneshot(copy).await
        }
    }))
}

#[tokio::test(start_paused = true)]
async fn a_logical_span_holds_one_attempt_span_per_resend_with_opentelemetry_attributes() {
    let capture = Capture::default();
    let _default = tracing::subscriber::set_default(capture.clone());
    let metrics = MetricsLayer::builder().build().unwrap();
    let client = resending_client(&metrics);

    let response = client
        .oneshot(
            // A signed URL: the signature's value is left out of the spans, as OpenTelemetry
            // says for these keys (matched case-sensitively), the other values kept.
            Request::get(
                "https://user:secret@api.test/v1/items?page=2&sig=s1&Signature=s2\
                 &X-Goog-Signature=s3&AWSAccessKeyId=k4&signature=kept",
            )
            .body(())
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let captured = capture.captured.lock().unwrap();
    let spans: Vec<(u64, CapturedSpan)> = captured
        .spans
        .iter()
        .map(|(id, s)| (*id, s.clone()))
        .collect();
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let (request_id, request) = &spans[0];
    assert_eq!(request.name, "http.client.request");
    assert_eq!(request.parent, None);
    let common = [
        ("otel.kind", "client"),
        ("otel.name", "GET"),
        ("http.request.method", "GET"),
        (
            "url.full",
            "https://api.test/v1/items?page=2&sig=REDACTED&Signature=REDACTED\
             &X-Goog-Signature=REDACTED&AWSAccessKeyId=REDACTED&signature=kept",
        ),
        ("server.address", "api.test"),
        ("server.port", "443"),
    ];
    let mut expected = fields(&common);
    expected.insert("http.response.status_code".into(), "200".into());
    assert_eq!(request.fields, expected);

    let (first_id, first) = &spans[1];
    assert_eq!(
        (first.name, first.parent),
        ("http.client.attempt", Some(*request_id))
    );
    let mut expected = fields(&common);
    expected.insert("http.response.status_code".into(), "503".into());
    expected.insert("error.type".into(), "503".into());
    assert_eq!(first.fields, expected);

    let (second_id, second) = &spans[2];
    assert_eq!(
        (second.name, second.parent),
        ("http.client.attempt", Some(*request_id))
    );
    let mut expected = fields(&common);
    expected.insert("http.response.status_code".into(), "200".into());
    expected.insert("http.request.resend_count".into(), "1".into());
    assert_eq!(second.fields, expected);

    // Events land in the span of what they are about: the upstream's in each attempt, the
    // retry decision in the logical request.
    let events: Vec<(Option<u64>, BTreeMap<String, String>)> = captured
        .events
        .iter()
        .map(|e| (e.span, e.fields.clone()))
        .collect();
    assert_eq!(
        events,
        [
            (Some(*first_id), fields(&[("upstream", "called")])),
            (
                Some(*request_id),
                fields(&[
                    ("message", "retrying request"),
                    ("delay_ms", "5"),
                    ("reason", "server_error")
                ])
            ),
            (Some(*second_id), fields(&[("upstream", "called")])),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn failed_and_cancelled_calls_carry_their_error_type() {
    let capture = Capture::default();
    let _default = tracing::subscriber::set_default(capture.clone());
    let metrics = MetricsLayer::builder().build().unwrap();
    let attempts = metrics
        .attempts()
        .layer(service_fn(|request: Request<()>| async move {
            if request.uri().path() == "/hang" {
                std::future::pending::<()>().await;
            }
            Err::<Response<String>, _>(io::Error::new(io::ErrorKind::TimedOut, "timed out"))
        }));
    let client = metrics.layer(attempts);

    assert!(
        client
            .clone()
            .oneshot(Request::get("http://api.test:8080/fail").body(()).unwrap())
            .await
            .is_err()
    );
    let mut hanging =
        Box::pin(client.oneshot(Request::post("http://api.test:8080/hang").body(()).unwrap()));
    assert!((&mut hanging).now_or_never().is_none());
    drop(hanging);

    let captured = capture.captured.lock().unwrap();
    let ends: Vec<(&str, Option<&str>, Option<&str>)> = captured
        .spans
        .values()
        .map(|s| {
            (
                s.name,
                s.fields.get("error.type").map(String::as_str),
                s.fields.get("http.request.method").map(String::as_str),
            )
        })
        .collect();
    assert_eq!(
        ends,
        [
            ("http.client.request", Some("timeout"), Some("GET")),
            ("http.client.attempt", Some("timeout"), Some("GET")),
            ("http.client.request", Some("cancelled"), Some("POST")),
            ("http.client.attempt", Some("cancelled"), Some("POST")),
        ]
    );
    assert!(
        captured
            .spans
            .values()
            .all(|s| s.fields["server.port"] == "8080")
    );
}

#[tokio::test(start_paused = true)]
async fn a_traced_attempt_leaves_an_exemplar_with_its_trace_id_on_its_bucket() {
    let capture = Capture::default();
    let _default = tracing::subscriber::set_default(capture.clone());
    let metrics = MetricsLayer::builder()
        .clock(seawall_metrics::LatencyClock::Tokio)
        // Called inside the attempt's span: the id of that span's trace.
        .exemplars(|| Some(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736))
        .build()
        .unwrap();
    let attempts = metrics
        .attempts()
        .layer(service_fn(|_request: Request<()>| async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok::<_, io::Error>(Response::new(String::new()))
        }));
    let response = metrics
        .layer(attempts)
        .oneshot(Request::get("http://api.test/").body(()).unwrap())
        .await
        .unwrap();
    drop(response);

    let text = metrics.encode();
    let series = r#"http_request_method="GET",http_response_status_code="200",server_address="api.test",server_port="80",url_scheme="http""#;
    let with_exemplar: Vec<&str> = text.lines().filter(|line| line.contains(" # {")).collect();
    assert_eq!(with_exemplar.len(), 1, "{text}");
    let (sample, exemplar) = with_exemplar[0].split_once(" # ").unwrap();
    // On the bucket the 20 ms fell in, with its value in seconds and a timestamp.
    assert_eq!(
        sample,
        format!("http_client_request_duration_seconds_bucket{{le=\"0.025\",{series}}} 1")
    );
    let (labels, rest) = exemplar.split_once("} ").unwrap();
    assert_eq!(labels, r#"{trace_id="4bf92f3577b34da6a3ce929d0e0e4736""#);
    let (value, timestamp) = rest.split_once(' ').unwrap();
    assert_eq!(value, "0.02");
    assert!(timestamp.parse::<f64>().unwrap() > 1.7e9, "{timestamp}");
    // The Prometheus text format has no exemplars.
    assert!(!metrics.encode_prometheus_text().contains(" # {"));
}
