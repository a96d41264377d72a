//! The retry layer over hyper-util's client against real hyper servers on 127.0.0.1, on
//! tokio's paused clock: replayed request bodies, the replay cap, and a rate limiter below
//! that charges every attempt.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::channel::mpsc;
use futures::future::join_all;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use seawall_examples::fault::FaultAfterSend;
use seawall_examples::{Upstream, respond};
use seawall_rate_limit::RateLimitLayer;
use seawall_retry::{ReplayBody, RetryLayer, RetryReport, StopReason};
use tower::{ServiceBuilder, ServiceExt};

type Streamed = StreamBody<mpsc::UnboundedReceiver<Result<Frame<Bytes>, Infallible>>>;

/// A 10 KiB body that a task streams in 1 KiB chunks, and the bytes it will send.
fn streamed_body() -> (Streamed, Vec<u8>) {
    let payload: Vec<u8> = (0..10 * 1024).map(|i| (i % 251) as u8).collect();
    let (tx, rx) = mpsc::unbounded();
    let chunks: Vec<Bytes> = payload.chunks(1024).map(Bytes::copy_from_slice).collect();
    tokio::spawn(async move {
        for chunk in chunks {
            tokio::task::yield_now().await;
            if tx.unbounded_send(Ok(Frame::data(chunk))).is_err() {
                return;
            }
        }
    });
    (StreamBody::new(rx), payload)
}

/// A server that records every request body it receives and answers 503 to the first
/// `failures` requests, then 200.
async fn recording_upstream(failures: usize) -> (Upstream, Arc<Mutex<Vec<Bytes>>>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&bodies);
    let upstream = Upstream::start(move |request: Request<hyper::body::Incoming>| {
        let seen = Arc::clone(&seen);
        async move {
            let body = request.into_body().collect().await.map(|b| b.to_bytes());
            let n = {
                let mut seen = seen.lock().expect("lock");
                seen.push(body.unwrap_or_default());
                seen.len()
            };
            if n <= failures {
                respond(503, &[], "try again")
            } else {
                respond(200, &[], "stored")
            }
        }
    })
    .await
    .expect("upstream");
    (upstream, bodies)
}

#[tokio::test(start_paused = true)]
async fn a_streamed_post_with_an_idempotency_key_is_resent_byte_for_byte() {
    let (upstream, bodies) = recording_upstream(2).await;
    let retry = RetryLayer::builder()
        .fixed_backoff(Duration::from_millis(10))
        .build()
        .expect("valid config");
    let client = Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Streamed>>();
    let stack = ServiceBuilder::new().layer(retry.clone()).service(client);

    let (body, payload) = streamed_body();
    let request = Request::post(upstream.url("/orders"))
        .header("idempotency-key", "order-42")
        .body(body)
        .expect("valid request");
    let response = stack.oneshot(request).await.expect("a response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response
            .extensions()
            .get::<RetryReport>()
            .map(|r| r.attempts),
        Some(3)
    );
    let bodies = bodies.lock().expect("lock");
    assert_eq!(bodies.len(), 3);
    for (attempt, body) in bodies.iter().enumerate() {
        assert_eq!(body.len(), 10 * 1024, "attempt {}", attempt + 1);
        assert!(
            body[..] == payload[..],
            "attempt {} sent different bytes",
            attempt + 1
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_body_over_the_replay_cap_is_sent_once_and_its_failure_returned() {
    let (upstream, bodies) = recording_upstream(usize::MAX).await;
    let retry = RetryLayer::builder()
        .fixed_backoff(Duration::from_millis(10))
        .max_replay_bytes(4 * 1024)
        .build()
        .expect("valid config");
    let client = Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Streamed>>();
    let stack = ServiceBuilder::new().layer(retry.clone()).service(client);

    let (body, payload) = streamed_body();
    let request = Request::put(upstream.url("/blob"))
        .body(body)
        .expect("valid request");
    let response = stack.oneshot(request).await.expect("a response");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        response.extensions().get::<RetryReport>(),
        Some(&RetryReport {
            attempts: 1,
            stop: Some(StopReason::BodyNotReplayable),
            hint: None
        })
    );
    let bodies = bodies.lock().expect("lock");
    assert_eq!(bodies.len(), 1);
    assert!(bodies[0][..] == payload[..]);
    assert_eq!(
        retry
            .handle()
            .stats()
            .stops_for(StopReason::BodyNotReplayable),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn every_attempt_pays_a_rate_limit_token() {
    // Each path fails as many times as its last digit says, then succeeds.
    let attempts_by_path = Arc::new(Mutex::new(HashMap::<String, u32>::new()));
    let seen = Arc::clone(&attempts_by_path);
    let upstream = Upstream::start(move |request: Request<hyper::body::Incoming>| {
        let path = request.uri().path().to_owned();
        let failures = path
            .chars()
            .last()
            .and_then(|c| c.to_digit(10))
            .unwrap_or(0);
        let n = {
            let mut seen = seen.lock().expect("lock");
            let n = seen.entry(path).or_default();
            *n += 1;
            *n
        };
        async move {
            if n <= failures {
                respond(502, &[], "bad gateway")
            } else {
                respond(200, &[], "ok")
            }
        }
    })
    .await
    .expect("upstream");

    let retry = RetryLayer::builder()
        .max_attempts(3)
        .fixed_backoff(Duration::from_millis(1))
        .build()
        .expect("valid config");
    let limit = RateLimitLayer::builder()
        .per_second(5)
        .burst(1)
        .build()
        .expect("valid config");
    let limiter = limit.handle();
    let client = Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Empty<Bytes>>>();
    let stack = ServiceBuilder::new()
        .layer(retry.clone())
        .layer(limit)
        .service(client);

    // 0 + 1 + 2 + 0 + 1 failures: 9 attempts in all.
    let paths = ["/a0", "/a1", "/a2", "/b0", "/b1"];
    let started = tokio::time::Instant::now();
    let responses = join_all(paths.iter().map(|path| {
        let request = Request::get(upstream.url(path))
            .body(Empty::new())
            .expect("valid request");
        stack.clone().oneshot(request)
    }))
    .await;
    for response in responses {
        assert_eq!(response.expect("a response").status(), StatusCode::OK);
    }
    let sent: u32 = attempts_by_path.lock().expect("lock").values().sum();
    assert_eq!(sent, 9);
    assert_eq!(retry.handle().stats().attempts(), 9);
    assert_eq!(limiter.stats().admitted, 9);
    // Nine tokens at 5/s with a burst of 1: the last cannot be taken before 8 × 200 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(1_600),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_post_without_idempotency_key_is_sent_once_when_the_connection_fails_after_sending() {
    use std::sync::atomic::{AtomicU32, Ordering};
    let received = Arc::new(AtomicU32::new(0));
    let upstream = Upstream::start({
        let received = Arc::clone(&received);
        move |_req| {
            received.fetch_add(1, Ordering::SeqCst);
            async { respond(201, &[], "created") }
        }
    })
    .await
    .expect("upstream");
    let connector = FaultAfterSend::connector(std::io::ErrorKind::HostUnreachable);
    let client =
        Client::builder(TokioExecutor::new()).build::<_, ReplayBody<Empty<Bytes>>>(connector);
    let retry = RetryLayer::builder()
        .max_attempts(3)
        .fixed_backoff(Duration::from_millis(1))
        .build()
        .expect("valid config");
    let stack = ServiceBuilder::new().layer(retry.clone()).service(client);

    let request = Request::post(upstream.url("/payments"))
        .body(Empty::<Bytes>::new())
        .expect("request");
    let error = stack
        .oneshot(request)
        .await
        .expect_err("the connection failed after sending");
    assert_eq!(received.load(Ordering::SeqCst), 1, "{error:?}");
    assert_eq!(error.attempts(), 1);
    assert_eq!(error.stop_reason(), StopReason::NotIdempotent);
    assert!(!error.inner().is_connect());
    assert_eq!(retry.handle().stats().total_retries(), 0);
}
