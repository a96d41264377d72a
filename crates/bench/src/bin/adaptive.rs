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
//! end). `--rate N` and `--phase SECONDS` change the defaults (20, 30).

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::net::TcpListener;
use tower::{Layer, ServiceExt};

/// The callers driving the client.
const CALLERS: usize = 32;
/// What is not counted at the start: the client finding the server's rate.
const SETTLE: f64 = 5.0;
/// The tail over which recovery to the raised rate is judged.
const TAIL: f64 = 10.0;

/// The server's limit: GCRA with no burst, its interval changeable while it runs.
struct ServerLimit {
    interval_nanos: AtomicU64,
    /// The theoretical arrival time, in nanoseconds from `origin`.
    tat: Mutex<u64>,
    origin: Instant,
}

impl ServerLimit {
    fn admit(&self) -> bool {
        let now = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let interval = self.interval_nanos.load(Ordering::Relaxed);
        let mut tat = self.tat.lock().unwrap_or_else(|p| p.into_inner());
        if *tat > now {
            return false;
        }
        *tat = now + interval;
        true
    }
}

/// Serves 200 within the limit and a bare 429 beyond it, on a free loopback port.
async fn serve(limit: Arc<ServerLimit>) -> std::io::Result<String> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let url = format!("http://{}/work", listener.local_addr()?);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let limit = Arc::clone(&limit);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_request: Request<Incoming>| {
                    let status = if limit.admit() {
                        StatusCode::OK
                    } else {
                        StatusCode::TOO_MANY_REQUESTS
                    };
                    let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
                    *response.status_mut() = status;
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(url)
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

async fn run(rate: u32, phase: u32) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let origin = Instant::now();
    let limit = Arc::new(ServerLimit {
        interval_nanos: AtomicU64::new(1_000_000_000 / u64::from(rate)),
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
    let client = layer.layer(Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>());
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let json_only = seawall_bench::json_only();
    let rate = argument("--rate", 20);
    let phase = argument("--phase", 30);
    let runtime = seawall_bench::two_worker_runtime()?;
    if !json_only {
        eprintln!(
            "server at {rate}/s (no burst, bare 429s), client configured for {}/s, {phase} s, \
             then the server at {}/s for {phase} s",
            2 * rate,
            rate * 3 / 2
        );
    }
    let figures = runtime.block_on(run(rate, phase))?;
    println!("{figures}");
    Ok(())
}
