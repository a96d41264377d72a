//! What a reqwest-middleware caller gives the stack besides the request: `Priority` and `Cost`
//! set with `with_extension` reach the limiter, and a streamed body is replayed while it fits
//! the retry layer's buffer and sent once when it does not. Real reqwest client, hyper server
//! on 127.0.0.1, paused clock.

#![allow(
    clippy::unwrap_used,
    reason = "a test reports a broken fixture by panicking"
)]

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::BodyExt;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use seawall::rate_limit::{Cost, Priority};
use seawall::retry::Jitter;
use seawall_examples::{Upstream, respond};
use seawall_reqwest::SeawallMiddleware;
use tokio::time::Instant;

/// What the server saw: each request's path, arrival (from the test's start) and body.
type Log = Arc<Mutex<Vec<(String, Duration, Bytes)>>>;

/// A server that answers 503 to the first `failures` requests and 200 after, logging each.
async fn server(failures: usize) -> (Upstream, Log) {
    let start = Instant::now();
    let log: Log = Arc::default();
    let seen = Arc::clone(&log);
    let upstream = Upstream::start(move |request: http::Request<hyper::body::Incoming>| {
        let seen = Arc::clone(&seen);
        async move {
            let path = request.uri().path().to_owned();
            let body = request.into_body().collect().await.unwrap().to_bytes();
            let n = {
                let mut seen = seen.lock().unwrap();
                seen.push((path, start.elapsed(), body));
                seen.len()
            };
            respond(if n <= failures { 503 } else { 200 }, &[], "ok")
        }
    })
    .await
    .unwrap();
    (upstream, log)
}

fn client(stack: &seawall::Stack) -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new())
        .with(SeawallMiddleware::new(stack))
        .build()
}

#[tokio::test(start_paused = true)]
async fn a_cost_set_as_a_middleware_extension_takes_that_many_tokens() {
    let (upstream, log) = server(0).await;
    let stack = seawall::stack()
        .rate_limit(|limit| limit.per_second(1).burst(3))
        .build()
        .unwrap();
    let client = client(&stack);

    client
        .get(upstream.url("/heavy"))
        .with_extension(Cost(3))
        .send()
        .await
        .unwrap();
    client.get(upstream.url("/light")).send().await.unwrap();

    let arrivals: Vec<(String, Duration)> = log
        .lock()
        .unwrap()
        .iter()
        .map(|(path, at, _)| (path.clone(), *at))
        .collect();
    // The heavy request took the whole burst: the light one waited for the next token.
    assert_eq!(
        arrivals,
        [
            ("/heavy".to_owned(), Duration::ZERO),
            ("/light".to_owned(), Duration::from_secs(1)),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_priority_set_as_a_middleware_extension_goes_first_in_the_limiters_line() {
    let (upstream, log) = server(0).await;
    let stack = seawall::stack()
        .rate_limit(|limit| limit.per_second(1).burst(1))
        .build()
        .unwrap();
    let client = client(&stack);
    client.get(upstream.url("/first")).send().await.unwrap();

    // Both wait for the next token; the low one joined the line first.
    let low = client.get(upstream.url("/low")).send();
    let high = client
        .get(upstream.url("/high"))
        .with_extension(Priority(9))
        .send();
    let (low, high) = tokio::join!(low, high);
    low.unwrap();
    high.unwrap();

    let arrivals: Vec<(String, Duration)> = log
        .lock()
        .unwrap()
        .iter()
        .map(|(path, at, _)| (path.clone(), *at))
        .collect();
    assert_eq!(
        arrivals,
        [
            ("/first".to_owned(), Duration::ZERO),
            ("/high".to_owned(), Duration::from_secs(1)),
            ("/low".to_owned(), Duration::from_secs(2)),
        ]
    );
}

/// A body streamed in chunks, its length not known up front.
struct Chunks(VecDeque<Bytes>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Poll::Ready(self.0.pop_front().map(|chunk| Ok(Frame::data(chunk))))
    }
}

/// `kib` KiB in 1 KiB chunks, streamed, and the same bytes whole.
fn streamed(kib: usize) -> (reqwest::Body, Bytes) {
    let chunks: VecDeque<Bytes> = (0..kib)
        .map(|i| Bytes::from(vec![(i % 251) as u8; 1024]))
        .collect();
    let whole = chunks.iter().flatten().copied().collect::<Vec<u8>>();
    (reqwest::Body::wrap(Chunks(chunks)), Bytes::from(whole))
}

fn retrying_stack() -> seawall::Stack {
    seawall::stack()
        .retry(|retry| {
            retry
                .fixed_backoff(Duration::from_millis(10))
                .jitter(Jitter::None)
                .max_replay_bytes(64 * 1024)
        })
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_streamed_body_within_the_replay_cap_is_sent_again_whole() {
    let (upstream, log) = server(1).await;
    let stack = retrying_stack();
    let (body, whole) = streamed(16);

    let response = client(&stack)
        .post(upstream.url("/orders"))
        .header("idempotency-key", "order-7")
        .body(body)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 2);
    assert!(log.iter().all(|(_, _, body)| *body == whole));
}

#[tokio::test(start_paused = true)]
async fn a_streamed_body_past_the_replay_cap_is_sent_once_and_not_retried() {
    let (upstream, log) = server(1).await;
    let stack = retrying_stack();
    let (body, whole) = streamed(100);

    let response = client(&stack)
        .post(upstream.url("/orders"))
        .header("idempotency-key", "order-8")
        .body(body)
        .send()
        .await
        .unwrap();

    // The 503 comes back as it is: the body could not be sent again.
    assert_eq!(response.status(), 503);
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].2, whole);
    assert_eq!(stack.retry().stats().total_retries(), 0);
}
