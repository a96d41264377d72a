//! Several workers share one quota through Redis.
//!
//! Each worker has its own Redis connection, store and rate limiter, exactly what separate
//! processes would have; together they call one upstream, which counts what it receives per
//! second. With 20/s (burst 5) shared by 4 workers, the upstream never sees more than the
//! quota, however the workers split it.
//!
//! `cargo run --release -p seawall-examples --example redis_shared_quota`
//!
//! Options: `--redis URL` (default: start a throwaway `redis-server` on a free port),
//! `--workers N` (4), `--rate N` per second (20), `--seconds N` (5).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use seawall_examples::{Upstream, respond};
use seawall_rate_limit::RateLimitLayer;
use seawall_rate_limit_redis::RedisStore;
use seawall_rate_limit_redis::server::RedisServer;
use tower::{ServiceBuilder, ServiceExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const IN_FLIGHT: usize = 4;
const BURST: u32 = 5;

fn option(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    let at = args.iter().position(|arg| arg == name)?;
    args.get(at + 1).cloned()
}

fn number(name: &str, default: u64) -> Result<u64, BoxError> {
    option(name).map_or(Ok(default), |value| {
        value
            .parse()
            .map_err(|_| format!("{name} takes a number, not {value:?}").into())
    })
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let workers = number("--workers", 4)?;
    let rate = u32::try_from(number("--rate", 20)?)?;
    let run = Duration::from_secs(number("--seconds", 5)?);
    let (_server, url) = match option("--redis") {
        Some(url) => (None, url),
        None => {
            let server = RedisServer::start()?;
            let url = server.url();
            (Some(server), url)
        }
    };

    // The upstream counts requests per whole second since the start.
    let start = Instant::now();
    let seconds = usize::try_from(run.as_secs())? + 2;
    let per_second: Arc<Vec<AtomicU64>> =
        Arc::new((0..seconds).map(|_| AtomicU64::new(0)).collect());
    let counts = Arc::clone(&per_second);
    let upstream = Upstream::start(move |_request: http::Request<_>| {
        let second = usize::try_from(start.elapsed().as_secs()).unwrap_or(usize::MAX);
        if let Some(count) = counts.get(second) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        async { respond(200, &[], "ok") }
    })
    .await?;

    let mut tasks = Vec::new();
    for worker in 0..workers {
        // Everything per worker, as in a separate process: connection, store, limiter, client.
        let store = RedisStore::builder(&url)
            .prefix("example")
            .connect()
            .await?;
        let limit = RateLimitLayer::builder()
            .per_second(rate)
            .burst(BURST)
            .per_host()
            .wait(IN_FLIGHT, Duration::from_secs(30))
            .store(store)
            .build_with_store()?;
        let client = ServiceBuilder::new()
            .layer(limit)
            .service(Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>());
        let target = upstream.url("/work");
        tasks.push(tokio::spawn(async move {
            let sent = Arc::new(AtomicU64::new(0));
            let senders = (0..IN_FLIGHT).map(|_| {
                let (client, target, sent) = (client.clone(), target.clone(), Arc::clone(&sent));
                async move {
                    while start.elapsed() < run {
                        let request = http::Request::get(target.as_str()).body(Empty::new())?;
                        client.clone().oneshot(request).await?;
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok::<_, BoxError>(())
                }
            });
            // Requests still waiting when the time is up are dropped: they never went.
            let _ = tokio::time::timeout(
                run.saturating_sub(start.elapsed()),
                futures::future::try_join_all(senders),
            )
            .await;
            (worker, sent.load(Ordering::Relaxed))
        }));
    }
    println!("{workers} workers share {rate}/s (burst {BURST}) through {url}");
    let mut total = 0;
    for task in tasks {
        let (worker, sent) = task.await?;
        total += sent;
        println!("  worker {worker}: {sent:>5} requests answered");
    }
    let seen: Vec<u64> = per_second
        .iter()
        .take(usize::try_from(run.as_secs())?)
        .map(|n| n.load(Ordering::Relaxed))
        .collect();
    let busiest = seen.iter().max().copied().unwrap_or(0);
    println!(
        "  together: {total} in {} s; the upstream saw per second: {seen:?}",
        run.as_secs()
    );
    println!(
        "  busiest second: {busiest} (the quota allows {} in the first, with the burst, {rate} after)",
        rate + BURST
    );
    Ok(())
}
