//! The seawall stack for a reqwest client, through reqwest-middleware.
//!
//! `cargo run --release -p seawall-examples --example reqwest`
//!
//! An upstream on loopback answers a third of requests with 503 and, past 20 requests per
//! second, with 429 and `Retry-After: 1`. Ten requests go through a reqwest client whose only
//! addition is `SeawallMiddleware`: each gets its answer, and the stack's figures say how.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest_middleware::ClientBuilder;
use seawall_examples::{Upstream, respond};
use seawall_rate_limit::Quota;
use seawall_rate_limit::gcra::GcraCells;
use seawall_reqwest::{SeawallMiddleware, failure_kind};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quota = Quota::per_second(20)?.burst(2)?;
    let cells = Arc::new(GcraCells::new(1));
    let calls = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let count = Arc::clone(&calls);
    let upstream = Upstream::start(move |_request| {
        let n = count.fetch_add(1, Ordering::Relaxed);
        let now = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let admitted = cells.try_take(&[quota], 1, now).is_ok();
        async move {
            if !admitted {
                respond(429, &[("retry-after", "1")], "slow down")
            } else if n % 3 == 1 {
                respond(503, &[], "busy")
            } else {
                respond(200, &[], "ok")
            }
        }
    })
    .await?;

    let stack = seawall::stack()
        .retry(|retry| retry.exponential_backoff(Duration::from_millis(50), Duration::from_secs(2)))
        .build()?;
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(SeawallMiddleware::new(&stack))
        .build();

    for i in 1..=10 {
        match client.get(upstream.url("/items")).send().await {
            Ok(response) => println!("request {i}: {}", response.status()),
            Err(error) => println!("request {i}: {:?}: {error:#}", failure_kind(&error)),
        }
    }
    let retry = stack.retry().stats();
    println!(
        "{} attempts for 10 requests in {:.1} s: {} retries, {} server-driven pauses",
        calls.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
        retry.total_retries(),
        stack.rate_limit().stats().pauses,
    );
    Ok(())
}
