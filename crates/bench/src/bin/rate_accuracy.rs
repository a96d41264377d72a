//! How accurately limiters pace 10,000 waiters at 1,000/s (burst 10), in real time.
//!
//! `cargo run --release -p seawall-bench --bin rate_accuracy -- --json`
//!
//! Measured the same way for each limiter: every request is created at once, in order; the
//! upstream records which request arrived when. Wake-ups are polls of a request's future after
//! its first, counted by a wrapper around it. The last line is a JSON object with, per limiter,
//! `configured_rate`, `achieved_rate`, `max_window_excess`, `wakeups_per_admission` and
//! `fifo_inversions`.

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

async fn seawall() -> Result<serde_json::Value, Box<dyn std::error::Error>> {
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
    Ok(report(
        "seawall",
        &arrivals,
        wakeups.load(Ordering::Relaxed),
    ))
}

async fn governor_until_ready() -> serde_json::Value {
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
    report(
        "governor_until_ready_with_jitter",
        &arrivals,
        wakeups.load(Ordering::Relaxed),
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let json_only = std::env::args().any(|a| a == "--json");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    if !json_only {
        eprintln!("{WAITERS} waiters at {RATE}/s, burst {BURST}, real time");
    }
    let seawall = runtime.block_on(seawall())?;
    let governor = runtime.block_on(governor_until_ready());
    println!(
        "{}",
        json!({ "seawall": seawall, "governor_until_ready_with_jitter": governor })
    );
    Ok(())
}
