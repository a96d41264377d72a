//! The four seawall layers over hyper-util's client with `ServiceBuilder`.
//!
//! `cargo run --release -p seawall-examples --example quickstart`
//!
//! (`seawall::stack()` builds the same stack with defaults; `--example demo` compares it with
//! a bare client against a flaky upstream.)

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use seawall_circuit_breaker::CircuitBreakerLayer;
use seawall_examples::{Upstream, respond};
use seawall_metrics::MetricsLayer;
use seawall_rate_limit::RateLimitLayer;
use seawall_retry::{ReplayBody, RetryLayer};
use tower::{ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let upstream = Upstream::start(|_request| async { respond(200, &[], "ok") }).await?;

    let metrics = MetricsLayer::builder().build()?;
    let client = ServiceBuilder::new()
        .layer(metrics.clone())
        .layer(RetryLayer::builder().max_attempts(3).build()?)
        .layer(
            CircuitBreakerLayer::builder()
                .per_host()
                .consecutive_failures(5)
                .build()?,
        )
        .layer(
            RateLimitLayer::builder()
                .per_second(10)
                .burst(5)
                .per_host()
                .build()?,
        )
        // tower's timeout boxes errors; an `io::Error` around them is a `std::error::Error`.
        .map_err(std::io::Error::other)
        .timeout(Duration::from_secs(30))
        .service(Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Full<Bytes>>>());

    for i in 1..=10 {
        let request = http::Request::get(upstream.url("/items")).body(Full::new(Bytes::new()))?;
        let response = client.clone().oneshot(request).await?;
        println!("request {i}: {}", response.status());
    }
    // Five at once, then one every 100 ms (the limiter); the requests, in OpenMetrics form.
    println!("{}", metrics.encode());
    Ok(())
}
