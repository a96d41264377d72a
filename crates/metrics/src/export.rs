//! OpenMetrics exposition through `prometheus-client`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;
use seawall_core::{FigureKind, FigureSource};

use crate::attempt::AttemptRecorder;
use crate::hosts::{
    ATTEMPT_BOUNDS, HostSeries, ODD_STATUS_SLOT, OTHER_HOST, OTHER_SUCCESS_SLOT, STATUS_SLOTS,
    UNSTATED, slot_error, slot_is_error,
};
use crate::labels::{METHODS, OUTCOMES, STATUS_CLASSES};
use crate::recorder::{ATTEMPTS_BUCKETS, HistogramRead, Recorder};

/// The figure sources added to a metrics layer (other layers' handles).
pub(crate) type Sources = Arc<Mutex<Vec<Arc<dyn FigureSource>>>>;

/// Encodes a metrics layer's request figures and its sources' figures on each scrape.
pub(crate) struct Exporter {
    pub(crate) recorder: Arc<Recorder>,
    pub(crate) attempts: Arc<AttemptRecorder>,
    pub(crate) sources: Sources,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter").finish_non_exhaustive()
    }
}

fn encode_histogram(
    encoder: &mut prometheus_client::encoding::MetricEncoder<'_>,
    bounds: &[f64],
    histogram: &HistogramRead,
) -> Result<(), std::fmt::Error> {
    let (counts, sum) = (&histogram.counts, histogram.sum_seconds());
    let buckets: Vec<(f64, u64)> = bounds
        .iter()
        .copied()
        .chain([f64::INFINITY])
        .zip(counts.iter().copied())
        .collect();
    encoder.encode_histogram::<NoLabelSet>(sum, counts.iter().sum(), &buckets, None)
}

impl Collector for Exporter {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        encode_attempts(&self.attempts, &mut encoder)?;
        let recorder = &self.recorder;
        {
            let mut metric = encoder.encode_descriptor(
                "seawall_http_client_request_duration",
                "Duration of logical HTTP client requests (every attempt, backoff and wait included), from the call to the response headers.",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            let mut result = Ok(());
            recorder.for_each_latency(|method, status, histogram| {
                let labels = [
                    ("http_request_method", METHODS[method]),
                    ("http_response_status_class", STATUS_CLASSES[status]),
                ];
                if result.is_ok() {
                    result = metric.encode_family(&labels).and_then(|mut family| {
                        encode_histogram(&mut family, &recorder.bounds, histogram)
                    });
                }
            });
            result?;
        }
        encoder
            .encode_descriptor(
                "seawall_http_client_requests_in_flight",
                "Logical HTTP client requests in flight, until their response body is read or dropped.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&recorder.in_flight())?;
        {
            let mut metric = encoder.encode_descriptor(
                "seawall_http_client_requests",
                "Finished logical HTTP client requests, by method, status class and outcome.",
                None,
                MetricType::Counter,
            )?;
            let mut result = Ok(());
            recorder.for_each_count(|method, status, outcome, count| {
                let labels = [
                    ("http_request_method", METHODS[method]),
                    ("http_response_status_class", STATUS_CLASSES[status]),
                    ("outcome", OUTCOMES[outcome]),
                ];
                if result.is_ok() {
                    result = metric.encode_family(&labels).and_then(|mut family| {
                        family.encode_counter::<NoLabelSet, _, u64>(&count, None)
                    });
                }
            });
            result?;
        }
        {
            let mut metric = encoder.encode_descriptor(
                "seawall_http_client_queue_wait",
                "Time a logical request's attempts waited in a rate limiter, per response.",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            encode_histogram(&mut metric, &recorder.bounds, &recorder.queue_wait())?;
        }
        {
            let mut metric = encoder.encode_descriptor(
                "seawall_http_client_request_attempts",
                "Attempts per logical request that ended in a response or an error, the first included.",
                None,
                MetricType::Histogram,
            )?;
            let read = recorder.attempts();
            let buckets: Vec<(f64, u64)> = ATTEMPTS_BUCKETS
                .iter()
                .map(|bound| *bound as f64)
                .chain([f64::INFINITY])
                .zip(read.counts.iter().copied())
                .collect();
            metric.encode_histogram::<NoLabelSet>(
                read.sum() as f64,
                read.count(),
                &buckets,
                None,
            )?;
        }
        if let Some(histogram) = &recorder.body_latency() {
            let mut metric = encoder.encode_descriptor(
                "seawall_http_client_response_body_duration",
                "Duration of logical HTTP client requests, from the call to the end of the response body.",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            encode_histogram(&mut metric, &recorder.bounds, histogram)?;
        }
        let sources = self
            .sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        encode_sources(&sources, &mut encoder)?;
        Ok(())
    }
}

/// An attempt histogram's labels: method, status code and error type, then the host's.
pub(crate) fn attempt_labels(
    series: &HostSeries,
    slot: usize,
    method: usize,
) -> Vec<(&'static str, String)> {
    let mut labels = vec![("http_request_method", METHODS[method].to_owned())];
    if let Some(code) = slot_status(slot) {
        labels.push(("http_response_status_code", code.clone()));
        // OpenTelemetry: an error status is its own error type.
        if slot_is_error(slot) {
            labels.push(("error_type", code));
        }
    } else {
        labels.push(("error_type", slot_error(slot).to_owned()));
    }
    labels.extend(host_labels(series));
    labels
}

/// A host's labels: `server_address`, `server_port` (when known) and `url_scheme`.
pub(crate) fn host_labels(series: &HostSeries) -> Vec<(&'static str, String)> {
    let mut labels = vec![("server_address", series.address.to_string())];
    if let Some(port) = series.port {
        labels.push(("server_port", port.to_string()));
    }
    labels.push(("url_scheme", series.scheme.to_owned()));
    labels
}

/// Whether a host's entry has anything to show (an `_OTHER` entry may have nothing).
pub(crate) fn used(series: &HostSeries) -> bool {
    let mut any = series.active() != 0;
    series.for_each(|_, _, _| any = true);
    any
}

/// The per-attempt figures: OpenTelemetry's HTTP client metrics and the upstream quotas.
fn encode_attempts(
    attempts: &AttemptRecorder,
    encoder: &mut DescriptorEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    {
        let mut metric = encoder.encode_descriptor(
            "http_client_request_duration",
            "Duration of HTTP client requests: one sample per attempt, from sending to the response headers or the error.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        let mut result = Ok(());
        attempts.hosts.for_each(|series| {
            series.for_each(|slot, method, histogram| {
                if result.is_err() {
                    return;
                }
                let labels = attempt_labels(series, slot, method);
                let (counts, sum) = histogram.read();
                let buckets: Vec<(f64, u64)> = ATTEMPT_BOUNDS
                    .iter()
                    .copied()
                    .chain([f64::INFINITY])
                    .zip(counts)
                    .collect();
                result = metric.encode_family(&labels).and_then(|mut family| {
                    family.encode_histogram::<NoLabelSet>(sum, counts.iter().sum(), &buckets, None)
                });
            });
        });
        result?;
    }
    {
        let mut metric = encoder.encode_descriptor(
            "http_client_active_requests",
            "HTTP client attempts sent and not yet answered (response headers) or failed.",
            None,
            MetricType::Gauge,
        )?;
        let mut result = Ok(());
        attempts.hosts.for_each(|series| {
            if result.is_ok() && used(series) {
                result = metric
                    .encode_family(&host_labels(series))
                    .and_then(|mut family| family.encode_gauge(&series.active()));
            }
        });
        result?;
    }
    for (name, help, read) in [
        (
            "seawall_upstream_quota_limit",
            "The request quota the upstream last stated (RateLimit, X-RateLimit-Limit headers).",
            (|series| series.quota_limit.load(Ordering::Relaxed)) as fn(&HostSeries) -> u64,
        ),
        (
            "seawall_upstream_quota_remaining",
            "What the upstream last said was left of its quota (RateLimit, X-RateLimit-Remaining headers).",
            |series| series.quota_remaining.load(Ordering::Relaxed),
        ),
    ] {
        let mut stated = Vec::new();
        attempts.hosts.for_each(|series| {
            let value = read(series);
            if value != UNSTATED {
                stated.push((host_labels(series), value));
            }
        });
        if stated.is_empty() {
            continue;
        }
        let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (labels, value) in stated {
            metric
                .encode_family(&labels)?
                .encode_gauge(&(value.min(i64::MAX as u64) as i64))?;
        }
    }
    Ok(())
}

/// The status code a slot stands for (`_OTHER` for a code outside 100 to 599), or `None` for
/// an error slot.
fn slot_status(slot: usize) -> Option<String> {
    match slot {
        0..STATUS_SLOTS => Some((slot + 100).to_string()),
        ODD_STATUS_SLOT | OTHER_SUCCESS_SLOT => Some(OTHER_HOST.to_owned()),
        _ => None,
    }
}

/// One figure, owned, so that a source's figures can be grouped by name.
struct Owned {
    name: &'static str,
    help: &'static str,
    kind: FigureKind,
    labels: Vec<(&'static str, String)>,
    value: f64,
}

/// Whether a duplicate series has been reported in the log (once a process).
static DUPLICATE_SERIES_TOLD: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

fn encode_sources(
    sources: &[Arc<dyn FigureSource>],
    encoder: &mut DescriptorEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    let mut figures = Vec::new();
    for source in sources {
        source.figures(&mut |figure| {
            figures.push(Owned {
                name: figure.name,
                help: figure.help,
                kind: figure.kind,
                labels: figure
                    .labels
                    .iter()
                    .map(|(key, value)| (*key, (*value).to_owned()))
                    .collect(),
                value: figure.value,
            })
        });
    }
    // An exposition gives each name's values together, under one `TYPE` line: a name given
    // again later (by a source whose figures come from several layers, or by a second
    // source of the same kind, two breakers' handles, say) has its values brought together,
    // in the order the names first came.
    let mut names: Vec<&'static str> = Vec::new();
    for figure in &figures {
        if !names.contains(&figure.name) {
            names.push(figure.name);
        }
    }
    figures.sort_by_cached_key(|figure| names.iter().position(|name| *name == figure.name));
    for group in figures.chunk_by(|a, b| a.name == b.name) {
        let first = &group[0];
        let kind = match first.kind {
            FigureKind::Counter => MetricType::Counter,
            FigureKind::Gauge => MetricType::Gauge,
        };
        let mut metric = encoder.encode_descriptor(first.name, first.help, None, kind)?;
        // One series per label set: two sources that report the same series (two breakers
        // that are not keyed) would make a scrape that Prometheus refuses in part. The first
        // is kept, and a user is told once how to tell them apart.
        let mut series = std::collections::HashSet::with_capacity(group.len());
        for figure in group {
            if !series.insert(&figure.labels) {
                if !DUPLICATE_SERIES_TOLD.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!(
                        name = figure.name,
                        "two included sources report the same series; the second is left out \
                         of the exposition (include each with a label of its own: \
                         `seawall_core::Labelled`)"
                    );
                }
                continue;
            }
            if figure.labels.is_empty() {
                encode_value(&mut metric, figure)?;
            } else {
                encode_value(&mut metric.encode_family(&figure.labels)?, figure)?;
            }
        }
    }
    Ok(())
}

fn encode_value(
    encoder: &mut prometheus_client::encoding::MetricEncoder<'_>,
    figure: &Owned,
) -> Result<(), std::fmt::Error> {
    match figure.kind {
        // Whole counts print as integers, as counters usually do.
        FigureKind::Counter if figure.value.fract() == 0.0 && figure.value < 2e15 => {
            encoder.encode_counter::<NoLabelSet, _, f64>(&(figure.value as u64), None)
        }
        FigureKind::Counter => encoder.encode_counter::<NoLabelSet, _, f64>(&figure.value, None),
        FigureKind::Gauge => encoder.encode_gauge(&figure.value),
    }
}

/// Appends to the attempt histogram's bucket lines their exemplars (OpenMetrics: `# {labels}
/// value timestamp` after the count, on the bucket the value falls in).
pub(crate) fn add_exemplars(text: &mut String, attempts: &AttemptRecorder) {
    let mut wanted = Vec::new();
    attempts.hosts.for_each(|series| {
        series.for_each(|slot, method, histogram| {
            if let Some(exemplar) = histogram.exemplar.read() {
                let labels: Vec<String> = attempt_labels(series, slot, method)
                    .into_iter()
                    .map(|(key, value)| format!("{key}=\"{value}\""))
                    .collect();
                wanted.push((labels.join(","), exemplar, false));
            }
        });
    });
    if wanted.is_empty() {
        return;
    }
    let mut out = String::with_capacity(text.len() + wanted.len() * 96);
    for line in text.lines() {
        out.push_str(line);
        let bucket = line
            .strip_prefix("http_client_request_duration_seconds_bucket{le=\"")
            .and_then(|rest| rest.split_once("\","))
            .and_then(|(le, tail)| Some((le, tail.rsplit_once("} ")?.0)));
        if let Some((le, labels)) = bucket {
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::NAN)
            };
            for (want, exemplar, placed) in &mut wanted {
                let seconds = exemplar.nanos as f64 / 1e9;
                if !*placed && want == labels && seconds <= le {
                    *placed = true;
                    out.push_str(&format!(
                        " # {{trace_id=\"{:032x}\"}} {seconds} {}.{:03}",
                        exemplar.trace_id,
                        exemplar.unix_millis / 1000,
                        exemplar.unix_millis % 1000
                    ));
                }
            }
        }
        out.push('\n');
    }
    *text = out;
}

/// Rewrites an OpenMetrics text exposition in the Prometheus text format 0.0.4.
///
/// The two differ, for what this crate writes, only in how counter families are named in
/// `HELP` and `TYPE` lines (OpenMetrics leaves out the `_total` of the samples) and in the
/// closing `# EOF`.
pub(crate) fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len() + counters.len() * 16);
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(renamed) => text.push_str(&renamed),
            // The Prometheus text format has no exemplars.
            None => text.push_str(match line.split_once(" # {") {
                Some((sample, _exemplar)) if !line.starts_with('#') => sample,
                _ => line,
            }),
        }
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::to_prometheus_text;

    #[test]
    fn counters_get_their_total_suffix_and_eof_goes() {
        let openmetrics = "# HELP a_requests Requests.\n# TYPE a_requests counter\na_requests_total 3\n\
                           # HELP b_depth Depth.\n# TYPE b_depth gauge\nb_depth 1\n# EOF\n";
        assert_eq!(
            to_prometheus_text(openmetrics),
            "# HELP a_requests_total Requests.\n# TYPE a_requests_total counter\na_requests_total 3\n\
             # HELP b_depth Depth.\n# TYPE b_depth gauge\nb_depth 1\n"
        );
    }
}
