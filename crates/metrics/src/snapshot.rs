//! [`Snapshot`]: the request figures in process, for a status line or a progress display.

use std::time::Duration;

use crate::labels::{OUTCOMES, STATUS_CLASSES};
use crate::recorder::Recorder;

/// The request figures at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Requests finished (a response, an error, or cancelled).
    pub total: u64,
    /// Requests by outcome label (`success`, `server_error`, ..., `cancelled`), in the order
    /// of [`OUTCOMES`](crate::labels::OUTCOMES).
    pub by_outcome: Vec<(&'static str, u64)>,
    /// Requests by status class (`1xx` ... `5xx`, `none`).
    pub by_status_class: Vec<(&'static str, u64)>,
    /// Share of finished requests whose outcome was `success`, from 0 to 1 (1 when none).
    pub success_rate: f64,
    /// Mean latency to the response headers (zero when no request finished).
    pub mean: Duration,
    /// Latency quantiles to the response headers, estimated from the histogram.
    pub p50: Duration,
    /// See `p50`.
    pub p95: Duration,
    /// See `p50`.
    pub p99: Duration,
    /// Requests finished in the last 60 seconds.
    pub requests_per_minute: u64,
    /// Requests sent and not yet finished (their response body not yet read or dropped).
    pub in_flight: i64,
}

impl Snapshot {
    pub(crate) fn read(recorder: &Recorder) -> Self {
        let mut by_outcome: Vec<_> = OUTCOMES.iter().map(|o| (*o, 0)).collect();
        let mut by_status_class: Vec<_> = STATUS_CLASSES.iter().map(|s| (*s, 0)).collect();
        recorder.for_each_count(|_, status, outcome, count| {
            by_outcome[outcome].1 += count;
            by_status_class[status].1 += count;
        });
        let total: u64 = by_outcome.iter().map(|(_, n)| n).sum();
        let mut buckets = vec![0u64; recorder.bounds.len() + 1];
        let mut sum_seconds = 0.0;
        recorder.for_each_latency(|_, _, histogram| {
            sum_seconds += histogram.sum_seconds();
            for (merged, count) in buckets.iter_mut().zip(&histogram.counts) {
                *merged += count;
            }
        });
        let quantile = |q| quantile(&recorder.bounds, &buckets, q);
        Self {
            total,
            success_rate: if total == 0 {
                1.0
            } else {
                by_outcome[0].1 as f64 / total as f64
            },
            by_outcome,
            by_status_class,
            mean: if total == 0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(sum_seconds / total as f64)
            },
            p50: quantile(0.50),
            p95: quantile(0.95),
            p99: quantile(0.99),
            requests_per_minute: recorder.last_minute(),
            in_flight: recorder.in_flight(),
        }
    }
}

/// The `q` quantile of a histogram, interpolated linearly inside its bucket as Prometheus's
/// `histogram_quantile` does; a quantile in the `+Inf` bucket is the last finite bound.
pub(crate) fn quantile(bounds: &[f64], counts: &[u64], q: f64) -> Duration {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return Duration::ZERO;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, count) in counts.iter().enumerate() {
        if (below + count) as f64 >= rank && *count > 0 {
            let Some(upper) = bounds.get(i) else {
                return Duration::from_secs_f64(bounds.last().copied().unwrap_or(0.0));
            };
            let lower = if i == 0 { 0.0 } else { bounds[i - 1] };
            let within = (rank - below as f64) / *count as f64;
            return Duration::from_secs_f64(lower + (upper - lower) * within.clamp(0.0, 1.0));
        }
        below += count;
    }
    Duration::from_secs_f64(bounds.last().copied().unwrap_or(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        let bounds = [0.1, 0.2, 0.4];
        // 10 in (0, 0.1], 10 in (0.1, 0.2], none above.
        let counts = [10, 10, 0, 0];
        assert_eq!(quantile(&bounds, &counts, 0.5), Duration::from_millis(100));
        assert_eq!(quantile(&bounds, &counts, 0.75), Duration::from_millis(150));
        assert_eq!(quantile(&bounds, &counts, 0.25), Duration::from_millis(50));
        assert_eq!(
            quantile(&bounds, &[0, 0, 0, 4], 0.5),
            Duration::from_millis(400)
        );
        assert_eq!(quantile(&bounds, &[0; 4], 0.5), Duration::ZERO);
    }
}
