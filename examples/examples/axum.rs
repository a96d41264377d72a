//! seawall on both sides of an axum app.
//!
//! `cargo run --release -p seawall-examples --example axum`
//!
//! The app's handler calls a flaky upstream (every second answer a 503) through the seawall
//! stack, which retries what failed. In front of the app, `seawall::server`'s rate limiter in
//! fail-fast mode allows each API key 2 requests per second and answers the rest itself,
//! `429 Too Many Requests` with `Retry-After`, `RateLimit` and `RateLimit-Policy`, so that
//! well-behaved callers know when to come back (see the `axum_server` example for callers
//! keyed by IP).
//! One caller then sends 6 requests at once and prints what it got.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use seawall::server::ServerRateLimitLayer;
use seawall::{HyperClient, StandardService};
use seawall_examples::{Upstream, api_key, respond};
use seawall_rate_limit::RateLimitLayer;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// What the handler needs: the upstream's address and a client with the seawall stack.
#[derive(Clone)]
struct Quotes {
    url: String,
    client: StandardService<HyperClient<Empty<Bytes>>>,
}

/// Fetches a quote from the upstream through the stack.
async fn quote(State(quotes): State<Quotes>) -> Response {
    let request = match Request::get(&quotes.url).body(Empty::new()) {
        Ok(request) => request,
        Err(error) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response();
        }
    };
    match quotes.client.oneshot(request).await {
        Ok(response) => {
            let status = response.status();
            match response.into_body().collect().await {
                Ok(body) => (status, body.to_bytes()).into_response(),
                Err(error) => (StatusCode::BAD_GATEWAY, error.to_string()).into_response(),
            }
        }
        // The stack's error says what happened: a refusal, the attempts made, the last cause.
        Err(error) => (StatusCode::BAD_GATEWAY, error.to_string()).into_response(),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The upstream: every second answer a 503.
    let calls = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&calls);
    let upstream = Upstream::start(move |_request| {
        let n = count.fetch_add(1, Ordering::Relaxed);
        async move {
            if n % 2 == 1 {
                respond(503, &[], "busy")
            } else {
                respond(200, &[], "\"Simple is better than complex.\"")
            }
        }
    })
    .await?;

    // The app: its own callers limited per API key, its upstream called through seawall.
    let stack = seawall::stack()
        .retry(|retry| retry.fixed_backoff(std::time::Duration::from_millis(50)))
        .build()?;
    let quotes = Quotes {
        url: upstream.url("/quote"),
        client: stack.hyper_client(),
    };
    let limit = ServerRateLimitLayer::new(
        RateLimitLayer::builder()
            .per_second(2)
            .burst(2)
            .fail_fast()
            .key_by(api_key),
    )?;
    let app = Router::new()
        .route("/quote", get(quote))
        .with_state(quotes)
        .layer(limit);
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let app_url = format!("http://{}/quote", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    // One caller, six requests at once.
    let caller = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let requests = (0..6).map(|_| {
        let request = Request::get(&app_url)
            .header("x-api-key", "alice")
            .body(Empty::new());
        let caller = caller.clone();
        async move {
            let response = caller.request(request?).await?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, retry_after, body))
        }
    });
    for (i, answer) in futures::future::join_all(requests)
        .await
        .into_iter()
        .enumerate()
    {
        let (status, retry_after, body) = answer.map_err(|error| error.to_string())?;
        match retry_after {
            Some(seconds) => println!("request {}: {status}, come back in {seconds} s", i + 1),
            None => println!(
                "request {}: {status} {}",
                i + 1,
                String::from_utf8_lossy(&body)
            ),
        }
    }
    let snapshot = stack.metrics().snapshot();
    println!(
        "the app's client: {} requests to the upstream, {} attempts, {} retried after a 503",
        snapshot.total,
        calls.load(Ordering::Relaxed),
        stack.retry().stats().total_retries()
    );
    Ok(())
}
