//! The request figures: fixed arrays of atomics, one slot per label combination.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

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

    /// Adds this shard's per-bucket counts and sum to `into`.
    fn add_to(&self, into: &mut HistogramRead) {
        for (total, count) in into.counts.iter_mut().zip(self.counts.iter()) {
            *total += count.load(Ordering::Relaxed);
        }
        into.sum_nanos += self.sum_nanos.load(Ordering::Relaxed);
    }
}

/// A histogram read across every shard.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HistogramRead {
    /// Per-bucket counts (not cumulative); the last is `+Inf`.
    pub(crate) counts: Vec<u64>,
    sum_nanos: u64,
}

impl HistogramRead {
    fn empty(buckets: usize) -> Self {
        Self {
            counts: vec![0; buckets + 1],
            sum_nanos: 0,
        }
    }

    /// The sum of the recorded durations, in seconds.
    pub(crate) fn sum_seconds(&self) -> f64 {
        self.sum_nanos as f64 / 1e9
    }
}

const METHOD_COUNT: usize = METHODS.len();
const STATUS_COUNT: usize = STATUS_CLASSES.len();
const OUTCOME_COUNT: usize = OUTCOMES.len();

/// One shard of every request figure. Each thread writes to one shard, so threads sending
/// requests at once do not contend for the same cache lines; readers add the shards up.
#[derive(Debug)]
#[repr(align(128))]
struct Shard {
    /// By method × status class × outcome.
    requests: Box<[AtomicU64]>,
    /// By method × status class.
    latency: Box<[Histogram]>,
    /// From the request to the end (or drop) of the response body, when enabled.
    body_latency: Option<Histogram>,
    /// Requests started less requests finished on this shard's threads (negative when a
    /// request finishes on another thread than it started on; the sum is what counts).
    in_flight: AtomicI64,
}

impl Shard {
    fn new(buckets: usize, body_latency: bool) -> Self {
        Self {
            requests: (0..METHOD_COUNT * STATUS_COUNT * OUTCOME_COUNT)
                .map(|_| AtomicU64::new(0))
                .collect(),
            latency: (0..METHOD_COUNT * STATUS_COUNT)
                .map(|_| Histogram::new(buckets))
                .collect(),
            body_latency: body_latency.then(|| Histogram::new(buckets)),
            in_flight: AtomicI64::new(0),
        }
    }
}

/// Hands each thread a shard number, round robin, the first time it records.
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static THREAD_SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed);
}

/// Every request figure of one metrics layer.
#[derive(Debug)]
pub(crate) struct Recorder {
    pub(crate) bounds: Vec<f64>,
    bounds_nanos: Vec<u64>,
    /// A power of two of shards, as many as the threads likely to record at once (at most 8).
    shards: Box<[Shard]>,
    body_latency: bool,
    minute: MinuteMarks,
    #[cfg(feature = "metrics-facade")]
    facade: Option<crate::facade::FacadeHandles>,
}

/// Requests finished over the last minute, at one-second resolution, without a
/// read-modify-write per request: the first request of each second records the running total
/// as that second's mark (a load per request otherwise), and a minute's count is the total
/// now less the mark of the oldest second still inside the minute.
#[derive(Debug)]
struct MinuteMarks {
    origin: Instant,
    /// The second of the newest mark.
    newest: AtomicU64,
    /// `second << 40 | total at that second's start`, in a ring indexed by second.
    marks: [AtomicU64; 64],
}

const MARK_TOTAL_BITS: u32 = 40;

impl MinuteMarks {
    fn new(origin: Instant) -> Self {
        // Second 0 starts with a total of 0: an all-zero mark.
        Self {
            origin,
            newest: AtomicU64::new(0),
            marks: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    #[inline]
    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_secs()
    }

    /// Called before a request is counted, with the total so far (read only when a new
    /// second starts).
    #[inline]
    fn before_count(&self, now: Instant, total: impl FnOnce() -> u64) {
        let second = self.second(now);
        let newest = self.newest.load(Ordering::Relaxed);
        if second > newest
            && self
                .newest
                .compare_exchange(newest, second, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let mark = (second << MARK_TOTAL_BITS) | (total() & ((1 << MARK_TOTAL_BITS) - 1));
            self.marks[(second % 64) as usize].store(mark, Ordering::Relaxed);
        }
    }

    fn last_minute(&self, now: Instant, total: u64) -> u64 {
        let second = self.second(now);
        let oldest_inside = second.saturating_sub(59);
        self.marks
            .iter()
            .map(|mark| mark.load(Ordering::Relaxed))
            .filter(|mark| (oldest_inside..=second).contains(&(mark >> MARK_TOTAL_BITS)))
            .min_by_key(|mark| mark >> MARK_TOTAL_BITS)
            .map_or(0, |mark| {
                total.saturating_sub(mark & ((1 << MARK_TOTAL_BITS) - 1))
            })
    }
}

impl Recorder {
    pub(crate) fn new(bounds: Vec<f64>, body_latency: bool) -> Self {
        let bounds_nanos = bounds.iter().map(|s| (s * 1e9) as u64).collect();
        let buckets = bounds.len();
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let shards = threads.clamp(1, 8).next_power_of_two();
        Self {
            bounds,
            bounds_nanos,
            shards: (0..shards)
                .map(|_| Shard::new(buckets, body_latency))
                .collect(),
            body_latency,
            minute: MinuteMarks::new(Instant::now()),
            #[cfg(feature = "metrics-facade")]
            facade: None,
        }
    }

    /// Also records through the `metrics` facade, with handles resolved now.
    #[cfg(feature = "metrics-facade")]
    pub(crate) fn with_facade(mut self) -> Self {
        self.facade = Some(crate::facade::FacadeHandles::resolve());
        self
    }

    /// This thread's shard.
    #[inline]
    fn shard(&self) -> &Shard {
        let index = THREAD_SHARD.try_with(|shard| *shard).unwrap_or(0);
        &self.shards[index & (self.shards.len() - 1)]
    }

    #[inline]
    pub(crate) fn started(&self) {
        self.shard().in_flight.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics-facade")]
        if let Some(facade) = &self.facade {
            facade.started();
        }
    }

    #[inline]
    pub(crate) fn finished(&self) {
        self.shard().in_flight.fetch_sub(1, Ordering::Relaxed);
        #[cfg(feature = "metrics-facade")]
        if let Some(facade) = &self.facade {
            facade.finished();
        }
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
        self.minute.before_count(now, || self.total());
        let series = method * STATUS_COUNT + status;
        let shard = self.shard();
        shard.requests[series * OUTCOME_COUNT + outcome].fetch_add(1, Ordering::Relaxed);
        shard.latency[series].record(&self.bounds_nanos, elapsed);
        #[cfg(feature = "metrics-facade")]
        if let Some(facade) = &self.facade {
            facade.record(series, series * OUTCOME_COUNT + outcome, elapsed);
        }
    }

    #[inline]
    pub(crate) fn record_body_end(&self, elapsed: Duration) {
        if let Some(histogram) = &self.shard().body_latency {
            histogram.record(&self.bounds_nanos, elapsed);
        }
    }

    pub(crate) fn in_flight(&self) -> i64 {
        self.shards
            .iter()
            .map(|shard| shard.in_flight.load(Ordering::Relaxed))
            .sum()
    }

    /// Requests finished in the last 60 seconds (the current second and the 59 before).
    pub(crate) fn last_minute(&self) -> u64 {
        self.minute.last_minute(Instant::now(), self.total())
    }

    /// Requests finished so far.
    fn total(&self) -> u64 {
        self.shards
            .iter()
            .flat_map(|shard| shard.requests.iter())
            .map(|count| count.load(Ordering::Relaxed))
            .sum()
    }

    /// Calls `each(method, status, outcome, count)` for every combination seen.
    pub(crate) fn for_each_count(&self, mut each: impl FnMut(usize, usize, usize, u64)) {
        for i in 0..METHOD_COUNT * STATUS_COUNT * OUTCOME_COUNT {
            let count: u64 = self
                .shards
                .iter()
                .map(|shard| shard.requests[i].load(Ordering::Relaxed))
                .sum();
            if count > 0 {
                let (series, outcome) = (i / OUTCOME_COUNT, i % OUTCOME_COUNT);
                each(series / STATUS_COUNT, series % STATUS_COUNT, outcome, count);
            }
        }
    }

    /// Calls `each(method, status, histogram)` for every combination seen.
    pub(crate) fn for_each_latency(&self, mut each: impl FnMut(usize, usize, &HistogramRead)) {
        for series in 0..METHOD_COUNT * STATUS_COUNT {
            let mut read = HistogramRead::empty(self.bounds.len());
            for shard in &self.shards {
                shard.latency[series].add_to(&mut read);
            }
            if read.counts.iter().any(|count| *count > 0) {
                each(series / STATUS_COUNT, series % STATUS_COUNT, &read);
            }
        }
    }

    /// The body-duration histogram, when enabled.
    pub(crate) fn body_latency(&self) -> Option<HistogramRead> {
        self.body_latency.then(|| {
            let mut read = HistogramRead::empty(self.bounds.len());
            for histogram in self
                .shards
                .iter()
                .filter_map(|shard| shard.body_latency.as_ref())
            {
                histogram.add_to(&mut read);
            }
            read
        })
    }
}
