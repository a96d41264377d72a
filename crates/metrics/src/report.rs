//! [`Report`]: one typed snapshot of every layer, and a compact table of it.

use std::fmt;
use std::sync::PoisonError;
use std::time::{Duration, SystemTime};

use seawall_core::{Figure, FigureSource};

use crate::attempt::AttemptRecorder;
use crate::export::Sources;
use crate::hosts::{ATTEMPT_BOUNDS, HostSeries, UNSTATED};
use crate::recorder::Recorder;
use crate::snapshot::{Snapshot, quantile};

/// Every layer's figures at one moment: what a status page or a demo prints.
///
/// Made by [`MetricsLayer::report`](crate::MetricsLayer::report); `Display` prints it as a
/// compact table. The retry, rate limiter and circuit breaker parts come from the handles
/// given to [`MetricsLayer::include`](crate::MetricsLayer::include), and are `None` (or
/// empty) for a layer not included.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Report {
    /// The logical requests: totals, success rate, mean and quantile latency, requests per
    /// minute, in flight.
    pub requests: Snapshot,
    /// What the logical requests' attempts waited in a rate limiter, per response.
    pub queue_wait: WaitSummary,
    /// Attempts per logical request that ended in a response or an error.
    pub attempts: AttemptsSummary,
    /// The attempts by host (at most the layer's `max_hosts`, then `_OTHER`).
    pub hosts: Vec<HostReport>,
    /// The retry layer's figures.
    pub retry: Option<RetrySummary>,
    /// The rate limiter's figures.
    pub rate_limit: Option<RateLimitSummary>,
    /// The circuit breakers' figures, over every key and per key.
    pub circuit_breaker: Option<BreakerSummary>,
    /// The most recent failed attempts (at most [`FAILURE_RING`](crate::FAILURE_RING)),
    /// oldest first.
    pub recent_failures: Vec<RecentFailure>,
}

/// Queue waits of logical requests.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct WaitSummary {
    /// Responses whose wait was recorded (every response, zero waits included).
    pub count: u64,
    /// Mean wait.
    pub mean: Duration,
    /// 95th percentile wait, estimated from the histogram.
    pub p95: Duration,
}

/// Attempts per logical request.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AttemptsSummary {
    /// Requests counted (every one that ended in a response or an error; cancelled ones are
    /// not).
    pub requests: u64,
    /// Attempts they made, the first ones included.
    pub attempts: u64,
    /// Mean attempts per request (zero before the first).
    pub mean: f64,
}

/// One host's attempts.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct HostReport {
    /// `server.address`, or `_OTHER` for the hosts beyond the bound.
    pub address: String,
    /// `server.port`, when known.
    pub port: Option<u16>,
    /// `url.scheme`.
    pub scheme: &'static str,
    /// Attempts finished (answered, failed or cancelled).
    pub attempts: u64,
    /// Attempts answered 4xx or 5xx, or without an answer.
    pub errors: u64,
    /// Attempts in flight now.
    pub active: i64,
    /// 95th percentile attempt latency, estimated from the histogram.
    pub p95: Duration,
    /// The quota the upstream last stated, if it ever did.
    pub quota_limit: Option<u64>,
    /// What the upstream last said was left of it.
    pub quota_remaining: Option<u64>,
}

/// The retry layer's figures.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct RetrySummary {
    /// Requests the layer saw.
    pub requests: u64,
    /// Attempts sent, first attempts included.
    pub attempts: u64,
    /// Retries, every reason.
    pub retries: u64,
    /// Failures not retried because the budget was empty.
    pub budget_exhausted: u64,
    /// Requests the layer gave up on.
    pub gave_up: u64,
    /// Retries the budget allows now, when the layer has a budget.
    pub budget_left: Option<u64>,
}

/// The rate limiters' figures: the totals of every limiter reported (a stack's own and its
/// routes'), and the per-key figures of those without a `route` label (a stack's own).
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct RateLimitSummary {
    /// Requests let through.
    pub admitted: u64,
    /// Of those, requests that waited first.
    pub waited: u64,
    /// Requests refused, every reason.
    pub rejected: u64,
    /// Requests waiting now.
    pub queue_depth: u64,
    /// Keys held on a server's word now.
    pub paused_keys: u64,
    /// Per-key figures the limiter reports with a `key` label (tokens available, queue
    /// depth), by key then figure name without its `seawall_rate_limit_` prefix.
    pub per_key: Vec<(String, Vec<(&'static str, f64)>)>,
}

/// The circuit breakers' figures.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct BreakerSummary {
    /// Breakers open now.
    pub open: u64,
    /// Breakers half-open now.
    pub half_open: u64,
    /// Transitions, every breaker.
    pub transitions: u64,
    /// Transitions to open, every breaker.
    pub trips: u64,
    /// Calls refused while open, every breaker.
    pub rejected: u64,
    /// Per key (the breakers the layer reports by key).
    pub keys: Vec<BreakerKeyReport>,
}

/// One breaker.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct BreakerKeyReport {
    /// The breaker's key (`scheme://host:port` per host).
    pub key: String,
    /// `closed`, `open` or `half_open`.
    pub state: String,
    /// Its transitions (every trip is one to `open`).
    pub transitions: u64,
    /// Its trips: transitions to `open`.
    pub trips: u64,
    /// Failures it recorded.
    pub failures: u64,
    /// Calls it refused.
    pub rejected: u64,
}

/// One failed attempt.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RecentFailure {
    /// When it ended.
    pub at: SystemTime,
    /// Its host (`server.address`), or `_OTHER`.
    pub host: String,
    /// Its failure kind (`server_error`, `timeout`, ..., `cancelled`).
    pub kind: &'static str,
    /// The status code, when there was an answer.
    pub status: Option<u16>,
}

fn label<'a>(figure: &Figure<'a>, name: &str) -> Option<&'a str> {
    figure
        .labels
        .iter()
        .find(|(key, _)| *key == name)
        .map(|(_, value)| *value)
}

/// Reads the layers' figures into their summaries.
fn read_sources(
    sources: &Sources,
    retry: &mut Option<RetrySummary>,
    rate_limit: &mut Option<RateLimitSummary>,
    breaker: &mut Option<BreakerSummary>,
) {
    let sources = sources
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    for source in sources {
        source.figures(&mut |figure| visit(&figure, retry, rate_limit, breaker));
    }
}

fn visit(
    figure: &Figure<'_>,
    retry: &mut Option<RetrySummary>,
    rate_limit: &mut Option<RateLimitSummary>,
    breaker: &mut Option<BreakerSummary>,
) {
    let value = figure.value;
    let count = value.max(0.0) as u64;
    if let Some(name) = figure.name.strip_prefix("seawall_retry_") {
        let retry = retry.get_or_insert_with(Default::default);
        match name {
            "requests" => retry.requests += count,
            "attempts" => retry.attempts += count,
            "retries" => retry.retries += count,
            "budget_exhausted" => retry.budget_exhausted += count,
            "gave_up" => retry.gave_up += count,
            "budget_available" => retry.budget_left = Some(count),
            _ => {}
        }
    } else if let Some(name) = figure.name.strip_prefix("seawall_rate_limit_") {
        let limit = rate_limit.get_or_insert_with(Default::default);
        if let Some(key) = label(figure, "key") {
            // A route's limiter's keys would be mixed with the stack's own under one key.
            if label(figure, "route").is_some() {
                return;
            }
            match limit.per_key.iter_mut().find(|(k, _)| k == key) {
                Some((_, figures)) => figures.push((name, value)),
                None => limit.per_key.push((key.to_owned(), vec![(name, value)])),
            }
            return;
        }
        match name {
            "admitted" => limit.admitted += count,
            "waited" => limit.waited += count,
            "rejected" => limit.rejected += count,
            "queue_depth" => limit.queue_depth += count,
            "paused_keys" => limit.paused_keys += count,
            _ => {}
        }
    } else if let Some(name) = figure.name.strip_prefix("seawall_circuit_breaker_") {
        let summary = breaker.get_or_insert_with(Default::default);
        let Some(key) = label(figure, "key") else {
            // The aggregate over every key (or the single breaker of a layer without keys).
            match (name, label(figure, "state")) {
                ("state", Some("open")) => summary.open += count,
                ("state", Some("half_open")) => summary.half_open += count,
                ("transitions", _) => summary.transitions += count,
                ("trips", _) => summary.trips += count,
                ("rejected", _) => summary.rejected += count,
                _ => {}
            }
            return;
        };
        let index = match summary.keys.iter().position(|k| k.key == key) {
            Some(index) => index,
            None => {
                summary.keys.push(BreakerKeyReport {
                    key: key.to_owned(),
                    ..Default::default()
                });
                summary.keys.len() - 1
            }
        };
        let entry = &mut summary.keys[index];
        match (name, label(figure, "state"), label(figure, "outcome")) {
            ("state", Some(state), _) if value >= 1.0 => entry.state = state.to_owned(),
            ("transitions", _, _) => entry.transitions += count,
            ("trips", _, _) => entry.trips += count,
            ("rejected", _, _) => entry.rejected += count,
            ("calls", _, Some("failure")) => entry.failures += count,
            _ => {}
        }
    }
}

fn host_report(series: &HostSeries) -> HostReport {
    let (attempts, errors, counts) = series.totals();
    let stated = |value: u64| (value != UNSTATED).then_some(value);
    HostReport {
        address: series.address.to_string(),
        port: series.port,
        scheme: series.scheme,
        attempts,
        errors,
        active: series.active(),
        p95: quantile(&ATTEMPT_BOUNDS, &counts, 0.95),
        quota_limit: stated(
            series
                .quota_limit
                .load(std::sync::atomic::Ordering::Relaxed),
        ),
        quota_remaining: stated(
            series
                .quota_remaining
                .load(std::sync::atomic::Ordering::Relaxed),
        ),
    }
}

impl Report {
    pub(crate) fn read(recorder: &Recorder, attempts: &AttemptRecorder, sources: &Sources) -> Self {
        let wait = recorder.queue_wait();
        let count: u64 = wait.counts.iter().sum();
        let queue_wait = WaitSummary {
            count,
            mean: if count == 0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(wait.sum_seconds() / count as f64)
            },
            p95: quantile(&recorder.bounds, &wait.counts, 0.95),
        };
        let tries = recorder.attempts();
        let attempts_summary = AttemptsSummary {
            requests: tries.count(),
            attempts: tries.sum(),
            mean: if tries.count() == 0 {
                0.0
            } else {
                tries.sum() as f64 / tries.count() as f64
            },
        };
        let mut hosts = Vec::new();
        attempts.hosts.for_each(|series| {
            let report = host_report(series);
            if report.attempts > 0 || report.active != 0 || report.quota_limit.is_some() {
                hosts.push(report);
            }
        });
        let (mut retry, mut rate_limit, mut circuit_breaker) = (None, None, None);
        read_sources(sources, &mut retry, &mut rate_limit, &mut circuit_breaker);
        let recent_failures = attempts
            .hosts
            .shared()
            .failures
            .read()
            .into_iter()
            .map(|record| RecentFailure {
                at: record.at,
                host: record.host.address.to_string(),
                kind: record.kind,
                status: record.status,
            })
            .collect();
        Self {
            requests: Snapshot::read(recorder),
            queue_wait,
            attempts: attempts_summary,
            hosts,
            retry,
            rate_limit,
            circuit_breaker,
            recent_failures,
        }
    }
}

/// A duration in the unit that suits it, with at most one decimal.
struct Short(Duration);

impl fmt::Display for Short {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        match nanos {
            0 => f.write_str("0"),
            1..1_000 => write!(f, "{nanos}ns"),
            1_000..1_000_000 => write!(f, "{:.1}µs", nanos as f64 / 1e3),
            1_000_000..1_000_000_000 => write!(f, "{:.1}ms", nanos as f64 / 1e6),
            _ => write!(f, "{:.1}s", nanos as f64 / 1e9),
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.requests;
        writeln!(
            f,
            "requests    {} done, {:.1}% ok, {} in flight, {}/min",
            r.total,
            r.success_rate * 100.0,
            r.in_flight,
            r.requests_per_minute
        )?;
        writeln!(
            f,
            "latency     mean {}  p50 {}  p95 {}  p99 {}",
            Short(r.mean),
            Short(r.p50),
            Short(r.p95),
            Short(r.p99)
        )?;
        writeln!(
            f,
            "queue wait  mean {}  p95 {}",
            Short(self.queue_wait.mean),
            Short(self.queue_wait.p95)
        )?;
        writeln!(
            f,
            "attempts    {:.2} per request ({} over {})",
            self.attempts.mean, self.attempts.attempts, self.attempts.requests
        )?;
        if let Some(retry) = &self.retry {
            write!(
                f,
                "retry       {} attempts, {} retries, {} budget exhausted, {} gave up",
                retry.attempts, retry.retries, retry.budget_exhausted, retry.gave_up
            )?;
            match retry.budget_left {
                Some(left) => writeln!(f, ", budget left {left}")?,
                None => writeln!(f)?,
            }
        }
        if let Some(limit) = &self.rate_limit {
            writeln!(
                f,
                "rate limit  {} admitted, {} waited, {} rejected, queue {}, {} paused",
                limit.admitted, limit.waited, limit.rejected, limit.queue_depth, limit.paused_keys
            )?;
        }
        if let Some(breaker) = &self.circuit_breaker {
            writeln!(
                f,
                "breakers    {} open, {} half-open, {} trips, {} transitions, {} rejected",
                breaker.open,
                breaker.half_open,
                breaker.trips,
                breaker.transitions,
                breaker.rejected
            )?;
        }
        if !self.hosts.is_empty() {
            writeln!(
                f,
                "\n{:<32} {:>8} {:>7} {:>6} {:>8} {:>11}",
                "host", "attempts", "errors", "active", "p95", "quota left"
            )?;
            for host in &self.hosts {
                let name = match host.port {
                    Some(port) => format!("{}://{}:{port}", host.scheme, host.address),
                    None => format!("{}://{}", host.scheme, host.address),
                };
                let quota = match (host.quota_remaining, host.quota_limit) {
                    (Some(left), Some(limit)) => format!("{left}/{limit}"),
                    (Some(left), None) => left.to_string(),
                    _ => "-".to_owned(),
                };
                writeln!(
                    f,
                    "{name:<32} {:>8} {:>7} {:>6} {:>8} {quota:>11}",
                    host.attempts,
                    host.errors,
                    host.active,
                    Short(host.p95).to_string()
                )?;
            }
        }
        if let Some(breaker) = self.circuit_breaker.as_ref().filter(|b| !b.keys.is_empty()) {
            writeln!(
                f,
                "\n{:<32} {:>9} {:>5} {:>11} {:>8} {:>8}",
                "breaker", "state", "trips", "transitions", "failures", "rejected"
            )?;
            for key in &breaker.keys {
                writeln!(
                    f,
                    "{:<32} {:>9} {:>5} {:>11} {:>8} {:>8}",
                    key.key, key.state, key.trips, key.transitions, key.failures, key.rejected
                )?;
            }
        }
        if let Some(limit) = self.rate_limit.as_ref().filter(|l| !l.per_key.is_empty()) {
            writeln!(
                f,
                "\n{:<32} {:>9} {:>11}",
                "rate limit key", "tokens", "queue"
            )?;
            for (key, figures) in &limit.per_key {
                let figure = |name: &str| {
                    figures
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map_or_else(|| "-".to_owned(), |(_, value)| value.to_string())
                };
                writeln!(
                    f,
                    "{key:<32} {:>9} {:>11}",
                    figure("tokens_available"),
                    figure("queue_depth")
                )?;
            }
        }
        if !self.recent_failures.is_empty() {
            writeln!(f, "\nrecent failures (newest last)")?;
            let now = SystemTime::now();
            for failure in &self.recent_failures {
                let ago = now.duration_since(failure.at).unwrap_or_default();
                let status = failure
                    .status
                    .map_or_else(|| "-".to_owned(), |s| s.to_string());
                writeln!(
                    f,
                    "  {:>8} ago  {:<24} {:<14} {status}",
                    Short(ago).to_string(),
                    failure.host,
                    failure.kind
                )?;
            }
        }
        Ok(())
    }
}
