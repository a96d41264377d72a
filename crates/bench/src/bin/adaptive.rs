//! The adaptive rate against a server whose limit the client does not know.
//!
//! `cargo run --release -p seawall-bench --bin adaptive -- --json`
//!
//! A loopback hyper server admits `N` requests a second with no burst (GCRA, one request
//! per `1 / N`) and answers the rest 429 with no header at all. The client, the rate
//! limiter with `adaptive()` over hyper-util's client, is configured for `2 × N` and driven
//! by 32 callers for 30 s; then the server's limit is raised by half for 30 s more.
//!
//! The last line is a JSON object: `server_rate` (`N`), `raised_rate`, `throttled_fraction`
//! (429s over requests answered after the first 5 s, both phases), `goodput_ratio`
//! (successes a second over `N`, from 5 s to the raise), `convergence_s` (the end of the
//! first second in which the client sent at most 1.1 × `N` and at least 0.8 × `N` got
//! through: how long cutting the overshoot took), `recovered_ratio` (successes a second over
//! the raised rate in the last 10 s) and `final_rate` (the client's adaptive rate at the
//! end). `--rate N` and `--phase SECONDS` change the defaults (20, 30). `--trace` prints,
//! to stderr, each second's releases, answers and adaptive rate, and where the requests'
//! spacing changed between the limiter and the server.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tower::{Layer, ServiceExt};

/// The callers driving the client.
const CALLERS: usize = 32;
/// What is not counted at the start: the client finding the server's rate.
const SETTLE: f64 = 5.0;
/// The tail over which recovery to the raised rate is judged.
const TAIL: f64 = 10.0;
/// With `--trace`, the header carrying a request's number from the limiter to the server.
const SEQUENCE: &str = "x-sequence";

/// What `--trace` records on the client's side.
#[derive(Default)]
struct Trace {
    /// Each request's number and when the limiter let it go (seconds).
    releases: Mutex<Vec<(u64, f64)>>,
    /// The adaptive rate, sampled every 100 ms: (seconds, requests a second).
    rates: Mutex<Vec<(f64, f64)>>,
    next: AtomicU64,
}

/// The server's limit: GCRA with no burst, its interval changeable while it runs.
struct ServerLimit {
    interval_nanos: AtomicU64,
    /// With `--trace`: each request's number, arrival (seconds) and whether it was admitted.
    arrivals: Option<Mutex<Vec<(u64, f64, bool)>>>,
    /// The theoretical arrival time, in nanoseconds from `origin`.
    tat: Mutex<u64>,
    origin: Instant,
}

impl ServerLimit {
    fn admit(&self, sequence: Option<u64>) -> bool {
        let now = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let interval = self.interval_nanos.load(Ordering::Relaxed);
        let mut tat = self.tat.lock().unwrap_or_else(|p| p.into_inner());
        let admitted = *tat <= now;
        if admitted {
            *tat = now + interval;
        }
        if let (Some(arrivals), Some(sequence)) = (&self.arrivals, sequence) {
            arrivals.lock().unwrap_or_else(|p| p.into_inner()).push((
                sequence,
                now as f64 / 1e9,
                admitted,
            ));
        }
        admitted
    }
}

/// Serves 200 within the limit and a bare 429 beyond it, on a free loopback port.
async fn serve(limit: Arc<ServerLimit>) -> std::io::Result<String> {
    seawall_bench::serve_on_loopback("/work", move || {
        let limit = Arc::clone(&limit);
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let sequence = request
                .headers()
                .get(SEQUENCE)
                .and_then(|value| value.to_str().ok()?.parse().ok());
            let status = if limit.admit(sequence) {
                StatusCode::OK
            } else {
                StatusCode::TOO_MANY_REQUESTS
            };
            let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
            *response.status_mut() = status;
            async move { Ok::<_, Infallible>(response) }
        })
    })
    .await
}

fn argument(name: &str, default: u32) -> u32 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|arg| arg == name)
        .and_then(|at| args.get(at + 1))
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// Answers in `[from, to)` seconds: (successes, throttled, all).
fn count(answers: &[(f64, bool)], from: f64, to: f64) -> (f64, f64, f64) {
    let within = answers.iter().filter(|(at, _)| *at >= from && *at < to);
    let (mut ok, mut throttled) = (0.0, 0.0);
    for (_, success) in within {
        if *success {
            ok += 1.0;
        } else {
            throttled += 1.0;
        }
    }
    (ok, throttled, ok + throttled)
}

fn round(value: f64) -> f64 {
    (value * 1_000.0).round() / 1_000.0
}

async fn run(
    rate: u32,
    phase: u32,
    trace: bool,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let origin = Instant::now();
    let limit = Arc::new(ServerLimit {
        interval_nanos: AtomicU64::new(1_000_000_000 / u64::from(rate)),
        arrivals: trace.then(Mutex::default),
        tat: Mutex::new(0),
        origin,
    });
    let url = serve(Arc::clone(&limit)).await?;
    let layer = seawall_rate_limit::RateLimitLayer::builder()
        .per_second(2 * rate)
        .adaptive()
        .wait(10_000, Duration::from_secs(60))
        .build()?;
    let handle = layer.handle();
    let recorded: Option<Arc<Trace>> = trace.then(Arc::default);
    let stamp = recorded.clone();
    let client = layer.layer(tower::util::MapRequest::new(
        Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>(),
        move |mut request: Request<Empty<Bytes>>| {
            if let Some(trace) = &stamp {
                let sequence = trace.next.fetch_add(1, Ordering::Relaxed);
                let at = origin.elapsed().as_secs_f64();
                trace
                    .releases
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((sequence, at));
                if let Ok(value) = http::HeaderValue::from_str(&sequence.to_string()) {
                    request.headers_mut().insert(SEQUENCE, value);
                }
            }
            request
        },
    ));
    let sampler = recorded.clone().map(|trace| {
        let handle = handle.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while origin.elapsed().as_secs_f64() < 2.0 * f64::from(phase) {
                tick.tick().await;
                if let Some(rate) = handle.current_rate(()) {
                    let at = origin.elapsed().as_secs_f64();
                    trace
                        .rates
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((at, rate));
                }
            }
        })
    });
    let phase = f64::from(phase);
    let end = 2.0 * phase;
    let answers: Arc<Mutex<Vec<(f64, bool)>>> = Arc::default();
    let raised = Arc::clone(&limit);
    let raise = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs_f64(phase)).await;
        let raised_interval = 1_000_000_000 * 2 / (3 * u64::from(rate));
        raised
            .interval_nanos
            .store(raised_interval, Ordering::Relaxed);
    });
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let client = client.clone();
            let url = url.clone();
            let answers = Arc::clone(&answers);
            tokio::spawn(async move {
                while origin.elapsed().as_secs_f64() < end {
                    let Ok(request) = Request::get(&url).body(Empty::new()) else {
                        return;
                    };
                    let Ok(response) = client.clone().oneshot(request).await else {
                        continue;
                    };
                    let success = response.status().is_success();
                    let _ = response.into_body().collect().await;
                    let at = origin.elapsed().as_secs_f64();
                    answers
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((at, success));
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await?;
    }
    raise.await?;
    if let Some(sampler) = sampler {
        sampler.await?;
    }
    if let (Some(trace), Some(arrivals)) = (&recorded, &limit.arrivals) {
        report_trace(trace, &arrivals.lock().unwrap_or_else(|p| p.into_inner()));
    }
    let answers = answers.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let n = f64::from(rate);
    let raised_rate = 1.5 * n;
    let (_, throttled, all) = count(&answers, SETTLE, end);
    let (ok_first, _, _) = count(&answers, SETTLE, phase);
    let goodput_ratio = ok_first / (phase - SETTLE) / n;
    let (ok_tail, _, _) = count(&answers, end - TAIL, end);
    let recovered_ratio = ok_tail / TAIL / raised_rate;
    let mut convergence_s = None;
    let mut second = 0.0;
    while second < phase {
        let (ok, _, sent) = count(&answers, second, second + 1.0);
        if sent <= 1.1 * n && ok >= 0.8 * n {
            convergence_s = Some(second + 1.0);
            break;
        }
        second += 1.0;
    }
    let per_second: Vec<[f64; 2]> = (0..end as usize)
        .map(|s| {
            let (ok, throttled, _) = count(&answers, s as f64, s as f64 + 1.0);
            [ok, throttled]
        })
        .collect();
    eprintln!("per second [ok, 429]: {per_second:?}");
    Ok(json!({
        "server_rate": n,
        "raised_rate": raised_rate,
        "throttled_fraction": round(throttled / all.max(1.0)),
        "goodput_ratio": round(goodput_ratio),
        "convergence_s": convergence_s,
        "recovered_ratio": round(recovered_ratio),
        "final_rate": handle.current_rate(()).map(round),
    }))
}

/// Prints what `--trace` recorded: each second's releases, answers and rate; the delay from
/// release to arrival; and, for each 429, the spacing at the server against the spacing
/// at release of the same two requests.
fn report_trace(trace: &Trace, arrivals: &[(u64, f64, bool)]) {
    let releases = trace.releases.lock().unwrap_or_else(|p| p.into_inner());
    let rates = trace.rates.lock().unwrap_or_else(|p| p.into_inner());
    let released_at: std::collections::HashMap<u64, f64> = releases.iter().copied().collect();
    let seconds = arrivals.iter().map(|a| a.1).fold(0.0f64, f64::max).ceil() as usize;
    for second in 0..seconds {
        let (from, to) = (second as f64, second as f64 + 1.0);
        let released = releases.iter().filter(|r| r.1 >= from && r.1 < to).count();
        let ok = arrivals
            .iter()
            .filter(|a| a.1 >= from && a.1 < to && a.2)
            .count();
        let refused = arrivals
            .iter()
            .filter(|a| a.1 >= from && a.1 < to && !a.2)
            .count();
        let within: Vec<f64> = rates
            .iter()
            .filter(|r| r.0 >= from && r.0 < to)
            .map(|r| r.1)
            .collect();
        let low = within.iter().copied().fold(f64::INFINITY, f64::min);
        let high = within.iter().copied().fold(0.0f64, f64::max);
        eprintln!(
            "t {second:>2}: released {released:>3} ok {ok:>3} 429 {refused:>2} rate {low:.2} – {high:.2}"
        );
    }
    let mut delays: Vec<f64> = arrivals
        .iter()
        .filter_map(|a| Some((a.1 - released_at.get(&a.0)?) * 1e3))
        .collect();
    delays.sort_by(f64::total_cmp);
    let at = |q: f64| delays[((delays.len() - 1) as f64 * q) as usize];
    if !delays.is_empty() {
        eprintln!(
            "release to arrival (ms): p0 {:.3} p50 {:.3} p90 {:.3} p99 {:.3} max {:.3}",
            at(0.0),
            at(0.5),
            at(0.9),
            at(0.99),
            at(1.0)
        );
    }
    let mut sorted = arrivals.to_vec();
    sorted.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mut last_admitted: Option<(u64, f64)> = None;
    for (sequence, at, admitted) in sorted {
        if !admitted && let Some((previous, previous_at)) = last_admitted {
            let release_gap = released_at
                .get(&sequence)
                .zip(released_at.get(&previous))
                .map(|(a, b)| (a - b) * 1e3);
            eprintln!(
                "429 at {at:.3}: {:.3} ms after the last admitted at the server, {:.3?} ms at release",
                (at - previous_at) * 1e3,
                release_gap
            );
        }
        if admitted {
            last_admitted = Some((sequence, at));
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let json_only = seawall_bench::json_only();
    let rate = argument("--rate", 20);
    let phase = argument("--phase", 30);
    let trace = std::env::args().any(|arg| arg == "--trace");
    let runtime = seawall_bench::two_worker_runtime()?;
    if !json_only {
        eprintln!(
            "server at {rate}/s (no burst, bare 429s), client configured for {}/s, {phase} s, \
             then the server at {}/s for {phase} s",
            2 * rate,
            rate * 3 / 2
        );
    }
    let figures = runtime.block_on(run(rate, phase, trace))?;
    println!("{figures}");
    Ok(())
}
