//! The same workload through a bare hyper-util client and through the seawall stack.
//!
//! `cargo run --release -p seawall-examples --example demo [-- OPTIONS]`
//!
//! With no `--url`, an embedded upstream on loopback plays a flaky API: its own quota of 50
//! requests/s (burst 10) answered with 429 and `Retry-After` beyond it, 10 % of answers 503,
//! 2 % slower than the stack's attempt timeout, 1 % connections dropped before an answer.
//!
//! Options:
//! - `--url URL`: send the workload to a real endpoint instead (no embedded upstream);
//! - `--rate N`: the stack's rate limit in requests per second (default 50);
//! - `--requests N`: requests per client (default 1000);
//! - `--concurrency N`: requests in flight at once (default 20);
//! - `--json`: print a JSON summary as the last line.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use seawall_core::{ClassifyError, FailureKind, classify_error};
use tower::{Service, ServiceExt};

/// The stack's attempt timeout; the upstream's slow answers take longer.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);

struct Options {
    url: Option<String>,
    rate: u32,
    requests: usize,
    concurrency: usize,
    json: bool,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        url: None,
        rate: 50,
        requests: 1000,
        concurrency: 20,
        json: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--url" => options.url = Some(value("--url")?),
            "--rate" => {
                let rate = value("--rate")?;
                let rate = rate.strip_suffix("/s").unwrap_or(&rate);
                options.rate = rate
                    .parse()
                    .map_err(|_| format!("--rate {rate}: not a number"))?;
            }
            "--requests" => {
                options.requests = value("--requests")?
                    .parse()
                    .map_err(|_| "--requests: not a number".to_owned())?
            }
            "--concurrency" => {
                options.concurrency = value("--concurrency")?
                    .parse()
                    .map_err(|_| "--concurrency: not a number".to_owned())?
            }
            "--json" => options.json = true,
            other => return Err(format!("unknown option {other}")),
        }
    }
    if options.rate == 0 || options.requests == 0 || options.concurrency == 0 {
        return Err("--rate, --requests and --concurrency must be at least 1".to_owned());
    }
    Ok(options)
}

/// How one client did.
#[derive(Default)]
struct Summary {
    ok: u64,
    failed: Vec<(String, u64)>,
    throttled_responses: u64,
    retries: u64,
    breaker_trips: u64,
    wall: Duration,
    latencies: Vec<Duration>,
}

impl Summary {
    fn failed_total(&self) -> u64 {
        self.failed.iter().map(|(_, n)| n).sum()
    }

    fn count_failure(&mut self, reason: String) {
        match self.failed.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += 1,
            None => self.failed.push((reason, 1)),
        }
    }

    fn quantile(&self, q: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
        sorted.get(rank - 1).copied().unwrap_or_default()
    }

    fn json(&self) -> String {
        format!(
            r#"{{"ok": {}, "failed": {}, "throttled_responses": {}, "retries": {}, "wall_s": {:.3}, "p50_ms": {:.1}, "p99_ms": {:.1}}}"#,
            self.ok,
            self.failed_total(),
            self.throttled_responses,
            self.retries,
            self.wall.as_secs_f64(),
            self.quantile(0.5).as_secs_f64() * 1e3,
            self.quantile(0.99).as_secs_f64() * 1e3,
        )
    }
}

/// A short, stable name for why a request failed.
fn failure_reason<E: ClassifyError + std::fmt::Display>(error: &E) -> String {
    match classify_error(error) {
        FailureKind::Rejected => "refused by the stack".to_owned(),
        kind => kind.as_str().replace('_', " "),
    }
}

/// Sends `requests` GETs to `url` through `client`, `concurrency` at a time, with a live
/// progress line on stderr.
async fn run<S, B, E>(
    name: &str,
    client: S,
    url: &str,
    requests: usize,
    concurrency: usize,
    show_progress: bool,
) -> Summary
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>, Error = E> + Clone,
    B: http_body::Body,
    E: ClassifyError + std::fmt::Display,
{
    let started = Instant::now();
    let done = AtomicU64::new(0);
    let mut summary = Summary::default();
    let mut results = futures::stream::iter(0..requests)
        .map(|_| {
            let client = client.clone();
            let done = &done;
            async move {
                let sent = Instant::now();
                let request = Request::get(url).body(Empty::new());
                let result = match request {
                    Ok(request) => match client.oneshot(request).await {
                        Ok(response) => {
                            let status = response.status();
                            // Read the body to its end, as a real caller would.
                            match response.into_body().collect().await {
                                Ok(_) if status.is_success() => Ok(()),
                                Ok(_) => Err(format!(
                                    "{} {}",
                                    status.as_u16(),
                                    status.canonical_reason().unwrap_or("")
                                )),
                                Err(_) => Err("body cut short".to_owned()),
                            }
                        }
                        Err(error) => Err(failure_reason(&error)),
                    },
                    Err(error) => Err(format!("bad request: {error}")),
                };
                done.fetch_add(1, Ordering::Relaxed);
                (result, sent.elapsed())
            }
        })
        .buffer_unordered(concurrency);
    let mut last_drawn = Instant::now();
    while let Some((result, latency)) = results.next().await {
        summary.latencies.push(latency);
        match result {
            Ok(()) => summary.ok += 1,
            Err(reason) => summary.count_failure(reason),
        }
        if show_progress && last_drawn.elapsed() > Duration::from_millis(100) {
            last_drawn = Instant::now();
            draw_progress(name, done.load(Ordering::Relaxed), requests, summary.ok);
        }
    }
    if show_progress {
        draw_progress(name, requests as u64, requests, summary.ok);
        eprintln!();
    }
    summary.wall = started.elapsed();
    summary
}

fn draw_progress(name: &str, done: u64, total: usize, ok: u64) {
    let width = 30;
    let filled = (done as usize * width / total.max(1)).min(width);
    eprint!(
        "\r{name:<8} [{}{}] {done}/{total} ({ok} ok)",
        "#".repeat(filled),
        " ".repeat(width - filled)
    );
    let _ = std::io::stderr().flush();
}

fn table(bare: &Summary, guarded: &Summary) -> String {
    let mut reasons: Vec<&String> = bare
        .failed
        .iter()
        .chain(&guarded.failed)
        .map(|(reason, _)| reason)
        .collect();
    reasons.sort();
    reasons.dedup();
    let count = |summary: &Summary, reason: &String| {
        summary
            .failed
            .iter()
            .find(|(r, _)| r == reason)
            .map_or(0, |(_, n)| *n)
    };
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    let mut rows: Vec<(String, String, String)> = vec![
        (
            "succeeded".into(),
            bare.ok.to_string(),
            guarded.ok.to_string(),
        ),
        (
            "failed".into(),
            bare.failed_total().to_string(),
            guarded.failed_total().to_string(),
        ),
    ];
    for reason in reasons {
        rows.push((
            format!("  {reason}"),
            count(bare, reason).to_string(),
            count(guarded, reason).to_string(),
        ));
    }
    rows.extend([
        (
            "429s provoked".into(),
            bare.throttled_responses.to_string(),
            guarded.throttled_responses.to_string(),
        ),
        (
            "retries".into(),
            bare.retries.to_string(),
            guarded.retries.to_string(),
        ),
        (
            "breaker trips".into(),
            bare.breaker_trips.to_string(),
            guarded.breaker_trips.to_string(),
        ),
        (
            "wall time".into(),
            format!("{:.2} s", bare.wall.as_secs_f64()),
            format!("{:.2} s", guarded.wall.as_secs_f64()),
        ),
        (
            "p50 latency".into(),
            ms(bare.quantile(0.5)),
            ms(guarded.quantile(0.5)),
        ),
        (
            "p99 latency".into(),
            ms(bare.quantile(0.99)),
            ms(guarded.quantile(0.99)),
        ),
    ]);
    let mut text = format!("{:<28} {:>14} {:>14}\n", "", "bare client", "seawall");
    for (label, left, right) in rows {
        let _ = writeln!(text, "{label:<28} {left:>14} {right:>14}");
    }
    text
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = match options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("demo: {message}");
            std::process::exit(2);
        }
    };
    let flaky = match &options.url {
        Some(_) => None,
        None => Some(seawall_examples::flaky::start(ATTEMPT_TIMEOUT * 3, None).await?),
    };
    let url = options
        .url
        .clone()
        .or_else(|| flaky.as_ref().map(|f| f.url.clone()))
        .unwrap_or_default();
    let throttled_so_far = || {
        flaky
            .as_ref()
            .map_or(0, |f| f.throttled.load(Ordering::Relaxed))
    };
    let progress = !options.json;
    if progress {
        eprintln!(
            "{} requests to {url}, {} at a time{}",
            options.requests,
            options.concurrency,
            if flaky.is_some() {
                " (embedded flaky upstream: quota 50/s, 10 % 503, 2 % slow, 1 % dropped connections)"
            } else {
                ""
            }
        );
    }

    let bare_client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let before = throttled_so_far();
    let mut bare = run(
        "bare",
        bare_client.map_err(BareError),
        &url,
        options.requests,
        options.concurrency,
        progress,
    )
    .await;
    bare.throttled_responses = throttled_so_far() - before;
    // Let the upstream's quota refill between the two runs.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let trips = Arc::new(AtomicU64::new(0));
    let opened = Arc::clone(&trips);
    let rate = options.rate;
    let stack = seawall::stack()
        .rate_limit(move |limit| limit.per_second(rate).burst(10))
        .circuit_breaker(move |breaker| {
            breaker.on_transition(move |transition| {
                if transition.to == seawall::circuit_breaker::State::Open {
                    opened.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .retry(|retry| {
            retry
                .max_attempts(5)
                .exponential_backoff(Duration::from_millis(50), Duration::from_secs(2))
        })
        .attempt_timeout(ATTEMPT_TIMEOUT)
        .build()?;
    let before = throttled_so_far();
    let mut guarded = run(
        "seawall",
        stack.hyper_client::<Empty<Bytes>>(),
        &url,
        options.requests,
        options.concurrency,
        progress,
    )
    .await;
    guarded.throttled_responses = throttled_so_far() - before;
    guarded.retries = stack.retry().stats().total_retries();
    guarded.breaker_trips = trips.load(Ordering::Relaxed);

    let exposition = std::env::temp_dir().join("seawall-demo.prom");
    std::fs::write(&exposition, stack.metrics().encode_prometheus_text())?;
    if options.json {
        println!(
            r#"{{"bare": {}, "seawall": {}}}"#,
            bare.json(),
            guarded.json()
        );
    } else {
        println!("\n{}", table(&bare, &guarded));
        println!(
            "Prometheus exposition of the seawall run: {}",
            exposition.display()
        );
    }
    Ok(())
}

/// The bare client's error, classified like the stack's.
#[derive(Debug)]
struct BareError(hyper_util::client::legacy::Error);

impl std::fmt::Display for BareError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ClassifyError for BareError {
    fn failure_kind(&self) -> FailureKind {
        self.0.failure_kind()
    }
}
