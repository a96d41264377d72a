//! [`AttemptMetricsLayer`]: one record per physical request, under OpenTelemetry's HTTP
//! client names, placed where the request is sent (below retries and the rate limiter).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use seawall_core::{Classify, FailureKind, HintPolicy, HttpClassifier, Outcome, ServerHints};
use tower::{Layer, Service};

use crate::clock::Clock;
use crate::hosts::{
    CANCELLED_SLOT, FIRST_ERROR_SLOT, HostRef, HostSeries, HostTable, slot_error, status_slot,
};
use crate::labels::method_index;

/// The figures every attempt layer made from one [`MetricsLayer`](crate::MetricsLayer)
/// records into.
#[derive(Debug)]
pub(crate) struct AttemptRecorder {
    pub(crate) hosts: HostTable,
}

/// What an attempt records with besides its host's entry. Every handle on a host holds it,
/// so an attempt holds no reference to the recorder itself, which every thread would share.
#[derive(Debug)]
pub(crate) struct AttemptShared {
    pub(crate) clock: Clock,
    hints: HintPolicy,
    pub(crate) failures: FailureRing,
    /// Where an exemplar's trace id comes from, when exemplars are on.
    pub(crate) trace_id: Option<TraceIdFn>,
}

impl AttemptShared {
    pub(crate) fn new(clock: Clock, trace_id: Option<TraceIdFn>) -> Self {
        Self {
            clock,
            hints: HintPolicy::default(),
            failures: FailureRing::new(),
            trace_id,
        }
    }
}

/// Returns the trace id of the current span, if it has one (see
/// [`MetricsBuilder::exemplars`](crate::MetricsBuilder::exemplars)).
pub type TraceIdFn = fn() -> Option<u128>;

impl AttemptRecorder {
    pub(crate) fn new(max_hosts: usize, clock: Clock, trace_id: Option<TraceIdFn>) -> Self {
        let shared = Arc::new(AttemptShared::new(clock, trace_id));
        Self {
            hosts: HostTable::new(max_hosts, shared),
        }
    }
}

/// One failed attempt, as the report lists it.
#[derive(Debug, Clone)]
pub(crate) struct FailureRecord {
    pub(crate) at: std::time::SystemTime,
    pub(crate) host: Arc<HostSeries>,
    pub(crate) kind: &'static str,
    pub(crate) status: Option<u16>,
}

/// The last [`FAILURE_RING`] failed attempts. Written only when an attempt fails; a writer
/// that finds its slot busy (another failure being written there, or a report reading it)
/// skips the record rather than wait.
#[derive(Debug)]
pub(crate) struct FailureRing {
    next: std::sync::atomic::AtomicUsize,
    slots: Box<[std::sync::Mutex<Option<FailureRecord>>]>,
}

/// How many recent failures the report keeps.
pub const FAILURE_RING: usize = 32;

impl FailureRing {
    fn new() -> Self {
        Self {
            next: std::sync::atomic::AtomicUsize::new(0),
            slots: (0..FAILURE_RING)
                .map(|_| std::sync::Mutex::new(None))
                .collect(),
        }
    }

    #[cold]
    fn push(&self, record: FailureRecord) {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % FAILURE_RING;
        if let Ok(mut slot) = self.slots[index].try_lock() {
            *slot = Some(record);
        }
    }

    /// The failures kept, oldest first.
    pub(crate) fn read(&self) -> Vec<FailureRecord> {
        let mut records: Vec<FailureRecord> = self
            .slots
            .iter()
            .filter_map(|slot| {
                slot.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone()
            })
            .collect();
        records.sort_by_key(|record| record.at);
        records
    }
}

/// Records every attempt through the services it wraps: `http.client.request.duration` and
/// `http.client.active_requests` with OpenTelemetry's attributes, and the upstream's stated
/// quota per host.
///
/// Made by [`MetricsLayer::attempts`](crate::MetricsLayer::attempts), so that its figures join
/// that layer's exposition and report. Place it just above the client, below the retry layer
/// and the rate limiter: each resend is then one sample, and time spent waiting for a token
/// or a backoff is not upstream latency.
#[derive(Clone)]
pub struct AttemptMetricsLayer<C = HttpClassifier> {
    pub(crate) recorder: Arc<AttemptRecorder>,
    classifier: C,
}

impl<C> std::fmt::Debug for AttemptMetricsLayer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttemptMetricsLayer")
            .field("hosts", &self.recorder.hosts.hosts())
            .finish_non_exhaustive()
    }
}

impl AttemptMetricsLayer {
    pub(crate) fn new(recorder: Arc<AttemptRecorder>) -> Self {
        Self {
            recorder,
            classifier: HttpClassifier,
        }
    }
}

impl<C> AttemptMetricsLayer<C> {
    /// Classifies attempts that end in an error with `classifier` (its failure kind is the
    /// `error_type` label) instead of the default rules.
    pub fn classifier<C2>(self, classifier: C2) -> AttemptMetricsLayer<C2> {
        AttemptMetricsLayer {
            recorder: self.recorder,
            classifier,
        }
    }
}

impl<S, C: Clone> Layer<S> for AttemptMetricsLayer<C> {
    type Service = AttemptMetrics<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        AttemptMetrics {
            inner,
            recorder: Arc::clone(&self.recorder),
            classifier: self.classifier.clone(),
        }
    }
}

/// Records every attempt through it. See [`AttemptMetricsLayer`].
#[derive(Clone)]
pub struct AttemptMetrics<S, C = HttpClassifier> {
    inner: S,
    recorder: Arc<AttemptRecorder>,
    classifier: C,
}

impl<S: std::fmt::Debug, C> std::fmt::Debug for AttemptMetrics<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttemptMetrics")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, C> AttemptMetrics<S, C> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S, C, ReqBody, ResBody> Service<Request<ReqBody>> for AttemptMetrics<S, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    C: Classify<Response<ResBody>, S::Error> + Clone,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = AttemptMetricsFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let method = method_index(request.method());
        let span = crate::trace::attempt_span(&request, method);
        let host = self.recorder.hosts.entry(request.uri());
        let stripe = host.series.start();
        let pending = AttemptPending {
            method,
            started: host.shared.clock.attempt_start(),
            host: Some(host),
            stripe,
            span,
        };
        let inner = {
            let _entered = pending.span.enter();
            self.inner.call(request)
        };
        AttemptMetricsFuture {
            inner,
            pending,
            classifier: self.classifier.clone(),
        }
    }
}

/// What an attempt records even when its future is dropped.
#[derive(Debug)]
struct AttemptPending {
    /// The thread's handle on the host's entry, while the attempt is active.
    host: Option<Arc<HostRef>>,
    /// The stripe of the host's active count the attempt was counted on.
    stripe: usize,
    method: usize,
    started: u64,
    span: tracing::Span,
}

impl AttemptPending {
    fn finish(&mut self, slot: usize) -> Option<Arc<HostRef>> {
        let host = self.host.take()?;
        let (series, shared) = (&host.series, &host.shared);
        if slot >= FIRST_ERROR_SLOT {
            crate::trace::record_end(&self.span, None, slot_error(slot));
        }
        let elapsed = shared.clock.attempt_end().saturating_sub(self.started);
        let histogram = series.record(slot, self.method, elapsed);
        // An exemplar only for an attempt a subscriber traces, inside its span.
        if let Some(trace_id) = shared.trace_id
            && !self.span.is_disabled()
            && let Some(trace_id) = self.span.in_scope(trace_id)
        {
            let unix_millis = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_millis() as u64);
            histogram.exemplar.write(crate::hosts::Exemplar {
                trace_id,
                nanos: elapsed,
                unix_millis,
            });
        }
        series.end(self.stripe);
        Some(host)
    }
}

impl Drop for AttemptPending {
    fn drop(&mut self) {
        // Still active: the attempt was cancelled before its answer.
        if let Some(host) = self.finish(CANCELLED_SLOT) {
            host.shared.failures.push(FailureRecord {
                at: std::time::SystemTime::now(),
                host: Arc::clone(&host.series),
                kind: "cancelled",
                status: None,
            });
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of an [`AttemptMetrics`] call.
    pub struct AttemptMetricsFuture<F, C> {
        #[pin]
        inner: F,
        pending: AttemptPending,
        classifier: C,
    }
}

impl<F, C, B, E> Future for AttemptMetricsFuture<F, C>
where
    F: Future<Output = Result<Response<B>, E>>,
    C: Classify<Response<B>, E>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = {
            let _entered = this.pending.span.enter();
            ready!(this.inner.poll(cx))
        };
        let outcome = this.classifier.classify(&result);
        let slot = match &result {
            Ok(response) => status_slot(response.status()),
            Err(_) => {
                let kind = match outcome {
                    Outcome::Failure(kind) => kind,
                    Outcome::Success | Outcome::Ignored => FailureKind::Other,
                };
                FIRST_ERROR_SLOT + kind.index()
            }
        };
        if let (Outcome::Failure(kind), Some(host)) = (outcome, &this.pending.host) {
            host.shared.failures.push(FailureRecord {
                at: std::time::SystemTime::now(),
                host: Arc::clone(&host.series),
                kind: kind.as_str(),
                status: result.as_ref().ok().map(|r| r.status().as_u16()),
            });
        }
        if let Ok(response) = &result {
            crate::trace::record_end(&this.pending.span, Some(response.status()), "");
        }
        if let (Some(host), Ok(response)) = (this.pending.finish(slot), &result)
            && states_quota(response)
        {
            let hints = ServerHints::from_response(response, &host.shared.hints);
            // Stored only when they change: the host's entry is read by every attempt.
            for (figure, stated) in [
                (&host.series.quota_limit, hints.limit),
                (&host.series.quota_remaining, hints.remaining),
            ] {
                if let Some(value) = stated
                    && figure.load(Ordering::Relaxed) != value
                {
                    figure.store(value, Ordering::Relaxed);
                }
            }
        }
        Poll::Ready(result)
    }
}

/// Whether a response may state its upstream's quota: a scan of its header names, without
/// hashing one, so that the headers are parsed only when there is something to read.
#[inline]
fn states_quota<B>(response: &Response<B>) -> bool {
    response.headers().keys().any(|name| {
        let name = name.as_str();
        name.starts_with("ratelimit") || name.starts_with("x-ratelimit")
    })
}
