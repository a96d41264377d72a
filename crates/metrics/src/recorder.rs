//! The request figures: fixed arrays of atomics, one slot per label combination.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use seawall_core::SlidingCount;
use tokio::time::Instant;

use crate::labels::{METHODS, OUTCOMES, STATUS_CLASSES};

/// The OpenTelemetry recommendation for `http.client.request.duration`, in seconds.
pub const DEFAULT_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// A histogram of durations: a count per bucket (the last is `+Inf`) and the sum.
#[derive(Debug)]
pub(crate) struct Histogram {
    counts: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn new(buckets: usize) -> Self {
        Self {
            counts: (0..=buckets).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    #[inline]
    fn record(&self, bounds_nanos: &[u64], elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        // Few buckets: a linear scan beats a binary search and its branches.
        let bucket = bounds_nanos
            .iter()
            .position(|bound| nanos <= *bound)
            .unwrap_or(bounds_nanos.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Per-bucket counts (not cumulative), and the sum in seconds.
    pub(crate) fn read(&self) -> (Vec<u64>, f64) {
        let counts = self
            .counts
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .collect();
        (counts, self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9)
    }
}

const METHOD_COUNT: usize = METHODS.len();
const STATUS_COUNT: usize = STATUS_CLASSES.len();
const OUTCOME_COUNT: usize = OUTCOMES.len();

/// Every request figure of one metrics layer.
#[derive(Debug)]
pub(crate) struct Recorder {
    pub(crate) bounds: Vec<f64>,
    bounds_nanos: Vec<u64>,
    /// By method × status class × outcome.
    requests: Box<[AtomicU64]>,
    /// By method × status class.
    latency: Box<[Histogram]>,
    /// From the request to the end (or drop) of the response body, when enabled.
    pub(crate) body_latency: Option<Histogram>,
    in_flight: AtomicI64,
    last_minute: SlidingCount<60>,
}

impl Recorder {
    pub(crate) fn new(bounds: Vec<f64>, body_latency: bool) -> Self {
        let bounds_nanos = bounds.iter().map(|s| (s * 1e9) as u64).collect();
        let buckets = bounds.len();
        Self {
            bounds,
            bounds_nanos,
            requests: (0..METHOD_COUNT * STATUS_COUNT * OUTCOME_COUNT)
                .map(|_| AtomicU64::new(0))
                .collect(),
            latency: (0..METHOD_COUNT * STATUS_COUNT)
                .map(|_| Histogram::new(buckets))
                .collect(),
            body_latency: body_latency.then(|| Histogram::new(buckets)),
            in_flight: AtomicI64::new(0),
            last_minute: SlidingCount::new(Duration::from_secs(60), Instant::now()),
        }
    }

    #[inline]
    pub(crate) fn started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn finished(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Records a request whose headers arrived, or that failed or was cancelled.
    #[inline]
    pub(crate) fn record(
        &self,
        method: usize,
        status: usize,
        outcome: usize,
        elapsed: Duration,
        now: Instant,
    ) {
        let series = method * STATUS_COUNT + status;
        self.requests[series * OUTCOME_COUNT + outcome].fetch_add(1, Ordering::Relaxed);
        self.latency[series].record(&self.bounds_nanos, elapsed);
        self.last_minute.add(now, 1);
    }

    #[inline]
    pub(crate) fn record_body_end(&self, elapsed: Duration) {
        if let Some(histogram) = &self.body_latency {
            histogram.record(&self.bounds_nanos, elapsed);
        }
    }

    pub(crate) fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn last_minute(&self) -> u64 {
        self.last_minute.sum(Instant::now())
    }

    /// Calls `each(method, status, outcome, count)` for every combination seen.
    pub(crate) fn for_each_count(&self, mut each: impl FnMut(usize, usize, usize, u64)) {
        for (i, count) in self.requests.iter().enumerate() {
            let count = count.load(Ordering::Relaxed);
            if count > 0 {
                let (series, outcome) = (i / OUTCOME_COUNT, i % OUTCOME_COUNT);
                each(series / STATUS_COUNT, series % STATUS_COUNT, outcome, count);
            }
        }
    }

    /// Calls `each(method, status, histogram)` for every combination seen.
    pub(crate) fn for_each_latency(&self, mut each: impl FnMut(usize, usize, &Histogram)) {
        for (series, histogram) in self.latency.iter().enumerate() {
            if histogram
                .counts
                .iter()
                .any(|c| c.load(Ordering::Relaxed) > 0)
            {
                each(series / STATUS_COUNT, series % STATUS_COUNT, histogram);
            }
        }
    }
}
