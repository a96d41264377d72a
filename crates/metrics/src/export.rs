//! OpenMetrics exposition through `prometheus-client`.

use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use seawall_core::{FigureKind, FigureSource};

use crate::labels::{METHODS, OUTCOMES, STATUS_CLASSES};
use crate::recorder::{HistogramRead, Recorder};

/// The figure sources added to a metrics layer (other layers' handles).
pub(crate) type Sources = Arc<Mutex<Vec<Arc<dyn FigureSource>>>>;

/// Encodes a metrics layer's request figures and its sources' figures on each scrape.
pub(crate) struct Exporter {
    pub(crate) recorder: Arc<Recorder>,
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
        let recorder = &self.recorder;
        {
            let mut metric = encoder.encode_descriptor(
                "http_client_request_duration_seconds",
                "Duration of HTTP client requests, from sending to the response headers.",
                None,
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
                "http_client_active_requests",
                "HTTP client requests in flight, until their response body is read or dropped.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&recorder.in_flight())?;
        {
            let mut metric = encoder.encode_descriptor(
                "seawall_http_client_requests",
                "Finished HTTP client requests, by method, status class and outcome.",
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
        if let Some(histogram) = &recorder.body_latency() {
            let mut metric = encoder.encode_descriptor(
                "seawall_http_client_response_body_duration_seconds",
                "Duration of HTTP client requests, from sending to the end of the response body.",
                None,
                MetricType::Histogram,
            )?;
            encode_histogram(&mut metric, &recorder.bounds, histogram)?;
        }
        let sources = self
            .sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for source in sources {
            encode_source(&*source, &mut encoder)?;
        }
        Ok(())
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

fn encode_source(
    source: &dyn FigureSource,
    encoder: &mut DescriptorEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    let mut figures = Vec::new();
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
    for group in figures.chunk_by(|a, b| a.name == b.name) {
        let first = &group[0];
        let kind = match first.kind {
            FigureKind::Counter => MetricType::Counter,
            FigureKind::Gauge => MetricType::Gauge,
        };
        let mut metric = encoder.encode_descriptor(first.name, first.help, None, kind)?;
        for figure in group {
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
            None => text.push_str(line),
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
