//! Recording through the `metrics` facade (feature `metrics-facade`).
#![cfg(feature = "metrics-facade")]

use http::{Request, Response};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use seawall_metrics::MetricsLayer;
use tower::{Layer, ServiceExt, service_fn};

#[tokio::test]
async fn requests_reach_the_installed_recorder_with_the_same_names_and_labels() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // Handles are resolved against the recorder in place when the layer is built.
    let layer = metrics::with_local_recorder(&recorder, || {
        MetricsLayer::builder().metrics_facade(true).build()
    })
    .expect("valid config");
    let client = layer.layer(service_fn(|_req: Request<()>| async {
        Ok::<_, std::io::Error>(Response::builder().status(503).body(()).expect("response"))
    }));
    for _ in 0..3 {
        let request = Request::post("http://api.test/").body(()).expect("request");
        drop(client.clone().oneshot(request).await.expect("a response"));
    }

    let mut seen = Vec::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        match value {
            DebugValue::Counter(n) if n > 0 => {
                seen.push(format!("{} {} {n}", key.name(), labels.join(",")))
            }
            DebugValue::Histogram(values) if !values.is_empty() => seen.push(format!(
                "{} {} {}",
                key.name(),
                labels.join(","),
                values.len()
            )),
            DebugValue::Gauge(value) if key.name() == "seawall_http_client_requests_in_flight" => {
                seen.push(format!("{} {}", key.name(), value.into_inner()))
            }
            _ => {}
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "seawall_http_client_request_duration_seconds http_request_method=POST,http_response_status_class=5xx 3",
            "seawall_http_client_requests_in_flight 0",
            "seawall_http_client_requests_total http_request_method=POST,http_response_status_class=5xx,outcome=server_error 3",
        ]
    );
}
