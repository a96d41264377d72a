//! Four separate OS processes share one quota of 100/s (burst 10) through one Redis for 10 s
//! of real time: together they admit the burst plus 1,000, within 1 %. Then the same through
//! a Redis Cluster of three masters.
//!
//! A plain `main` (no test harness) that runs itself again as each worker process.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "a test: failing loudly is the point"
)]

mod support;

use std::future::ready;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Request, Response};
use seawall_rate_limit::RateLimitLayer;
use seawall_rate_limit_redis::RedisStore;
use tower::{ServiceBuilder, ServiceExt, service_fn};

const PROCESSES: usize = 4;
const PER_SECOND: u32 = 100;
const BURST: u32 = 10;
const RUN: Duration = Duration::from_secs(10);
/// Requests each worker keeps in flight.
const CONCURRENCY: usize = 8;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|arg| arg == "--worker") {
        Some(at) => worker(&args[at + 1], &args[at + 2], args[at + 3].parse().unwrap()),
        None => {
            let Some(server) = support::server() else {
                return;
            };
            run("one node", "node", &server.url());
            drop(server);
            let Some(cluster) = support::cluster(3, 0) else {
                return;
            };
            run("a 3-master cluster", "cluster", &cluster.urls().join(","));
        }
    }
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .try_into()
        .unwrap()
}

/// Runs the workers on `urls` (`mode` "node" or "cluster") and checks what they admitted.
fn run(what: &str, mode: &str, urls: &str) {
    // Every worker starts at the same wall-clock instant, once all have connected.
    let start_ms = epoch_ms() + 2_000;
    let workers: Vec<_> = (0..PROCESSES)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args(["--worker", mode, urls, &start_ms.to_string()])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let counts: Vec<u64> = workers
        .into_iter()
        .map(|worker| {
            let output = worker.wait_with_output().unwrap();
            assert!(
                output.status.success(),
                "a worker failed: {:?}",
                output.status
            );
            let stdout = String::from_utf8(output.stdout).unwrap();
            stdout.trim().lines().last().unwrap().parse().unwrap()
        })
        .collect();
    let total: u64 = counts.iter().sum();
    let expected = u64::from(BURST) + u64::from(PER_SECOND) * RUN.as_secs();
    println!(
        "cross_process on {what}: {PROCESSES} processes admitted {counts:?}, {total} in all, expected {expected} ± 1 %"
    );
    assert!(
        total.abs_diff(expected) * 100 <= expected,
        "{what}: {total} admitted, expected {expected} ± 1 %"
    );
    assert!(
        counts.iter().all(|&n| n > 0),
        "every process got a share: {counts:?}"
    );
}

/// Sends requests through a Redis-backed limiter (on the node, or the cluster, at `urls`)
/// from `start_ms` for `RUN`, and prints how many reached the upstream within that time.
fn worker(mode: &str, urls: &str, start_ms: u64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let admitted = runtime.block_on(async {
        let builder = match mode {
            "cluster" => RedisStore::cluster_builder(urls.split(',')),
            _ => RedisStore::builder(urls),
        };
        let store = builder.connect().await.unwrap();
        let layer = RateLimitLayer::builder()
            .per_second(PER_SECOND)
            .burst(BURST)
            .wait(CONCURRENCY, Duration::from_secs(60))
            .store(store)
            .build_with_store()
            .unwrap();
        let end_ms = start_ms + u64::try_from(RUN.as_millis()).unwrap();
        let admitted = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&admitted);
        let upstream = service_fn(move |_request: Request<()>| {
            if epoch_ms() < end_ms {
                counter.fetch_add(1, Ordering::Relaxed);
            }
            ready(Ok::<_, std::io::Error>(Response::new(())))
        });
        let client = ServiceBuilder::new().layer(layer).service(upstream);
        tokio::time::sleep(Duration::from_millis(start_ms.saturating_sub(epoch_ms()))).await;
        let senders = (0..CONCURRENCY).map(|_| {
            let client = client.clone();
            async move {
                while epoch_ms() < end_ms {
                    client.clone().oneshot(Request::new(())).await.unwrap();
                }
            }
        });
        // Requests still waiting at the end are dropped with the runtime: not admitted.
        let _ = tokio::time::timeout(
            Duration::from_millis(end_ms.saturating_sub(epoch_ms())),
            futures::future::join_all(senders),
        )
        .await;
        admitted.load(Ordering::Relaxed)
    });
    println!("{admitted}");
}
