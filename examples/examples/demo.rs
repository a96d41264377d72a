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
//! - `--cacheable`: the workload asks for 20 distinct items over and over, and a third run
//!   goes through the stack with its HTTP cache and request coalescing
//!   (`Stack::economy_service`): the upstream's answers may be kept a minute, so the
//!   upstream requests it saves are counted;
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
    cacheable: bool,
    json: bool,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        url: None,
        rate: 50,
        requests: 1000,
        concurrency: 20,
        cacheable: false,
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
            "--cacheable" => options.cacheable = true,
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
    /// Requests the embedded upstream received during the run.
    upstream_requests: u64,
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
            r#"{{"ok": {}, "failed": {}, "throttled_responses": {}, "retries": {}, "upstream_requests": {}, "wall_s": {:.3}, "p50_ms": {:.1}, "p99_ms": {:.1}}}"#,
            self.ok,
            self.failed_total(),
            self.throttled_responses,
            self.retries,
            self.upstream_requests,
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

/// What every run sends, and the embedded upstream's counts, if it is the upstream.
struct Workload<'a> {
    url: &'a str,
    /// Ask for this many items under `url`, in turn, rather than `url` itself.
    distinct: Option<usize>,
    requests: usize,
    concurrency: usize,
    show_progress: bool,
    flaky: Option<&'a seawall_examples::flaky::Flaky>,
}

impl Workload<'_> {
    /// The upstream's counts so far: 429s sent and requests received.
    fn upstream_counts(&self) -> (u64, u64) {
        self.flaky.map_or((0, 0), |f| {
            (
                f.throttled.load(Ordering::Relaxed),
                f.requests.load(Ordering::Relaxed),
            )
        })
    }

    /// Runs the workload through `client`, counting what it cost the upstream.
    async fn run<S, B, E>(&self, name: &str, client: S) -> Summary
    where
        S: Service<Request<Empty<Bytes>>, Response = Response<B>, Error = E> + Clone,
        B: http_body::Body,
        E: ClassifyError + std::fmt::Display,
    {
        let (throttled, received) = self.upstream_counts();
        let mut summary = run(name, client, self).await;
        let (throttled_after, received_after) = self.upstream_counts();
        summary.throttled_responses = throttled_after - throttled;
        summary.upstream_requests = received_after - received;
        summary
    }

    /// As [`run`](Self::run), through `stack`'s service made by `service`, with the stack's
    /// retries and the breaker trips `trips` counted.
    async fn run_stack<S, B, E>(
        &self,
        name: &str,
        client: S,
        stack: &seawall::Stack,
        trips: &AtomicU64,
    ) -> Summary
    where
        S: Service<Request<Empty<Bytes>>, Response = Response<B>, Error = E> + Clone,
        B: http_body::Body,
        E: ClassifyError + std::fmt::Display,
    {
        let mut summary = self.run(name, client).await;
        summary.retries = stack.retry().stats().total_retries();
        summary.breaker_trips = trips.load(Ordering::Relaxed);
        summary
    }
}

/// Sends the workload's GETs through `client`, `concurrency` at a time, with a live progress
/// line on stderr.
async fn run<S, B, E>(name: &str, client: S, workload: &Workload<'_>) -> Summary
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>, Error = E> + Clone,
    B: http_body::Body,
    E: ClassifyError + std::fmt::Display,
{
    let Workload {
        url,
        distinct,
        requests,
        concurrency,
        show_progress,
        ..
    } = *workload;
    let started = Instant::now();
    let done = AtomicU64::new(0);
    let mut summary = Summary::default();
    let mut results = futures::stream::iter(0..requests)
        .map(|n| {
            let client = client.clone();
            let done = &done;
            let target = match distinct {
                Some(items) => format!("{url}/{}", n % items),
                None => url.to_owned(),
            };
            async move {
                let sent = Instant::now();
                let request = Request::get(target).body(Empty::new());
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

/// The runs side by side, one column each.
fn table(columns: &[(&str, &Summary)], upstream_counted: bool) -> String {
    let mut reasons: Vec<&String> = columns
        .iter()
        .flat_map(|(_, summary)| &summary.failed)
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
    let row = |label: String, cell: &dyn Fn(&Summary) -> String| {
        let mut line = format!("{label:<28}");
        for (_, summary) in columns {
            let _ = write!(line, " {:>16}", cell(summary));
        }
        line.push('\n');
        line
    };
    let mut text = format!("{:<28}", "");
    for (name, _) in columns {
        let _ = write!(text, " {name:>16}");
    }
    text.push('\n');
    text += &row("succeeded".into(), &|s| s.ok.to_string());
    text += &row("failed".into(), &|s| s.failed_total().to_string());
    for reason in reasons {
        text += &row(format!("  {reason}"), &|s| count(s, reason).to_string());
    }
    if upstream_counted {
        text += &row("upstream requests".into(), &|s| {
            s.upstream_requests.to_string()
        });
    }
    text += &row("429s provoked".into(), &|s| {
        s.throttled_responses.to_string()
    });
    text += &row("retries".into(), &|s| s.retries.to_string());
    text += &row("breaker trips".into(), &|s| s.breaker_trips.to_string());
    text += &row("wall time".into(), &|s| {
        format!("{:.2} s", s.wall.as_secs_f64())
    });
    text += &row("p50 latency".into(), &|s| ms(s.quantile(0.5)));
    text += &row("p99 latency".into(), &|s| ms(s.quantile(0.99)));
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

    let workload = Workload {
        url: &url,
        distinct: options.cacheable.then_some(20),
        requests: options.requests,
        concurrency: options.concurrency,
        show_progress: progress,
        flaky: flaky.as_ref(),
    };

    let bare_client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let bare = workload.run("bare", bare_client.map_err(BareError)).await;
    // Let the upstream's quota refill between the runs.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let trips = Arc::new(AtomicU64::new(0));
    let stack = demo_stack(options.rate, &trips)?;
    let guarded = workload
        .run_stack(
            "seawall",
            stack.hyper_client::<Empty<Bytes>>(),
            &stack,
            &trips,
        )
        .await;

    // The same workload through a stack of its own with the cache and coalescing.
    let economy = if options.cacheable {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let trips = Arc::new(AtomicU64::new(0));
        let cached = demo_stack(options.rate, &trips)?;
        let client =
            Client::builder(TokioExecutor::new()).build_http::<seawall::ReplayBody<Empty<Bytes>>>();
        Some(
            workload
                .run_stack("cached", cached.economy_service(client), &cached, &trips)
                .await,
        )
    } else {
        None
    };

    let exposition = std::env::temp_dir().join("seawall-demo.prom");
    std::fs::write(&exposition, stack.metrics().encode_prometheus_text())?;
    if options.json {
        let economy = economy
            .as_ref()
            .map(|summary| format!(r#", "seawall_cached": {}"#, summary.json()))
            .unwrap_or_default();
        println!(
            r#"{{"bare": {}, "seawall": {}{economy}}}"#,
            bare.json(),
            guarded.json()
        );
    } else {
        let mut columns = vec![("bare client", &bare), ("seawall", &guarded)];
        if let Some(summary) = &economy {
            columns.push(("seawall + cache", summary));
        }
        println!("\n{}", table(&columns, flaky.is_some()));
        if let (Some(summary), true) = (&economy, flaky.is_some()) {
            println!(
                "The cache and coalescing spared the upstream {} of {} requests.\n",
                guarded
                    .upstream_requests
                    .saturating_sub(summary.upstream_requests),
                guarded.upstream_requests
            );
        }
        println!("The seawall run's report:\n{}", stack.report());
        println!(
            "Prometheus exposition of the seawall run: {}",
            exposition.display()
        );
    }
    Ok(())
}

/// The demo's stack: the rate limit given, five attempts with a short backoff, the attempt
/// timeout below the upstream's slow answers; `trips` counts the breakers' openings.
fn demo_stack(
    rate: u32,
    trips: &Arc<AtomicU64>,
) -> Result<seawall::Stack, seawall::core::ConfigError> {
    let opened = Arc::clone(trips);
    seawall::stack()
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
        .build()
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
