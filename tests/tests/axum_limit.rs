//! `seawall::server` in front of a real axum app on 127.0.0.1: refusals answered by the
//! layer with `Retry-After`, `RateLimit` and `RateLimit-Policy`, the same headers on admitted
//! answers, callers keyed by IP (through a trusted proxy's `X-Forwarded-For`, never through a
//! header an untrusted peer made up), and the app's own 429s not obeyed. On tokio's paused
//! clock.

#![allow(
    clippy::unwrap_used,
    reason = "a test reports a broken fixture by panicking"
)]

use std::net::{IpAddr, SocketAddr};

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use seawall::RateLimitLayer;
use seawall::rate_limit::Rejected;
use seawall::server::{ClientIp, ServerRateLimitLayer};
use tokio::net::TcpListener;

/// An app allowing each caller (as `keys` tells them apart) 2 requests per second, burst 2,
/// served on 127.0.0.1 with the peer's address in each request; its base URL.
async fn serve(keys: ClientIp) -> String {
    let limit = ServerRateLimitLayer::new(
        RateLimitLayer::builder()
            .per_second(2)
            .burst(2)
            .fail_fast()
            .key_by(keys),
    )
    .unwrap();
    start(limit).await
}

async fn start<L>(limit: L) -> String
where
    L: tower::Layer<axum::routing::Route> + Clone + Send + Sync + 'static,
    L::Service: tower::Service<Request<Body>, Error = std::convert::Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    <L::Service as tower::Service<Request<Body>>>::Response: axum::response::IntoResponse + 'static,
    <L::Service as tower::Service<Request<Body>>>::Future: Send + 'static,
{
    let app = Router::new()
        .route("/quote", get(|| async { "42" }))
        // The app's own refusal of one route: the limiter in front must not take it as a
        // reason to hold the caller back.
        .route(
            "/busy",
            get(|| async {
                Response::builder()
                    .status(StatusCode::TOO_MANY_REQUESTS)
                    .header("retry-after", "60")
                    .header("ratelimit", "\"default\";r=0;t=60")
                    .body(Body::empty())
                    .unwrap()
            }),
        )
        .layer(limit);
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    url
}

fn client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

fn get_with(url: &str, forwarded_for: Option<&str>) -> Request<Empty<Bytes>> {
    let mut request = Request::get(url);
    if let Some(forwarded_for) = forwarded_for {
        request = request.header("x-forwarded-for", forwarded_for);
    }
    request.body(Empty::new()).unwrap()
}

fn header(response: &Response<hyper::body::Incoming>, name: &str) -> String {
    response.headers()[name].to_str().unwrap().to_owned()
}

#[tokio::test(start_paused = true)]
async fn refusals_and_admitted_answers_carry_the_rate_limit_headers() {
    let url = serve(ClientIp::new()).await;
    let client = client();
    let quote = format!("{url}/quote");

    let first = client.request(get_with(&quote, None)).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    // One of the burst of 2 left; the whole burst back in 500 ms (rounded up to 1 s).
    assert_eq!(header(&first, "ratelimit"), "\"default\";r=1;t=1");
    assert_eq!(header(&first, "ratelimit-policy"), "\"default\";q=2;w=1");
    let second = client.request(get_with(&quote, None)).await.unwrap();
    assert_eq!(header(&second, "ratelimit"), "\"default\";r=0;t=1");

    let refused = client.request(get_with(&quote, None)).await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&refused, "retry-after"), "1");
    assert_eq!(header(&refused, "ratelimit"), "\"default\";r=0;t=1");
    assert_eq!(header(&refused, "ratelimit-policy"), "\"default\";q=2;w=1");
}

#[tokio::test(start_paused = true)]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_quota() {
    // The test's client plays the proxy at 127.0.0.1.
    let url = serve(ClientIp::trusting([IpAddr::from([127, 0, 0, 1])])).await;
    let client = client();
    let quote = format!("{url}/quote");
    let alice = Some("203.0.113.1");
    let bob = Some("198.51.100.7, 127.0.0.1");
    for _ in 0..2 {
        let response = client.request(get_with(&quote, alice)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let refused = client.request(get_with(&quote, alice)).await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    // Bob, through the same proxy, has his own quota.
    let response = client.request(get_with(&quote, bob)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "ratelimit"), "\"default\";r=1;t=1");
}

#[tokio::test(start_paused = true)]
async fn an_untrusted_peer_cannot_choose_its_key_with_a_forwarding_header() {
    // Only 10.0.0.1 is a trusted proxy; the test's client, at 127.0.0.1, is not.
    let url = serve(ClientIp::trusting([IpAddr::from([10, 0, 0, 1])])).await;
    let client = client();
    let quote = format!("{url}/quote");
    let spoofed = ["203.0.113.1", "203.0.113.2", "203.0.113.3"];
    let mut statuses = Vec::new();
    for address in spoofed {
        let response = client
            .request(get_with(&quote, Some(address)))
            .await
            .unwrap();
        statuses.push(response.status());
    }
    // All three counted against 127.0.0.1's quota.
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn the_apps_own_429s_do_not_hold_its_callers_back() {
    let url = serve(ClientIp::new()).await;
    let client = client();
    let busy = client
        .request(get_with(&format!("{url}/busy"), None))
        .await
        .unwrap();
    // The app's answer, as the app gave it, with the layer's own headers.
    assert_eq!(busy.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&busy, "retry-after"), "60");
    assert_eq!(header(&busy, "ratelimit"), "\"default\";r=1;t=1");
    // The caller's next request is admitted at once: the limiter took no pause from it.
    let quote = client
        .request(get_with(&format!("{url}/quote"), None))
        .await
        .unwrap();
    assert_eq!(quote.status(), StatusCode::OK);
    assert_eq!(header(&quote, "ratelimit"), "\"default\";r=0;t=1");
}

#[tokio::test(start_paused = true)]
async fn a_custom_handler_answers_refusals_its_own_way() {
    let limit = ServerRateLimitLayer::new(
        RateLimitLayer::builder()
            .per_second(1)
            .fail_fast()
            .key_by(ClientIp::new()),
    )
    .unwrap()
    .refuse_with(|rejected: &Rejected| {
        let seconds = rejected.retry_after().map_or(0, |wait| wait.as_millis());
        Response::builder()
            .status(StatusCode::TOO_MANY_REQUESTS)
            .header("content-type", "application/json")
            .body(Body::from(format!("{{\"retry_in_ms\":{seconds}}}")))
            .unwrap()
    });
    let url = start(limit).await;
    let client = client();
    let quote = format!("{url}/quote");
    assert_eq!(
        client
            .request(get_with(&quote, None))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let refused = client.request(get_with(&quote, None)).await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&refused, "ratelimit-policy"), "\"default\";q=1;w=1");
    let body = refused.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "{\"retry_in_ms\":1000}");
}
