//! End to end over loopback: a hyper server and hyper-util's client, bare, wrapped in the
//! standard stack (limits set far above the load), and wrapped in tower-resilience's retry,
//! circuit breaker and rate limiter with the same settings, at concurrency 1 and 32.
//! At concurrency N the requests come from N tasks on the runtime's two workers, each sending
//! one request at a time, as an application's handlers do.
//!
//! `cargo run --release -p seawall-bench --bin e2e -- --json`
//!
//! The last line is a JSON object with, per concurrency (`"c1"`, `"c32"`), `bare_rps`,
//! `seawall_rps`, `ratio` (seawall over bare), `tower_resilience_rps`,
//! `tower_resilience_ratio` (tower-resilience over bare), and each client's p99 latency
//! (`bare_p99_us`, `seawall_p99_us`, `tower_resilience_p99_us`). Each client runs twelve
//! times for half a second, in rounds that take the six orders of the three clients twice,
//! so that each wrapped client runs as often just before the bare one as just after it, and
//! as often two places before as two after. The rates and latencies are over all runs; each
//! ratio is the median over the rounds of the client's rate over the bare client's in the
//! same round. A shared machine's speed moves by several per cent from one second to the
//! next, and a ratio of whole-run sums moved by as much between runs of the same code (0.93 –
//! 1.07 for one client); a ratio taken within a round leaves out what moves slower than a
//! round, and the orders' symmetry what moves steadily within one.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use seawall_bench::{CloneableRequest, tower_resilience_stack};
use serde_json::json;
use tower::{Layer, Service, ServiceExt};

/// How long each timed run lasts.
const RUN: Duration = Duration::from_millis(500);
/// How many runs each client makes: each of `ORDERS` twice.
const RUNS: usize = 12;
/// The orders of a round's runs (0 bare, 1 seawall, 2 tower-resilience): all six.
const ORDERS: [[usize; 3]; 6] = [
    [0, 1, 2],
    [0, 2, 1],
    [1, 0, 2],
    [1, 2, 0],
    [2, 0, 1],
    [2, 1, 0],
];
/// How long each run sends before it starts counting, to open connections and warm caches.
const WARM_UP: Duration = Duration::from_millis(100);

/// Requests completed and their latencies in one run.
#[derive(Default)]
struct Run {
    completed: u64,
    /// Requests that ended in an error (or whose body failed) at any time in the run.
    failed: u64,
    elapsed: Duration,
    latencies_us: Vec<u64>,
}

impl Run {
    fn add(&mut self, other: Run) {
        self.completed += other.completed;
        self.failed += other.failed;
        self.elapsed += other.elapsed;
        self.latencies_us.extend(other.latencies_us);
    }

    fn rps(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64()
    }

    fn p99_us(&mut self) -> u64 {
        self.latencies_us.sort_unstable();
        let index =
            (self.latencies_us.len() * 99 / 100).min(self.latencies_us.len().saturating_sub(1));
        self.latencies_us.get(index).copied().unwrap_or(0)
    }
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Sends GETs through `client` from `concurrency` tasks, each one request at a time, for
/// `WARM_UP` and then `RUN`; counts the requests answered (their bodies read) within `RUN`.
async fn drive<S, B>(client: S, url: &str, concurrency: usize) -> Run
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    let counted_from = Instant::now() + WARM_UP;
    let end = counted_from + RUN;
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url) = (client.clone(), url.to_owned());
            tokio::spawn(async move {
                let (mut latencies_us, mut failed) = (Vec::new(), 0);
                while Instant::now() < end {
                    let Ok(request) = Request::get(url.as_str()).body(Empty::new()) else {
                        failed += 1;
                        break;
                    };
                    let sent = Instant::now();
                    // The error goes at once: it need not be `Send` to be held across a poll.
                    let read = match client.clone().oneshot(request).await.ok() {
                        Some(response) => response.into_body().collect().await.is_ok(),
                        None => false,
                    };
                    let answered = Instant::now();
                    if !read {
                        failed += 1;
                        // An error that comes at once would otherwise hold the worker.
                        tokio::task::yield_now().await;
                    } else if (counted_from..end).contains(&answered) {
                        let latency = answered.duration_since(sent).as_micros();
                        latencies_us.push(u64::try_from(latency).unwrap_or(u64::MAX));
                    }
                }
                (latencies_us, failed)
            })
        })
        .collect();
    let mut run = Run {
        elapsed: RUN,
        ..Run::default()
    };
    for task in tasks {
        match task.await {
            Ok((latencies_us, failed)) => {
                run.completed += latencies_us.len() as u64;
                run.failed += failed;
                run.latencies_us.extend(latencies_us);
            }
            // A task's answers are lost with it: the run would read slow, so it stops here.
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(_) => run.failed += 1,
        }
    }
    run
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    let runtime = seawall_bench::two_worker_runtime()?;
    // The requests are made from tasks on the runtime's workers, as an application's are.
    // Made from `block_on`'s own thread (a third thread on a machine of two cores), the rates
    // followed how often that thread parked rather than what a client costs: a bare client
    // made to spin 3 µs a request ran 6.5 % faster than the bare one at concurrency 32. Made
    // from one task that polled all 32 at once, the same spin cost 2.6 % at 32 where it
    // costs 15 % of the CPU a request takes; from 32 tasks it costs 14 – 16 %.
    let summary = runtime.block_on(runtime.spawn(measure(seawall_bench::json_only())))??;
    println!("{summary}");
    Ok(())
}

/// Every client at each concurrency, as the JSON object the last line prints.
async fn measure(json_only: bool) -> Result<serde_json::Value, BoxError> {
    let url = seawall_bench::serve_small_answer().await?;
    let mut summary = serde_json::Map::new();
    for concurrency in [1, 32] {
        let bare_client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let stack = seawall::stack()
            .rate_limit(|limit| limit.per_second(1_000_000_000).burst(1_000_000))
            .build()?;
        let seawall_client = stack.hyper_client::<Empty<Bytes>>();
        // Each client with a connection pool of its own, as seawall's must have (its
        // requests' bodies are of another type): a pool shared with the bare client
        // would come to each run warmed by the other's.
        let resilience_client =
            tower::util::MapRequestLayer::new(CloneableRequest).layer(tower_resilience_stack(
                Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>(),
            )?);
        // Every run of each client (as `ORDERS` numbers them), all rounds together.
        let [mut bare, mut guarded, mut resilience] = [(); 3].map(|()| Run::default());
        // Each round's rate of seawall's and tower-resilience's clients over the bare one.
        let (mut ratios, mut resilience_ratios) = (Vec::new(), Vec::new());
        for round in 0..RUNS {
            let mut rates = [0f64; 3];
            for client in ORDERS[round % ORDERS.len()] {
                let (run, total) = match client {
                    0 => (
                        drive(bare_client.clone(), &url, concurrency).await,
                        &mut bare,
                    ),
                    1 => (
                        drive(seawall_client.clone(), &url, concurrency).await,
                        &mut guarded,
                    ),
                    _ => (
                        drive(resilience_client.clone(), &url, concurrency).await,
                        &mut resilience,
                    ),
                };
                rates[client] = run.rps();
                total.add(run);
            }
            ratios.push(rates[1] / rates[0]);
            resilience_ratios.push(rates[2] / rates[0]);
        }
        let figures = json!({
            "bare_rps": bare.rps().round() as u64,
            "seawall_rps": guarded.rps().round() as u64,
            "ratio": (median(&mut ratios) * 1_000.0).round() / 1_000.0,
            "tower_resilience_rps": resilience.rps().round() as u64,
            "tower_resilience_ratio": (median(&mut resilience_ratios) * 1_000.0).round() / 1_000.0,
            "bare_p99_us": bare.p99_us(),
            "seawall_p99_us": guarded.p99_us(),
            "tower_resilience_p99_us": resilience.p99_us(),
        });
        if !json_only {
            println!("concurrency {concurrency}: {figures}");
        }
        // Every request of every client got its answer: a rate of failures would not be one
        // of the client's cost. The stack's own figures say the same of its requests, all of
        // them ended.
        let failed = [&bare, &guarded, &resilience].map(|run| run.failed);
        if failed != [0; 3] {
            return Err(format!(
                "requests failed at concurrency {concurrency} (bare, seawall, \
                 tower-resilience): {failed:?}"
            )
            .into());
        }
        let snapshot = stack.metrics().snapshot();
        if snapshot.success_rate < 1.0 || snapshot.in_flight != 0 {
            return Err(format!("the stack lost requests: {snapshot:?}").into());
        }
        summary.insert(format!("c{concurrency}"), figures);
    }
    Ok(serde_json::Value::Object(summary))
}
