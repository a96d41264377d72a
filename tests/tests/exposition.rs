//! The exposition of the whole stack (metrics, retry, breaker, rate limiter over hyper-util's
//! client, against a real hyper server on 127.0.0.1) is valid OpenMetrics and valid Prometheus
//! text, checked in-process (`support/exposition_check.rs`), so `cargo test` needs nothing
//! installed by hand.
//!
//! With `SEAWALL_EXPOSITION_FILE` set, the Prometheus text is also written to that file:
//! `.ci/run` lints it with `promtool check metrics` (Debian package `prometheus`) as a step of
//! its own.

#[path = "../../crates/metrics/tests/support/capture.rs"]
mod capture;
#[path = "support/exposition_check.rs"]
mod exposition_check;

#[path = "support/every_layer.rs"]
mod every_layer;

use every_layer::every_layer;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use http::Request;
use http_body_util::{BodyExt, Empty};
use seawall_examples::{Upstream, respond};
use seawall_metrics::MetricsLayer;
use seawall_rate_limit::RateLimitLayer;
use tower::ServiceExt;

use capture::Capture;
use exposition_check::{check_openmetrics, check_prometheus_text};

#[tokio::test(start_paused = true)]
async fn the_full_stack_exposition_is_valid_openmetrics_and_prometheus_text() {
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

    // Attempt spans recorded, so that exemplars are written.
    let _subscriber = tracing::subscriber::set_default(Capture::default());
    // With the body histogram and exemplars too, so every family and form the layer can
    // write is checked.
    let metrics = MetricsLayer::builder()
        .body_duration(true)
        .exemplars(|| Some(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736))
        .build()
        .expect("valid config");
    // Per host, so that the limiter's per-key series are checked too.
    let limit = RateLimitLayer::builder()
        .per_second(100)
        .per_host()
        .build()
        .expect("valid config");
    let stack = every_layer(&metrics, limit);

    for _ in 0..20 {
        let request = Request::get(upstream.url("/items"))
            .body(Empty::new())
            .expect("valid request");
        let response = stack.clone().oneshot(request).await.expect("a response");
        response.into_body().collect().await.expect("a body");
    }
    let text = metrics.encode();
    for name in [
        "http_client_request_duration_seconds_bucket{le=\"0.005\",http_request_method=\"GET\",http_response_status_code=\"503\",error_type=\"503\",server_address=\"127.0.0.1\"",
        "http_client_active_requests{server_address=\"127.0.0.1\"",
        "seawall_http_client_request_duration_seconds_bucket",
        "seawall_http_client_queue_wait_seconds_bucket",
        "seawall_retry_retries_total{reason=\"server_error\"}",
        "seawall_circuit_breaker_state{key=\"http://127.0.0.1",
        "seawall_rate_limit_admitted_total",
        "seawall_rate_limit_queue_depth{key=\"http://127.0.0.1:",
        "seawall_rate_limit_tokens_available{key=\"http://127.0.0.1:",
        "seawall_http_client_response_body_duration_seconds_bucket",
    ] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }

    // One exemplar per attempt series (the 200s and the 503s), on a bucket line.
    let exemplars: Vec<&str> = text
        .lines()
        .filter(|line| line.contains(r#" # {trace_id="4bf92f3577b34da6a3ce929d0e0e4736"} "#))
        .collect();
    assert_eq!(exemplars.len(), 2, "{text}");
    assert!(
        exemplars
            .iter()
            .all(|line| line.starts_with("http_client_request_duration_seconds_bucket{")),
        "{exemplars:?}"
    );
    if let Err(error) = check_openmetrics(&text) {
        panic!("invalid OpenMetrics: {error}\n{text}");
    }
    let prometheus_text = metrics.encode_prometheus_text();
    if let Err(error) = check_prometheus_text(&prometheus_text) {
        panic!("invalid Prometheus text: {error}\n{prometheus_text}");
    }
    if let Some(path) = std::env::var_os("SEAWALL_EXPOSITION_FILE") {
        std::fs::write(&path, &prometheus_text).expect("write the exposition for promtool");
    }
}

/// A small exposition with every kind of family the stack writes, valid in both forms.
const VALID_OPENMETRICS: &str = "\
# HELP app_requests Requests sent.
# TYPE app_requests counter
app_requests_total{method=\"GET\",outcome=\"ok\"} 3
app_requests_total{method=\"POST\",outcome=\"say \\\"hi\\\"\\\\n\"} 1
# HELP app_in_flight Requests in flight.
# TYPE app_in_flight gauge
app_in_flight 0
# HELP app_duration_seconds Time to the response.
# TYPE app_duration_seconds histogram
# UNIT app_duration_seconds seconds
app_duration_seconds_bucket{le=\"0.1\"} 1
app_duration_seconds_bucket{le=\"1.0\"} 2
app_duration_seconds_bucket{le=\"+Inf\"} 3
app_duration_seconds_sum 4.5
app_duration_seconds_count 3
# EOF
";

/// The same in the Prometheus text format.
const VALID_PROMETHEUS: &str = "\
# HELP app_requests_total Requests sent.
# TYPE app_requests_total counter
app_requests_total{method=\"GET\",outcome=\"ok\"} 3
# HELP app_in_flight Requests in flight.
# TYPE app_in_flight gauge
app_in_flight 0
# HELP app_duration_seconds Time to the response.
# TYPE app_duration_seconds histogram
app_duration_seconds_bucket{le=\"0.1\"} 1
app_duration_seconds_bucket{le=\"1.0\"} 2
app_duration_seconds_bucket{le=\"+Inf\"} 3
app_duration_seconds_sum 4.5
app_duration_seconds_count 3
";

/// `valid` with `from` replaced by `to`; `from` must be there, so each case breaks one rule.
fn broken(valid: &str, from: &str, to: &str) -> String {
    assert!(
        valid.contains(from),
        "{from:?} is not in the valid exposition"
    );
    valid.replacen(from, to, 1)
}

#[test]
fn the_exposition_check_accepts_well_formed_expositions() {
    assert_eq!(check_openmetrics(VALID_OPENMETRICS), Ok(()));
    assert_eq!(check_prometheus_text(VALID_PROMETHEUS), Ok(()));
    let with_exemplar = broken(
        VALID_OPENMETRICS,
        "app_duration_seconds_bucket{le=\"1.0\"} 2",
        "app_duration_seconds_bucket{le=\"1.0\"} 2 # {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"} 0.42 1733350000.123",
    );
    assert_eq!(check_openmetrics(&with_exemplar), Ok(()));
}

#[test]
fn the_exposition_check_rejects_misplaced_or_oversized_exemplars() {
    let exemplar = " # {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"} 0.42";
    let on_a_gauge = broken(
        VALID_OPENMETRICS,
        "app_in_flight 0",
        &format!("app_in_flight 0{exemplar}"),
    );
    let oversized = broken(
        VALID_OPENMETRICS,
        "app_duration_seconds_bucket{le=\"1.0\"} 2",
        &format!(
            "app_duration_seconds_bucket{{le=\"1.0\"}} 2 # {{trace_id=\"{}\"}} 0.42",
            "a".repeat(121)
        ),
    );
    let in_prometheus_text = broken(
        VALID_PROMETHEUS,
        "app_duration_seconds_bucket{le=\"1.0\"} 2",
        &format!("app_duration_seconds_bucket{{le=\"1.0\"}} 2{exemplar}"),
    );
    assert_each_refused(
        check_openmetrics,
        &[
            (
                "an exemplar on a gauge",
                "\"#\" is not a number",
                on_a_gauge,
            ),
            ("an exemplar's labels too long", "(at most 128)", oversized),
        ],
    );
    assert_each_refused(
        check_prometheus_text,
        &[(
            "an exemplar in Prometheus text",
            "\"#\" is not a number",
            in_prometheus_text,
        )],
    );
}

/// Checks that `check` refuses the text of each case with an error that contains its
/// expected words; a case is (what is broken, the expected words, the text).
fn assert_each_refused(check: fn(&str) -> Result<(), String>, cases: &[(&str, &str, String)]) {
    for (case, expected, text) in cases {
        let outcome = check(text);
        assert!(
            matches!(&outcome, Err(error) if error.contains(expected)),
            "{case}: {outcome:?}\n{text}"
        );
    }
}

#[test]
fn the_exposition_check_rejects_broken_openmetrics() {
    let v = VALID_OPENMETRICS;
    let cases = [
        ("empty", "does not end with `# EOF`", String::new()),
        (
            "no # EOF",
            "does not end with `# EOF`",
            broken(v, "# EOF\n", ""),
        ),
        (
            "text after # EOF",
            "does not end with `# EOF`",
            format!("{v}app_in_flight 1\n"),
        ),
        (
            "a blank line",
            "a blank line",
            broken(v, "app_in_flight 0\n", "app_in_flight 0\n\n"),
        ),
        (
            "a stray comment",
            "not a HELP, TYPE or UNIT line",
            broken(v, "app_in_flight 0\n", "app_in_flight 0\n# hello\n"),
        ),
        (
            "a dash in a metric name",
            "is not a metric name",
            broken(v, "app_in_flight 0", "app-in_flight 0"),
        ),
        (
            "a reserved label name",
            "\"__method\" is not a label name",
            broken(v, "{method=\"GET\"", "{__method=\"GET\""),
        ),
        (
            "a label name twice",
            "label method twice",
            broken(v, "outcome=\"ok\"", "method=\"ok\""),
        ),
        (
            "a trailing comma",
            "a trailing comma in the label set",
            broken(v, "outcome=\"ok\"}", "outcome=\"ok\",}"),
        ),
        (
            "a bad escape",
            "a bad escape in a label value",
            broken(v, "outcome=\"ok\"", "outcome=\"o\\k\""),
        ),
        (
            "two spaces before the value",
            "\"\" is not a number",
            broken(v, "app_in_flight 0", "app_in_flight  0"),
        ),
        (
            "a timestamp that is no number",
            "timestamp: \"now\" is not a number",
            broken(v, "app_in_flight 0", "app_in_flight 0 now"),
        ),
        (
            "a sample of another family",
            "a sample outside its family (app_in_flight)",
            broken(v, "app_in_flight 0", "app_in_flight 0\napp_queue 0"),
        ),
        (
            "a bucket without le",
            "a bucket without `le`",
            broken(v, "{le=\"0.1\"} 1", "{lf=\"0.1\"} 1"),
        ),
        (
            "a counter sample without _total",
            "not a sample of the Counter family app_requests",
            broken(
                v,
                "app_requests_total{method=\"GET\"",
                "app_requests{method=\"GET\"",
            ),
        ),
        (
            "an unescaped quote in a label value",
            "an unclosed label set",
            broken(v, "outcome=\"ok\"", "outcome=\"o\"k\""),
        ),
        (
            "a label name starting with a digit",
            "\"1method\" is not a label name",
            broken(v, "{method=\"GET\"", "{1method=\"GET\""),
        ),
        (
            "an unclosed label set",
            "an unclosed label set",
            broken(v, "\"ok\"} 3", "\"ok\" 3"),
        ),
        (
            "a value that is no number",
            "\"3x\" is not a number",
            broken(v, "\"ok\"} 3", "\"ok\"} 3x"),
        ),
        (
            "a negative counter",
            "a negative counter",
            broken(v, "\"ok\"} 3", "\"ok\"} -3"),
        ),
        (
            "a NaN counter",
            "a NaN value",
            broken(v, "\"ok\"} 3", "\"ok\"} NaN"),
        ),
        (
            "a NaN gauge",
            "a NaN value",
            broken(v, "app_in_flight 0", "app_in_flight NaN"),
        ),
        (
            "the same label set twice",
            "the same label set twice",
            broken(
                v,
                "method=\"POST\",outcome=\"say \\\"hi\\\"\\\\n\"",
                "method=\"GET\",outcome=\"ok\"",
            ),
        ),
        (
            "TYPE after the samples",
            "a sample before its family's TYPE",
            broken(
                v,
                "# TYPE app_in_flight gauge\napp_in_flight 0\n",
                "app_in_flight 0\n# TYPE app_in_flight gauge\n",
            ),
        ),
        (
            "an unknown type",
            "type \"gauges\" is not one the stack writes",
            broken(v, "TYPE app_in_flight gauge", "TYPE app_in_flight gauges"),
        ),
        (
            "no TYPE",
            "a sample before its family's TYPE",
            broken(v, "# TYPE app_in_flight gauge\n", ""),
        ),
        (
            "no HELP",
            "no HELP",
            broken(v, "# HELP app_in_flight Requests in flight.\n", ""),
        ),
        (
            "one family in two places",
            "family app_requests appears a second time",
            format!(
                "{}# HELP app_requests More.\n# TYPE app_requests counter\napp_requests_total 1\n# EOF\n",
                v.trim_end_matches("# EOF\n")
            ),
        ),
        (
            "no +Inf bucket",
            "the last bucket is not le=\"+Inf\"",
            broken(v, "app_duration_seconds_bucket{le=\"+Inf\"} 3\n", ""),
        ),
        (
            "bucket counts that fall",
            "bucket counts fall: 1 then 0",
            broken(v, "{le=\"1.0\"} 2", "{le=\"1.0\"} 0"),
        ),
        (
            "bucket bounds that fall",
            "bucket bounds do not rise: 0.1 then 0.05",
            broken(v, "{le=\"1.0\"} 2", "{le=\"0.05\"} 2"),
        ),
        (
            "a bucket bound that is no number",
            "\"one\" is not a number",
            broken(v, "{le=\"1.0\"} 2", "{le=\"one\"} 2"),
        ),
        (
            "+Inf bucket and _count disagree",
            "the +Inf bucket holds 3 but `_count` is 4",
            broken(v, "_count 3", "_count 4"),
        ),
        (
            "a histogram without _sum",
            "no `_sum`",
            broken(v, "app_duration_seconds_sum 4.5\n", ""),
        ),
        (
            "a histogram without _count",
            "no `_count`",
            broken(v, "app_duration_seconds_count 3\n", ""),
        ),
        (
            "a unit the name does not end with",
            "the name does not end with its unit \"bytes\"",
            broken(
                v,
                "# UNIT app_duration_seconds seconds",
                "# UNIT app_duration_seconds bytes",
            ),
        ),
    ];
    assert_each_refused(check_openmetrics, &cases);
}

#[test]
fn the_exposition_check_rejects_broken_prometheus_text() {
    let v = VALID_PROMETHEUS;
    let cases = [
        (
            "a # EOF line",
            "`# EOF` marks the OpenMetrics form",
            format!("{v}# EOF\n"),
        ),
        (
            "a counter family without _total",
            "a counter family without the `_total` suffix",
            v.replace("app_requests_total", "app_requests"),
        ),
        (
            "no HELP",
            "no HELP",
            broken(v, "# HELP app_in_flight Requests in flight.\n", ""),
        ),
        (
            "no TYPE",
            "a sample before its family's TYPE",
            broken(v, "# TYPE app_in_flight gauge\n", ""),
        ),
        (
            "no +Inf bucket",
            "the last bucket is not le=\"+Inf\"",
            broken(v, "app_duration_seconds_bucket{le=\"+Inf\"} 3\n", ""),
        ),
        (
            "bucket counts that fall",
            "bucket counts fall: 1 then 0",
            broken(v, "{le=\"1.0\"} 2", "{le=\"1.0\"} 0"),
        ),
        (
            "+Inf bucket and _count disagree",
            "the +Inf bucket holds 3 but `_count` is 4",
            broken(v, "_count 3", "_count 4"),
        ),
        (
            "an unescaped quote in a label value",
            "an unclosed label set",
            broken(v, "outcome=\"ok\"", "outcome=\"o\"k\""),
        ),
    ];
    assert_each_refused(check_prometheus_text, &cases);
}
