//! Publishing through the `metrics` facade (feature `metrics-facade`).
//!
//! Nothing is recorded through the facade per request: [`publish`] reads every figure, as a
//! scrape does, and hands it to the recorder installed *now*, so a recorder installed after
//! the stack was built receives everything counted since. Counters are set to their totals
//! (`absolute`), gauges to their values, and histograms receive the samples that arrived
//! since the previous publish, one per sample at its bucket's upper bound (the `+Inf`
//! bucket's at twice the last bound): a recorder with the same bounds gets the exact bucket
//! counts; its sum is an upper bound of the true sum.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, PoisonError};

use metrics::{Key, Label, Metadata, SharedString, Unit};
use seawall_core::FigureKind;

use crate::attempt::AttemptRecorder;
use crate::export::{Sources, attempt_labels};
use crate::hosts::{ATTEMPT_BOUNDS, UNSTATED};
use crate::labels::{METHODS, OUTCOMES, STATUS_CLASSES};
use crate::recorder::{ATTEMPTS_BUCKETS, Recorder};

static METADATA: Metadata<'static> = Metadata::new("seawall", metrics::Level::INFO, None);

/// The bucket counts each histogram had at the previous publish.
pub(crate) type Published = Mutex<HashMap<Key, Vec<u64>>>;

fn key(name: &str, labels: &[(&'static str, String)]) -> Key {
    let labels: Vec<Label> = labels
        .iter()
        .map(|(k, v)| Label::new(*k, v.clone()))
        .collect();
    Key::from_parts(name.to_owned(), labels)
}

/// What [`publish`] hands each figure to.
struct Sink<'a> {
    recorder: &'a dyn metrics::Recorder,
    published: &'a mut HashMap<Key, Vec<u64>>,
}

impl Sink<'_> {
    fn counter(
        &mut self,
        name: &str,
        help: &'static str,
        labels: &[(&'static str, String)],
        value: u64,
    ) {
        self.recorder
            .describe_counter(name.to_owned().into(), None, SharedString::const_str(help));
        self.recorder
            .register_counter(&key(name, labels), &METADATA)
            .absolute(value);
    }

    fn gauge(
        &mut self,
        name: &str,
        help: &'static str,
        labels: &[(&'static str, String)],
        value: f64,
    ) {
        self.recorder
            .describe_gauge(name.to_owned().into(), None, SharedString::const_str(help));
        self.recorder
            .register_gauge(&key(name, labels), &METADATA)
            .set(value);
    }

    fn histogram(
        &mut self,
        name: &str,
        help: &'static str,
        labels: &[(&'static str, String)],
        bounds: &[f64],
        counts: &[u64],
    ) {
        // The names carry their unit: durations end in `_seconds`, counts (attempts) have none.
        self.recorder.describe_histogram(
            name.to_owned().into(),
            name.ends_with("_seconds").then_some(Unit::Seconds),
            SharedString::const_str(help),
        );
        let key = key(name, labels);
        let histogram = self.recorder.register_histogram(&key, &METADATA);
        let last = self
            .published
            .entry(key)
            .or_insert_with(|| vec![0; counts.len()]);
        let overflow = bounds.last().copied().unwrap_or(1.0) * 2.0;
        for (i, (count, before)) in counts.iter().zip(last.iter_mut()).enumerate() {
            let new = count.saturating_sub(*before);
            if new > 0 {
                let value = bounds.get(i).copied().unwrap_or(overflow);
                histogram.record_many(value, usize::try_from(new).unwrap_or(usize::MAX));
            }
            *before = *count;
        }
    }
}

/// Publishes every figure to the recorder installed now.
pub(crate) fn publish(
    recorder: &Recorder,
    attempts: &AttemptRecorder,
    sources: &Sources,
    published: &Published,
) {
    let mut published = published.lock().unwrap_or_else(PoisonError::into_inner);
    metrics::with_recorder(|installed| {
        let mut sink = Sink {
            recorder: installed,
            published: &mut published,
        };
        publish_into(&mut sink, recorder, attempts, sources);
    });
}

fn publish_into(
    sink: &mut Sink<'_>,
    recorder: &Recorder,
    attempts: &AttemptRecorder,
    sources: &Sources,
) {
    attempts.hosts.for_each(|series| {
        if !crate::export::used(series) {
            return;
        }
        series.for_each(|slot, method, histogram| {
            let (counts, _) = histogram.read();
            sink.histogram(
                "http_client_request_duration_seconds",
                "Duration of HTTP client requests: one sample per attempt.",
                &attempt_labels(series, slot, method),
                &ATTEMPT_BOUNDS,
                &counts,
            );
        });
        let host = crate::export::host_labels(series);
        sink.gauge(
            "http_client_active_requests",
            "HTTP client attempts sent and not yet answered.",
            &host,
            series.active() as f64,
        );
        for (name, help, value) in [
            (
                "seawall_upstream_quota_limit",
                "The request quota the upstream last stated.",
                series.quota_limit.load(Ordering::Relaxed),
            ),
            (
                "seawall_upstream_quota_remaining",
                "What the upstream last said was left of its quota.",
                series.quota_remaining.load(Ordering::Relaxed),
            ),
        ] {
            if value != UNSTATED {
                sink.gauge(name, help, &host, value as f64);
            }
        }
    });
    recorder.for_each_latency(|method, status, histogram| {
        sink.histogram(
            "seawall_http_client_request_duration_seconds",
            "Duration of logical HTTP client requests, every attempt and wait included.",
            &[
                ("http_request_method", METHODS[method].to_owned()),
                (
                    "http_response_status_class",
                    STATUS_CLASSES[status].to_owned(),
                ),
            ],
            &recorder.bounds,
            &histogram.counts,
        );
    });
    recorder.for_each_count(|method, status, outcome, count| {
        sink.counter(
            "seawall_http_client_requests_total",
            "Finished logical HTTP client requests.",
            &[
                ("http_request_method", METHODS[method].to_owned()),
                (
                    "http_response_status_class",
                    STATUS_CLASSES[status].to_owned(),
                ),
                ("outcome", OUTCOMES[outcome].to_owned()),
            ],
            count,
        );
    });
    sink.gauge(
        "seawall_http_client_requests_in_flight",
        "Logical HTTP client requests in flight.",
        &[],
        recorder.in_flight() as f64,
    );
    sink.histogram(
        "seawall_http_client_queue_wait_seconds",
        "Time a logical request's attempts waited in a rate limiter.",
        &[],
        &recorder.bounds,
        &recorder.queue_wait().counts,
    );
    sink.histogram(
        "seawall_http_client_request_attempts",
        "Attempts per logical request, the first included.",
        &[],
        &ATTEMPTS_BUCKETS.map(|bound| bound as f64),
        &recorder.attempts().counts,
    );
    if let Some(body) = recorder.body_latency() {
        sink.histogram(
            "seawall_http_client_response_body_duration_seconds",
            "Duration of logical HTTP client requests to the end of the response body.",
            &[],
            &recorder.bounds,
            &body.counts,
        );
    }
    let sources = sources
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    for source in sources {
        source.figures(&mut |figure| {
            let labels: Vec<(&'static str, String)> = figure
                .labels
                .iter()
                .map(|(k, v)| (*k, (*v).to_owned()))
                .collect();
            match figure.kind {
                FigureKind::Counter if !figure.name.ends_with("_seconds") => sink.counter(
                    &format!("{}_total", figure.name),
                    figure.help,
                    &labels,
                    figure.value as u64,
                ),
                // The facade's counters are whole: a counter of seconds (the limiter's total
                // wait) always goes as a gauge, whole or not, so that it keeps one name.
                FigureKind::Counter | FigureKind::Gauge => {
                    sink.gauge(figure.name, figure.help, &labels, figure.value)
                }
            }
        });
    }
}
