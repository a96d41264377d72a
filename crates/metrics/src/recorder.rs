//! The request figures: fixed arrays of atomics, one slot per label combination.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use thread_local::ThreadLocal;

use crate::clock::{Clock, LatencyClock};
use crate::labels::{METHODS, OUTCOMES, STATUS_CLASSES};

/// Adds `by` to a counter of this thread's own shard. Only this thread writes the shard, so a
/// plain load and store cannot lose an update (readers on other threads see each store
/// whole), and it costs a fraction of a locked read-modify-write.
#[inline]
fn bump(counter: &AtomicU64, by: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

/// Moves a gauge of this thread's own shard by `by`, as [`bump`] does a counter.
#[inline]
fn shift(gauge: &AtomicI64, by: i64) {
    gauge.store(
        gauge.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

/// The OpenTelemetry recommendation for `http.client.request.duration`, in seconds.
pub const DEFAULT_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// The bucket bounds of the attempts-per-request histogram.
pub const ATTEMPTS_BUCKETS: [u64; 6] = [1, 2, 3, 4, 5, 10];

/// A histogram of durations (or of counts): a count per bucket (the last is `+Inf`) and the sum.
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

    /// Records `nanos`; called only by the thread that owns the histogram's shard.
    #[inline]
    fn record(&self, bounds_nanos: &[u64], nanos: u64) {
        // Few buckets: a linear scan beats a binary search and its branches.
        let bucket = bounds_nanos
            .iter()
            .position(|bound| nanos <= *bound)
            .unwrap_or(bounds_nanos.len());
        bump(&self.counts[bucket], 1);
        bump(&self.sum_nanos, nanos);
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

    /// The sum of the recorded values, for a histogram of counts.
    pub(crate) fn sum(&self) -> u64 {
        self.sum_nanos
    }

    /// The values recorded.
    pub(crate) fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

const METHOD_COUNT: usize = METHODS.len();
const STATUS_COUNT: usize = STATUS_CLASSES.len();
const OUTCOME_COUNT: usize = OUTCOMES.len();

/// One thread's share of every request figure. Each thread writes only its own shard, so
/// threads sending requests at once share no cache line and need no locked instruction;
/// readers add the shards up.
#[derive(Debug)]
#[repr(align(128))]
struct Shard {
    /// By method × status class × outcome.
    requests: Box<[AtomicU64]>,
    /// By method × status class.
    latency: Box<[Histogram]>,
    /// From the request to the end (or drop) of the response body, when enabled.
    body_latency: Option<Histogram>,
    /// Time the request's attempts waited in a rate limiter, per response.
    queue_wait: Histogram,
    /// Attempts per logical request that ended in a response or an error.
    attempts: Histogram,
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
            queue_wait: Histogram::new(buckets),
            attempts: Histogram::new(ATTEMPTS_BUCKETS.len()),
            in_flight: AtomicI64::new(0),
        }
    }
}

/// What a request holds to keep its recorder alive until its body ends.
///
/// Each thread has its own (see [`RecorderRefs`]), so the reference count a request takes and
/// gives back is written by one thread, unless the request ends on another (a work-stealing
/// runtime can move it): with one count per recorder, every request on every thread wrote
/// the same cache line twice and two threads recorded no faster than one.
/// Aligned so that no two threads' counts share a line.
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct RecorderRef {
    pub(crate) recorder: Arc<Recorder>,
}

/// The per-thread [`RecorderRef`]s of one layer, shared by its services.
#[derive(Debug)]
pub(crate) struct RecorderRefs {
    recorder: Arc<Recorder>,
    refs: ThreadLocal<Arc<RecorderRef>>,
}

impl RecorderRefs {
    pub(crate) fn new(recorder: Arc<Recorder>) -> Self {
        Self {
            recorder,
            refs: ThreadLocal::new(),
        }
    }

    /// This thread's reference, made the first time the thread starts a request.
    #[inline]
    pub(crate) fn get(&self) -> Arc<RecorderRef> {
        Arc::clone(self.refs.get_or(|| {
            Arc::new(RecorderRef {
                recorder: Arc::clone(&self.recorder),
            })
        }))
    }
}

/// Every request figure of one metrics layer.
///
/// Aligned to its own cache lines so that the reference counts of the `Arc`s holding it never
/// share a line with the fields every request reads (the shard table, the bounds, the clock).
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct Recorder {
    pub(crate) bounds: Vec<f64>,
    bounds_nanos: Vec<u64>,
    /// One shard per thread that has recorded; kept when the thread exits (its counts are
    /// part of the totals) and reused by a later thread.
    shards: ThreadLocal<Shard>,
    body_latency: bool,
    pub(crate) clock: Clock,
    minute: MinuteMarks,
}

/// Requests finished over the last minute, at one-second resolution, without a
/// read-modify-write per request: the first request of each second records the running total
/// as that second's mark (a load per request otherwise), and a minute's count is the total
/// now less the mark of the oldest second still inside the minute.
#[derive(Debug)]
struct MinuteMarks {
    /// The second of the newest mark.
    newest: AtomicU64,
    /// `second << 40 | total at that second's start`, in a ring indexed by second.
    marks: [AtomicU64; 64],
}

const MARK_TOTAL_BITS: u32 = 40;

impl MinuteMarks {
    fn new() -> Self {
        // Second 0 starts with a total of 0: an all-zero mark.
        Self {
            newest: AtomicU64::new(0),
            marks: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    #[inline]
    fn second(now: u64) -> u64 {
        now / 1_000_000_000
    }

    /// Called before a request is counted, with the total so far (read only when a new
    /// second starts).
    #[inline]
    fn before_count(&self, now: u64, total: impl FnOnce() -> u64) {
        let second = Self::second(now);
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

    fn last_minute(&self, now: u64, total: u64) -> u64 {
        let second = Self::second(now);
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
    pub(crate) fn new(bounds: Vec<f64>, body_latency: bool, clock: LatencyClock) -> Self {
        let bounds_nanos = bounds.iter().map(|s| (s * 1e9) as u64).collect();
        Self {
            bounds,
            bounds_nanos,
            shards: ThreadLocal::new(),
            body_latency,
            clock: Clock::new(clock),
            minute: MinuteMarks::new(),
        }
    }

    /// This thread's shard, made the first time the thread records.
    #[inline]
    fn shard(&self) -> &Shard {
        self.shards
            .get_or(|| Shard::new(self.bounds.len(), self.body_latency))
    }

    /// Counts a request in flight, and returns its start on the recorder's clock.
    #[inline]
    pub(crate) fn started(&self) -> u64 {
        shift(&self.shard().in_flight, 1);
        self.clock.now()
    }

    #[inline]
    pub(crate) fn finished(&self) {
        shift(&self.shard().in_flight, -1);
    }

    /// Records a request started at `started` and ended at `now` (on the recorder's clock)
    /// whose headers arrived, or that failed or was cancelled.
    #[inline]
    pub(crate) fn record(
        &self,
        method: usize,
        status: usize,
        outcome: usize,
        started: u64,
        now: u64,
    ) {
        let elapsed = now.saturating_sub(started);
        self.minute.before_count(now, || self.total());
        let series = method * STATUS_COUNT + status;
        let shard = self.shard();
        bump(&shard.requests[series * OUTCOME_COUNT + outcome], 1);
        shard.latency[series].record(&self.bounds_nanos, elapsed);
    }

    /// Records the end of the body of a request started at `started`.
    #[inline]
    pub(crate) fn record_body_end(&self, started: u64) {
        if let Some(histogram) = &self.shard().body_latency {
            histogram.record(&self.bounds_nanos, self.clock.now().saturating_sub(started));
        }
    }

    /// Records what a response's attempts waited in a rate limiter (zero when they did not)
    /// and how many attempts it took.
    #[inline]
    pub(crate) fn record_response(&self, wait: std::time::Duration, attempts: u32) {
        let nanos = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX);
        let shard = self.shard();
        shard.queue_wait.record(&self.bounds_nanos, nanos);
        shard
            .attempts
            .record(&ATTEMPTS_BUCKETS, u64::from(attempts));
    }

    /// Records how many attempts a request that ended in an error took.
    #[inline]
    pub(crate) fn record_attempts(&self, attempts: u32) {
        self.shard()
            .attempts
            .record(&ATTEMPTS_BUCKETS, u64::from(attempts));
    }

    /// The attempts-per-request histogram.
    pub(crate) fn attempts(&self) -> HistogramRead {
        let mut read = HistogramRead::empty(ATTEMPTS_BUCKETS.len());
        for shard in &self.shards {
            shard.attempts.add_to(&mut read);
        }
        read
    }

    /// The queue-wait histogram.
    pub(crate) fn queue_wait(&self) -> HistogramRead {
        let mut read = HistogramRead::empty(self.bounds.len());
        for shard in &self.shards {
            shard.queue_wait.add_to(&mut read);
        }
        read
    }

    pub(crate) fn in_flight(&self) -> i64 {
        self.shards
            .iter()
            .map(|shard| shard.in_flight.load(Ordering::Relaxed))
            .sum()
    }

    /// Requests finished in the last 60 seconds (the current second and the 59 before).
    pub(crate) fn last_minute(&self) -> u64 {
        self.minute.last_minute(self.clock.now(), self.total())
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
