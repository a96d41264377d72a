//! Publishing through the `metrics` facade (feature `metrics-facade`), to a recorder
//! installed after the layers were built and used.
#![cfg(feature = "metrics-facade")]
#![allow(clippy::unwrap_used, reason = "a test: a failure should stop it")]

use http::{Request, Response};
use metrics::Unit;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use seawall_core::{Figure, FigureSource, figures};
use seawall_metrics::{LatencyClock, MetricsLayer};
use tower::{Layer, ServiceExt, service_fn};

/// Figures as another layer's handle reports them: a counter, a keyed gauge, and a counter
/// of seconds.
struct OtherLayer;

impl FigureSource for OtherLayer {
    fn figures(&self, visit: &mut dyn FnMut(Figure<'_>)) {
        visit(figures::counter(
            "seawall_retry_attempts",
            "Attempts sent.",
            &[],
            7,
        ));
        visit(figures::gauge(
            "seawall_circuit_breaker_state",
            "Breaker state.",
            &[("key", "http://api.test"), ("state", "open")],
            1.0,
        ));
        visit(Figure {
            name: "seawall_rate_limit_wait_seconds",
            help: "Time waited, in total.",
            kind: seawall_core::FigureKind::Counter,
            labels: &[],
            value: 0.25,
        });
    }
}

/// Every value the recorder holds, as `name labels value`, sorted; histograms as their
/// recorded samples.
fn seen(snapshotter: &Snapshotter) -> Vec<String> {
    let mut seen = Vec::new();
    for (key, unit, description, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let value = match value {
            DebugValue::Counter(n) => n.to_string(),
            DebugValue::Gauge(value) => value.into_inner().to_string(),
            DebugValue::Histogram(values) => format!(
                "{:?}",
                values.iter().map(|v| v.into_inner()).collect::<Vec<_>>()
            ),
        };
        let unit = if unit == Some(Unit::Seconds) {
            " [s]"
        } else {
            ""
        };
        let described = if description.is_some() {
            ""
        } else {
            " (no description)"
        };
        seen.push(format!(
            "{} {} {value}{unit}{described}",
            key.name(),
            labels.join(",")
        ));
    }
    seen.sort();
    seen
}

#[tokio::test(start_paused = true)]
async fn a_recorder_installed_after_the_layers_receives_every_figure_described() {
    // Built and used before any recorder exists.
    let layer = MetricsLayer::builder()
        .clock(LatencyClock::Tokio)
        .build()
        .unwrap();
    layer.include(OtherLayer);
    let attempts = layer
        .attempts()
        .layer(service_fn(|_req: Request<()>| async {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            Ok::<_, std::io::Error>(Response::builder().status(503).body(()).unwrap())
        }));
    let client = layer.layer(attempts);
    for _ in 0..3 {
        let request = Request::post("http://api.test/").body(()).unwrap();
        drop(client.clone().oneshot(request).await.unwrap());
    }

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || layer.publish_to_facade());
    let host = "server_address=api.test,server_port=80,url_scheme=http";
    assert_eq!(
        seen(&snapshotter),
        [
            format!("http_client_active_requests {host} 0"),
            format!(
                "http_client_request_duration_seconds http_request_method=POST,http_response_status_code=503,error_type=503,{host} [0.025, 0.025, 0.025] [s]"
            ),
            "seawall_circuit_breaker_state key=http://api.test,state=open 1".to_owned(),
            "seawall_http_client_queue_wait_seconds  [0.005, 0.005, 0.005] [s]".to_owned(),
            // One attempt each (no retry layer), a count without a unit.
            "seawall_http_client_request_attempts  [1.0, 1.0, 1.0]".to_owned(),
            "seawall_http_client_request_duration_seconds http_request_method=POST,http_response_status_class=5xx [0.025, 0.025, 0.025] [s]".to_owned(),
            "seawall_http_client_requests_in_flight  0".to_owned(),
            "seawall_http_client_requests_total http_request_method=POST,http_response_status_class=5xx,outcome=server_error 3".to_owned(),
            "seawall_rate_limit_wait_seconds  0.25".to_owned(),
            "seawall_retry_attempts_total  7".to_owned(),
        ]
    );

    // A second publish hands over only the histogram samples recorded since.
    let request = Request::post("http://api.test/").body(()).unwrap();
    drop(client.oneshot(request).await.unwrap());
    metrics::with_local_recorder(&recorder, || layer.publish_to_facade());
    let again = seen(&snapshotter);
    assert!(again.contains(&"seawall_http_client_requests_total http_request_method=POST,http_response_status_class=5xx,outcome=server_error 4".to_owned()), "{again:#?}");
    assert!(again.contains(&"seawall_http_client_request_duration_seconds http_request_method=POST,http_response_status_class=5xx [0.025] [s]".to_owned()), "{again:#?}");
}

/// A limiter that has not waited yet: its counter of seconds is a whole zero.
struct NeverWaited;

impl FigureSource for NeverWaited {
    fn figures(&self, visit: &mut dyn FnMut(Figure<'_>)) {
        visit(Figure {
            name: "seawall_rate_limit_wait_seconds",
            help: "Time waited, in total.",
            kind: seawall_core::FigureKind::Counter,
            labels: &[],
            value: 0.0,
        });
    }
}

#[test]
fn a_counter_of_seconds_keeps_one_name_whole_or_not() {
    let layer = MetricsLayer::builder().build().unwrap();
    layer.include(NeverWaited);
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || layer.publish_to_facade());
    let seen = seen(&snapshotter);
    let wait: Vec<&String> = seen
        .iter()
        .filter(|line| line.starts_with("seawall_rate_limit_wait"))
        .collect();
    assert_eq!(wait, ["seawall_rate_limit_wait_seconds  0"], "{seen:#?}");
}
