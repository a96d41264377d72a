//! A `/metrics` endpoint for Prometheus, served by axum, with every layer's figures.
//!
//! `cargo run -p seawall-examples --example metrics_endpoint`
//!
//! The app calls an upstream that answers every third request 503 through the seawall stack,
//! serves the stack's OpenMetrics exposition at `/metrics`, scrapes it once itself and prints
//! it, then prints the stack's one-page report.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use seawall::MetricsLayer;
use seawall_examples::{Upstream, respond};
use tokio::net::TcpListener;
use tower::ServiceExt;

/// The exposition, as Prometheus asks for it (OpenMetrics text).
async fn metrics(metrics: MetricsLayer) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let calls = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&calls);
    let upstream = Upstream::start(move |_request| {
        let n = count.fetch_add(1, Ordering::Relaxed);
        async move {
            if n % 3 == 2 {
                respond(503, &[("x-ratelimit-limit", "100")], "busy")
            } else {
                respond(200, &[("x-ratelimit-remaining", "42")], "ok")
            }
        }
    })
    .await?;

    let stack = seawall::stack().build()?;
    let client = stack.hyper_client::<Empty<Bytes>>();
    for _ in 0..10 {
        let response = client
            .clone()
            .oneshot(Request::get(upstream.url("/items")).body(Empty::new())?)
            .await?;
        response.into_body().collect().await?;
    }

    // The endpoint: any clone of the metrics layer reads the same figures.
    let layer = stack.metrics().clone();
    let app = Router::new().route("/metrics", get(move || metrics(layer.clone())));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });

    // Scrape it once, as Prometheus would.
    let scraper = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let scrape = scraper
        .get(format!("http://{address}/metrics").parse()?)
        .await?;
    let text = scrape.into_body().collect().await?.to_bytes();
    println!("GET /metrics\n{}", String::from_utf8_lossy(&text));
    println!("{}", stack.metrics().report());
    Ok(())
}
