//! The standard stack composed with tower-http's and tower's own layers over it, as users
//! stack them: `TraceLayer`, `FollowRedirect` and `Buffer`, against real hyper servers on
//! 127.0.0.1.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use seawall::core::{ByHost, KeyExtractor};
use seawall_examples::{Upstream, respond};
use tower::buffer::Buffer;
use tower::{BoxError, ServiceBuilder, ServiceExt};
use tower_http::follow_redirect::FollowRedirectLayer;
use tower_http::trace::TraceLayer;

fn get(url: String) -> Request<Full<Bytes>> {
    Request::get(url)
        .body(Full::default())
        .expect("a valid request")
}

/// A stack whose limiter never holds these tests' requests.
fn stack() -> seawall::Stack {
    seawall::stack()
        .rate_limit(|limit| limit.per_second(10_000).burst(1_000))
        .build()
        .expect("a valid stack")
}

/// An upstream that answers 200 "ok" and records the paths it was asked for.
async fn recording() -> (Upstream, Arc<Mutex<Vec<String>>>) {
    let paths: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = Arc::clone(&paths);
    let upstream = Upstream::start(move |request| {
        let path = request.uri().path().to_owned();
        log.lock().expect("unpoisoned").push(path.clone());
        async move {
            if path == "/old" {
                respond(302, &[("location", "/new")], "")
            } else {
                respond(200, &[], "ok")
            }
        }
    })
    .await
    .expect("upstream");
    (upstream, paths)
}

#[tokio::test]
async fn trace_layer_over_the_stack_sees_its_answers_and_its_refusals() {
    let (upstream, paths) = recording().await;
    let stack = stack();
    let client = ServiceBuilder::new()
        .layer(TraceLayer::new_for_http())
        .service(stack.hyper_client::<Full<Bytes>>());
    let response = client
        .clone()
        .oneshot(get(upstream.url("/items")))
        .await
        .expect("an answer");
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.expect("a body");
    assert_eq!(body.to_bytes(), Bytes::from_static(b"ok"));
    // A refusal passes through the trace layer as the stack's own typed error.
    let key = ByHost.extract_from(&get(upstream.url("/items")));
    stack.circuit_breaker().force_open(&key);
    let refused = client
        .oneshot(get(upstream.url("/items")))
        .await
        .err()
        .expect("the breaker is open");
    assert!(refused.inner().as_open().is_some(), "{refused}");
    assert_eq!(*paths.lock().expect("unpoisoned"), ["/items"]);
    assert_eq!(stack.metrics().snapshot().total, 2);
}

#[tokio::test]
async fn follow_redirect_over_the_stack_sends_every_hop_through_it() {
    let (upstream, paths) = recording().await;
    let stack = stack();
    let client = ServiceBuilder::new()
        .layer(FollowRedirectLayer::new())
        .service(stack.hyper_client::<Full<Bytes>>());
    let response = client
        .oneshot(get(upstream.url("/old")))
        .await
        .expect("an answer");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(*paths.lock().expect("unpoisoned"), ["/old", "/new"]);
    // Each hop is a request of the stack's: counted, and paid for in the limiter.
    assert_eq!(stack.metrics().snapshot().total, 2);
    assert_eq!(stack.rate_limit().stats().admitted, 2);
}

#[tokio::test]
async fn buffer_over_the_stack_answers_every_caller_and_passes_its_errors_through() {
    let (upstream, paths) = recording().await;
    let stack = stack();
    let client = Buffer::new(stack.hyper_client::<Full<Bytes>>(), 8);
    let answers = futures::future::join_all(
        (0..50).map(|_| client.clone().oneshot(get(upstream.url("/items")))),
    )
    .await;
    let statuses: Vec<_> = answers
        .into_iter()
        .map(|answer| {
            answer
                .map(|response| response.status())
                .map_err(|e| e.to_string())
        })
        .collect();
    assert_eq!(statuses, vec![Ok(StatusCode::OK); 50]);
    assert_eq!(paths.lock().expect("unpoisoned").len(), 50);
    assert_eq!(stack.metrics().snapshot().total, 50);
    let key = ByHost.extract_from(&get(upstream.url("/items")));
    stack.circuit_breaker().force_open(&key);
    let refused: BoxError = client
        .oneshot(get(upstream.url("/items")))
        .await
        .expect_err("the breaker is open");
    let refused = refused
        .downcast_ref::<seawall::StackError>()
        .expect("the stack's own error, boxed by the buffer");
    assert!(refused.inner().as_open().is_some(), "{refused}");
    assert_eq!(paths.lock().expect("unpoisoned").len(), 50);
}
