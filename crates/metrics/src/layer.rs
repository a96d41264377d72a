//! [`MetricsLayer`] and its builder.

use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::registry::Registry;
use seawall_core::{ConfigError, FigureSource, HttpClassifier};
use tower::Layer;

use crate::attempt::{AttemptMetricsLayer, AttemptRecorder};
use crate::clock::{Clock, LatencyClock};
use crate::export::{Exporter, Sources};
use crate::hosts::DEFAULT_MAX_HOSTS;
use crate::recorder::{DEFAULT_BUCKETS, Recorder, RecorderRefs};
use crate::service::Metrics;
use crate::snapshot::Snapshot;

/// Records requests through the services it wraps. Clones share one set of figures.
#[derive(Clone)]
pub struct MetricsLayer<C = HttpClassifier> {
    recorder: Arc<Recorder>,
    /// The per-attempt figures of the attempt layers made by [`attempts`](Self::attempts).
    attempts: Arc<AttemptRecorder>,
    /// What the services' requests hold the recorder by.
    refs: Arc<RecorderRefs>,
    sources: Sources,
    /// What the previous publish to the `metrics` facade handed over.
    #[cfg(feature = "metrics-facade")]
    published: Arc<crate::facade::Published>,
    classifier: C,
}

impl<C> std::fmt::Debug for MetricsLayer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsLayer")
            .field("snapshot", &self.snapshot())
            .finish_non_exhaustive()
    }
}

impl MetricsLayer {
    /// Starts a configuration: OpenTelemetry's latency buckets, the default HTTP
    /// classification, no time-to-body-end histogram.
    pub fn builder() -> MetricsBuilder {
        MetricsBuilder {
            buckets: DEFAULT_BUCKETS.to_vec(),
            body_duration: false,
            clock: LatencyClock::default(),
            max_hosts: DEFAULT_MAX_HOSTS,
            exemplars: None,
            classifier: HttpClassifier,
        }
    }
}

impl<C> MetricsLayer<C> {
    /// Adds another layer's figures (its handle) to this layer's exposition. Two sources of
    /// one kind that are not keyed (a breaker per dependency) report the same series: include
    /// each with a label of its own, `seawall_core::Labelled::new("breaker", "payments",
    /// handle)`; a series reported twice is written once, the first source's.
    pub fn include(&self, source: impl FigureSource + 'static) {
        self.sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::new(source));
    }

    /// The layer that records each attempt (each physical request) under OpenTelemetry's
    /// HTTP client names, into this layer's exposition: place it just above the client,
    /// below the retry layer and the rate limiter. Every call returns a layer over the same
    /// figures.
    pub fn attempts(&self) -> AttemptMetricsLayer {
        AttemptMetricsLayer::new(Arc::clone(&self.attempts))
    }

    /// Every layer's figures now, as one typed snapshot: the logical requests, the attempts by
    /// host with the upstreams' stated quotas, the included layers' figures (retry, rate
    /// limiter, circuit breakers) and the most recent failed attempts. `Display` prints it as
    /// a compact table.
    pub fn report(&self) -> crate::Report {
        crate::Report::read(&self.recorder, &self.attempts, &self.sources)
    }

    /// Hands every figure (this layer's, its attempt layers' and the included layers') to the
    /// `metrics` recorder installed now, with its description (feature `metrics-facade`).
    ///
    /// Nothing goes through the facade per request: call this periodically (see
    /// [`spawn_facade_publisher`](Self::spawn_facade_publisher)) or before each scrape of
    /// the recorder. A recorder installed after the stack was built therefore receives
    /// everything counted since the start. Counters are set to their totals, gauges to their
    /// values; histograms receive the samples recorded since the previous call, each at its
    /// bucket's upper bound (twice the last bound for the `+Inf` bucket): with the same
    /// bounds the recorder's bucket counts are exact, and its sum is an upper bound.
    #[cfg(feature = "metrics-facade")]
    pub fn publish_to_facade(&self) {
        crate::facade::publish(
            &self.recorder,
            &self.attempts,
            &self.sources,
            &self.published,
        );
    }

    /// Runs [`publish_to_facade`](Self::publish_to_facade) every `period` on the current
    /// tokio runtime, until the returned task is aborted (feature `metrics-facade`).
    #[cfg(feature = "metrics-facade")]
    pub fn spawn_facade_publisher(
        &self,
        period: std::time::Duration,
    ) -> tokio::task::JoinHandle<()> {
        let (recorder, attempts) = (Arc::clone(&self.recorder), Arc::clone(&self.attempts));
        let (sources, published) = (Arc::clone(&self.sources), Arc::clone(&self.published));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            loop {
                ticks.tick().await;
                crate::facade::publish(&recorder, &attempts, &sources, &published);
            }
        })
    }

    /// The request figures now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::read(&self.recorder)
    }

    /// Registers this layer's figures, and those it includes, into `registry`: they are read
    /// on each scrape.
    pub fn register(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(Exporter {
            recorder: Arc::clone(&self.recorder),
            attempts: Arc::clone(&self.attempts),
            sources: Arc::clone(&self.sources),
        }));
    }

    /// The same figures in the Prometheus text format 0.0.4 (`text/plain; version=0.0.4`),
    /// for scrapers and linters that do not read OpenMetrics, such as `promtool check
    /// metrics`: counter families are named with their `_total` suffix and there is no
    /// `# EOF` line.
    pub fn encode_prometheus_text(&self) -> String {
        crate::export::to_prometheus_text(&self.encode())
    }

    /// The OpenMetrics text exposition of this layer's figures and those it includes.
    pub fn encode(&self) -> String {
        let mut registry = Registry::default();
        self.register(&mut registry);
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        crate::export::add_exemplars(&mut text, &self.attempts);
        text
    }
}

impl<S, C: Clone> Layer<S> for MetricsLayer<C> {
    type Service = Metrics<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Metrics::new(inner, self.classifier.clone(), Arc::clone(&self.refs))
    }
}

/// Configures a [`MetricsLayer`].
#[derive(Debug, Clone)]
pub struct MetricsBuilder<C = HttpClassifier> {
    buckets: Vec<f64>,
    body_duration: bool,
    clock: LatencyClock,
    max_hosts: usize,
    exemplars: Option<crate::attempt::TraceIdFn>,
    classifier: C,
}

impl<C> MetricsBuilder<C> {
    /// The latency histogram's bucket bounds in seconds: 1 to 64 finite bounds, strictly
    /// increasing, from 1 µs to 1 day.
    pub fn buckets(mut self, bounds: impl IntoIterator<Item = f64>) -> Self {
        self.buckets = bounds.into_iter().collect();
        self
    }

    /// What times requests (default [`LatencyClock::Tsc`]); [`LatencyClock::Tokio`] for tests
    /// that time requests on tokio's paused clock.
    pub fn clock(mut self, clock: LatencyClock) -> Self {
        self.clock = clock;
        self
    }

    /// The most hosts a per-host series is kept for (default 100, from 1 to 10,000); the
    /// attempts to any host beyond are recorded under `server_address="_OTHER"`. A host kept
    /// holds about 9 KB, and 5 KB more for each status code (or failure kind) its attempts
    /// have ended with: its histograms are kept in four stripes, so that threads sending to
    /// one host do not write the same cache lines.
    pub fn max_hosts(mut self, max_hosts: usize) -> Self {
        self.max_hosts = max_hosts;
        self
    }

    /// Attaches an OpenMetrics exemplar with the trace id to the attempt histogram
    /// (`http_client_request_duration_seconds`): for an attempt whose span a subscriber
    /// records, `trace_id` is called inside that span, and the attempt's duration is kept as
    /// its histogram's exemplar with the id it returns (`None`: no exemplar). With
    /// `tracing-opentelemetry`, return the OpenTelemetry trace id of `Span::current()`.
    /// Exemplars appear in [`encode`](MetricsLayer::encode) (not in the Prometheus text
    /// format, which has none).
    pub fn exemplars(mut self, trace_id: crate::attempt::TraceIdFn) -> Self {
        self.exemplars = Some(trace_id);
        self
    }

    /// Also records the time from sending to the end of the response body.
    pub fn body_duration(mut self, enabled: bool) -> Self {
        self.body_duration = enabled;
        self
    }

    /// Classifies requests with `classifier` instead of the default HTTP rules.
    pub fn classifier<C2>(self, classifier: C2) -> MetricsBuilder<C2> {
        MetricsBuilder {
            buckets: self.buckets,
            body_duration: self.body_duration,
            clock: self.clock,
            max_hosts: self.max_hosts,
            exemplars: self.exemplars,
            classifier,
        }
    }

    /// Validates the configuration and builds the layer.
    pub fn build(self) -> Result<MetricsLayer<C>, ConfigError> {
        let buckets = &self.buckets;
        let valid = (1..=64).contains(&buckets.len())
            && buckets.iter().all(|b| (1e-6..=86_400.0).contains(b))
            && buckets.windows(2).all(|pair| pair[0] < pair[1]);
        if !valid {
            return Err(ConfigError::new(
                "buckets",
                buckets,
                "1 to 64 strictly increasing bounds from 0.000001 to 86400 seconds",
            ));
        }
        seawall_core::check_range("max_hosts", self.max_hosts, 1, 10_000, "1 to 10000 hosts")?;
        let attempts = Arc::new(AttemptRecorder::new(
            self.max_hosts,
            Clock::new(self.clock),
            self.exemplars,
        ));
        let recorder = Recorder::new(self.buckets, self.body_duration, self.clock);
        let recorder = Arc::new(recorder);
        Ok(MetricsLayer {
            refs: Arc::new(RecorderRefs::new(Arc::clone(&recorder))),
            recorder,
            attempts,
            sources: Arc::new(Mutex::new(Vec::new())),
            #[cfg(feature = "metrics-facade")]
            published: Arc::default(),
            classifier: self.classifier,
        })
    }
}
