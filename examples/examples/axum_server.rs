//! An axum app limiting its own callers with `seawall::server`, in one layer.
//!
//! `cargo run --release -p seawall-examples --example axum_server`
//!
//! Each caller, told apart by its IP address (the `X-Forwarded-For` of a trusted proxy in
//! front, else the peer's address), may send 2 requests per second. The layer answers the rest
//! itself, `429 Too Many Requests` with `Retry-After`, `RateLimit` and `RateLimit-Policy`, and
//! puts `RateLimit` and `RateLimit-Policy` on the answers it lets through, so that callers can
//! pace themselves before they are refused. The app's own 429s are the app's business: the
//! layer never takes them as a reason to hold a caller back.
//!
//! A proxy at 127.0.0.1 then sends 4 requests for one client and 1 for another, and prints
//! what came back.

use std::net::{IpAddr, SocketAddr};

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use seawall::RateLimitLayer;
use seawall::server::{ClientIp, ServerRateLimitLayer};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Callers keyed by IP; the proxy at 127.0.0.1 is trusted to name its clients.
    let limit = ServerRateLimitLayer::new(
        RateLimitLayer::builder()
            .per_second(2)
            .burst(2)
            .fail_fast()
            .key_by(ClientIp::trusting([IpAddr::from([127, 0, 0, 1])])),
    )?;
    let app = Router::new()
        .route("/quote", get(|| async { "Simple is better than complex." }))
        .layer(limit);

    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let url = format!("http://{}/quote", listener.local_addr()?);
    // The peer's address goes into each request, for `ClientIp`.
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });

    let proxy = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    for client in ["203.0.113.7"; 4].into_iter().chain(["198.51.100.2"]) {
        let request = Request::get(&url)
            .header("x-forwarded-for", client)
            .body(Empty::new())?;
        let response = proxy.request(request).await?;
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .unwrap_or("-")
                .to_owned()
        };
        println!(
            "{client}: {} ratelimit: {} policy: {} retry-after: {}",
            response.status(),
            header("ratelimit"),
            header("ratelimit-policy"),
            header("retry-after"),
        );
    }
    Ok(())
}
