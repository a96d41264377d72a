//! How accurately limiters pace 10,000 waiters at 1,000/s (burst 10), in real time.
//!
//! `cargo run --release -p seawall-bench --bin rate_accuracy -- --json`
//!
//! Measured the same way for each limiter: every request is created at once, in order; the
//! upstream records which request arrived when. Wake-ups are polls of a request's future after
//! its first, counted by a wrapper around it. The last line is a JSON object with, per limiter,
//! `configured_rate`, `achieved_rate`, `max_window_excess`, `wakeups_per_admission` and
//! `fifo_inversions`, and a `window` row: a window quota of 1,000 in any second given 5,000
//! requests at once, with `max_in_any_window` (at most 1,000) and `last_admission_s`. With
//! `--svg PATH` it also draws admissions per second over time for both limiters (100 ms
//! buckets) into an SVG file.

use std::future::{Future, ready};
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::join_all;
use http::{Request, Response};
use serde_json::json;
use tower::{Layer, Service, service_fn};

const RATE: u32 = 1_000;
const BURST: u32 = 10;
const WAITERS: u32 = 10_000;

/// Counts the polls of a future after its first.
struct Counted<F> {
    future: Pin<Box<F>>,
    polled: bool,
    wakeups: Arc<AtomicU64>,
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        if self.polled {
            self.wakeups.fetch_add(1, Ordering::Relaxed);
        }
        self.polled = true;
        self.future.as_mut().poll(cx)
    }
}

fn counted<F: Future>(future: F, wakeups: &Arc<AtomicU64>) -> Counted<F> {
    Counted {
        future: Box::pin(future),
        polled: false,
        wakeups: Arc::clone(wakeups),
    }
}

/// Arrivals at the upstream: (request index, seconds since start).
type Arrivals = Arc<Mutex<Vec<(u32, f64)>>>;

fn report(name: &str, arrivals: &[(u32, f64)], wakeups: u64) -> serde_json::Value {
    let first = arrivals.first().map_or(0.0, |a| a.1);
    let last = arrivals.last().map_or(0.0, |a| a.1);
    let paced = arrivals.len().saturating_sub(BURST as usize) as f64;
    let achieved_rate = if last > first {
        paced / (last - first)
    } else {
        0.0
    };
    // The most admitted in any window of one second beyond what GCRA allows (burst + rate).
    let times: Vec<f64> = arrivals.iter().map(|a| a.1).collect();
    let mut max_excess = 0i64;
    let mut end = 0;
    for start in 0..times.len() {
        while end < times.len() && times[end] < times[start] + 1.0 {
            end += 1;
        }
        let count = (end - start) as i64;
        max_excess = max_excess.max(count - i64::from(BURST + RATE));
    }
    let mut inversions = 0u64;
    let mut highest = None;
    for (index, _) in arrivals {
        if highest.is_some_and(|h| *index < h) {
            inversions += 1;
        }
        highest = highest.max(Some(*index));
    }
    let waited = arrivals.len().saturating_sub(BURST as usize).max(1) as f64;
    let result = json!({
        "configured_rate": f64::from(RATE),
        "achieved_rate": (achieved_rate * 100.0).round() / 100.0,
        "max_window_excess": max_excess,
        "wakeups_per_admission": ((wakeups as f64 / waited) * 1000.0).round() / 1000.0,
        "fifo_inversions": inversions,
    });
    eprintln!("{name:<36} {result}");
    result
}

/// The window row: at most `WINDOW_N` in any second.
const WINDOW_N: u32 = 1_000;
/// Requests sent through the window: five windows' worth.
const WINDOW_WAITERS: u32 = 5_000;

/// A window quota of `WINDOW_N` in any second, `WINDOW_WAITERS` requests created at once:
/// the most admitted in any interval of one second, which must be at most `WINDOW_N`.
async fn seawall_window() -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let start = Instant::now();
    let arrivals: Arrivals = Arc::default();
    let sink = Arc::clone(&arrivals);
    let upstream = service_fn(move |request: Request<u32>| {
        sink.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((*request.body(), start.elapsed().as_secs_f64()));
        ready(Ok::<_, std::io::Error>(Response::new(())))
    });
    let layer = seawall_rate_limit::RateLimitLayer::builder()
        .window(WINDOW_N, Duration::from_secs(1))
        .wait(20_000, Duration::from_secs(60))
        .build()?;
    let mut service = layer.layer(upstream);
    // Readied before each call, so that a request admitted at once reaches the upstream in
    // its call, and its arrival is its admission (otherwise the first window's arrivals would
    // be recorded only when their tasks first run, after every call was made).
    let mut calls = Vec::with_capacity(WINDOW_WAITERS as usize);
    for i in 0..WINDOW_WAITERS {
        tower::ServiceExt::ready(&mut service).await?;
        calls.push(tokio::spawn(service.call(Request::new(i))));
    }
    join_all(calls).await;
    let arrivals = arrivals.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let times: Vec<f64> = arrivals.iter().map(|a| a.1).collect();
    let mut most = 0;
    let mut end = 0;
    for start in 0..times.len() {
        while end < times.len() && times[end] < times[start] + 1.0 {
            end += 1;
        }
        most = most.max(end - start);
    }
    let last = times.last().copied().unwrap_or(0.0);
    let result = json!({
        "window": WINDOW_N,
        "period_s": 1,
        "admitted": arrivals.len(),
        "max_in_any_window": most,
        "last_admission_s": (last * 1000.0).round() / 1000.0,
    });
    eprintln!("{:<36} {result}", "seawall window");
    Ok(result)
}

/// What one limiter's run gave: its figures, and every arrival for the chart.
type Outcome = (serde_json::Value, Vec<(u32, f64)>);

async fn seawall() -> Result<Outcome, Box<dyn std::error::Error>> {
    let start = Instant::now();
    let arrivals: Arrivals = Arc::default();
    let sink = Arc::clone(&arrivals);
    let upstream = service_fn(move |request: Request<u32>| {
        sink.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((*request.body(), start.elapsed().as_secs_f64()));
        ready(Ok::<_, std::io::Error>(Response::new(())))
    });
    let layer = seawall_rate_limit::RateLimitLayer::builder()
        .per_second(RATE)
        .burst(BURST)
        .wait(20_000, Duration::from_secs(60))
        .build()?;
    let mut service = layer.layer(upstream);
    let wakeups = Arc::new(AtomicU64::new(0));
    // One task per request, as callers run them; each joins the queue in call order.
    let calls: Vec<_> = (0..WAITERS)
        .map(|i| tokio::spawn(counted(service.call(Request::new(i)), &wakeups)))
        .collect();
    join_all(calls).await;
    let arrivals = arrivals.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let figures = report("seawall", &arrivals, wakeups.load(Ordering::Relaxed));
    Ok((figures, arrivals))
}

async fn governor_until_ready() -> Outcome {
    let start = Instant::now();
    let quota = governor::Quota::per_second(NonZeroU32::new(RATE).unwrap_or(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(BURST).unwrap_or(NonZeroU32::MIN));
    let limiter = Arc::new(governor::RateLimiter::direct(quota));
    let arrivals: Arrivals = Arc::default();
    let wakeups = Arc::new(AtomicU64::new(0));
    let calls: Vec<_> = (0..WAITERS)
        .map(|i| {
            let limiter = Arc::clone(&limiter);
            let arrivals = Arc::clone(&arrivals);
            tokio::spawn(counted(
                async move {
                    limiter
                        .until_ready_with_jitter(governor::Jitter::up_to(Duration::from_millis(1)))
                        .await;
                    arrivals
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((i, start.elapsed().as_secs_f64()));
                },
                &wakeups,
            ))
        })
        .collect();
    join_all(calls).await;
    let arrivals = arrivals.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let figures = report(
        "governor_until_ready_with_jitter",
        &arrivals,
        wakeups.load(Ordering::Relaxed),
    );
    (figures, arrivals)
}

/// Admissions per second in each 100 ms bucket.
fn rate_series(arrivals: &[(u32, f64)], buckets: usize) -> Vec<f64> {
    let mut counts = vec![0u32; buckets];
    for (_, at) in arrivals {
        let bucket = (at * 10.0) as usize;
        if let Some(count) = counts.get_mut(bucket) {
            *count += 1;
        }
    }
    counts
        .into_iter()
        .map(|count| f64::from(count) * 10.0)
        .collect()
}

/// One line of the chart: its name, its colour and the arrivals it plots.
type Line<'a> = (&'a str, &'a str, &'a [(u32, f64)]);

/// A line chart of admissions per second over time, one line per limiter.
fn svg(lines: &[Line<'_>]) -> String {
    const WIDTH: f64 = 760.0;
    const HEIGHT: f64 = 360.0;
    const LEFT: f64 = 60.0;
    const RIGHT: f64 = 20.0;
    const TOP: f64 = 40.0;
    const BOTTOM: f64 = 50.0;
    let end = lines
        .iter()
        .flat_map(|(_, _, arrivals)| arrivals.iter().map(|a| a.1))
        .fold(0.0f64, f64::max)
        .ceil()
        .max(1.0);
    let buckets = (end * 10.0) as usize + 1;
    let top_rate = 2_000.0;
    let x = |seconds: f64| LEFT + seconds / end * (WIDTH - LEFT - RIGHT);
    let y = |rate: f64| TOP + (1.0 - rate.min(top_rate) / top_rate) * (HEIGHT - TOP - BOTTOM);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{LEFT}\" y=\"22\" font-size=\"14\">Admitted per second, {WAITERS} waiters \
         at {RATE}/s (burst {BURST}), 100 ms buckets</text>\n"
    );
    for rate in [0.0, 500.0, 1_000.0, 1_500.0, 2_000.0] {
        out += &format!(
            "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{rate}</text>\n",
            WIDTH - RIGHT,
            LEFT - 6.0,
            y(rate) + 4.0,
            y = y(rate),
        );
    }
    let mut second = 0.0;
    while second <= end {
        out += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{second} s</text>\n",
            x(second),
            HEIGHT - BOTTOM + 18.0,
        );
        second += 1.0;
    }
    for (row, (name, colour, arrivals)) in lines.iter().enumerate() {
        let points: Vec<String> = rate_series(arrivals, buckets)
            .iter()
            .enumerate()
            .map(|(bucket, rate)| format!("{:.1},{:.1}", x(bucket as f64 / 10.0 + 0.05), y(*rate)))
            .collect();
        let legend_y = HEIGHT - 12.0;
        let legend_x = LEFT + 260.0 * row as f64;
        out += &format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>\n\
             <line x1=\"{legend_x}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"{colour}\" stroke-width=\"3\"/>\n\
             <text x=\"{:.1}\" y=\"{legend_y}\">{name}</text>\n",
            points.join(" "),
            legend_x + 24.0,
            legend_y - 4.0,
            legend_y - 4.0,
            legend_x + 30.0,
        );
    }
    out + "</svg>\n"
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let json_only = seawall_bench::json_only();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    if !json_only {
        eprintln!("{WAITERS} waiters at {RATE}/s, burst {BURST}, real time");
    }
    let (seawall, seawall_arrivals) = runtime.block_on(seawall())?;
    let (governor, governor_arrivals) = runtime.block_on(governor_until_ready());
    let window = runtime.block_on(seawall_window())?;
    let args: Vec<String> = std::env::args().collect();
    if let Some(path) = args
        .iter()
        .position(|arg| arg == "--svg")
        .and_then(|at| args.get(at + 1))
    {
        let chart = svg(&[
            ("seawall", "#1f77b4", &seawall_arrivals),
            (
                "governor until_ready_with_jitter",
                "#ff7f0e",
                &governor_arrivals,
            ),
        ]);
        std::fs::write(path, chart)?;
    }
    println!(
        "{}",
        json!({
            "seawall": seawall,
            "governor_until_ready_with_jitter": governor,
            "window": window,
        })
    );
    Ok(())
}
