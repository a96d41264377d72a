//! The rate limiter in front of an axum app, fail-fast per API key: refusals are 429s with
//! `Retry-After` and `RateLimit`, and a client with the seawall stack obeys them. On tokio's
//! paused clock, over loopback.

#![allow(
    clippy::unwrap_used,
    reason = "a test reports a broken fixture by panicking"
)]

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::routing::get;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Empty;
use seawall_core::FailureKind;
use seawall_examples::{api_key, refuse};
use seawall_rate_limit::RateLimitLayer;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};

/// An app that allows each API key 2 requests per second, burst 2, on 127.0.0.1.
async fn serve() -> String {
    let limit = RateLimitLayer::builder()
        .per_second(2)
        .burst(2)
        .fail_fast()
        .key_by(api_key)
        .build()
        .unwrap();
    let app = Router::new().route("/quote", get(|| async { "42" })).layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(refuse))
            .layer(limit),
    );
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let url = format!("http://{}/quote", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn get_as(url: &str, key: &str) -> Request<Empty<Bytes>> {
    Request::get(url)
        .header("x-api-key", key)
        .body(Empty::new())
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn over_its_quota_a_caller_gets_429_with_when_to_come_back() {
    let url = serve().await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let response = client.request(get_as(&url, "alice")).await.unwrap();
        statuses.push(response.status());
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            let header = |name| response.headers()[name].to_str().unwrap().to_owned();
            // The next token is 500 ms away; seconds round up.
            assert_eq!(header("retry-after"), "1");
            assert_eq!(header("ratelimit"), "\"default\";r=0;t=1");
        }
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    // Another key has its own quota.
    let other = client.request(get_as(&url, "bob")).await.unwrap();
    assert_eq!(other.status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn a_seawall_client_obeys_the_servers_429s_and_gets_every_answer() {
    let url = serve().await;
    let stack = seawall::stack().build().unwrap();
    let client = stack.hyper_client::<Empty<Bytes>>();
    let start = Instant::now();
    for _ in 0..6 {
        let response = client.clone().oneshot(get_as(&url, "alice")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    // Two at once, then the third refused for 1 s (rounded up from 500 ms): at 1 s the
    // third and fourth, the fifth refused again, and at 2 s the fifth and sixth.
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(stack.retry().stats().retries_for(FailureKind::Throttled), 2);
    assert_eq!(stack.rate_limit().stats().pauses, 2);
}

#[tokio::test(start_paused = true)]
async fn an_axum_handler_calls_its_upstream_through_the_stack() {
    use axum::extract::State;
    let upstream = seawall_examples::Upstream::start(|_request| async {
        seawall_examples::respond(200, &[], "from upstream")
    })
    .await
    .unwrap();
    let stack = seawall::stack().build().unwrap();
    let upstream_url = upstream.url("/");
    // The handler's future holds the stack's future across an await: it must be `Send`.
    let app = Router::new()
        .route(
            "/",
            get(
                |State(client): State<
                    seawall::StandardService<seawall::HyperClient<Empty<Bytes>>>,
                >| async move {
                    let request = Request::get(upstream_url).body(Empty::new()).unwrap();
                    let response = client.oneshot(request).await.unwrap();
                    response.status()
                },
            ),
        )
        .with_state(stack.hyper_client::<Empty<Bytes>>());
    let response = app
        .oneshot(Request::get("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(stack.metrics().snapshot().total, 1);
}
