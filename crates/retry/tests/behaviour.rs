//! The retry service end to end over in-process upstreams, on paused time.

use std::convert::Infallible;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use seawall_core::{FailureKind, Outcome};
use seawall_retry::{Jitter, ReplayBody, RetryError, RetryLayer, RetryReport, StopReason};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

type Body = ReplayBody<Full<Bytes>>;

fn get() -> Request<Full<Bytes>> {
    Request::get("http://api.test/items")
        .body(Full::new(Bytes::new()))
        .expect("valid request")
}

fn status(code: u16, headers: &[(&str, &str)]) -> Response<()> {
    let mut builder = Response::builder().status(code);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).expect("valid response")
}

/// An upstream that plays `script` in order (the last entry repeats) and counts its calls.
fn scripted(
    script: Vec<Result<Response<()>, io::ErrorKind>>,
) -> (
    impl Service<Request<Body>, Response = Response<()>, Error = io::Error, Future: Send> + Clone,
    Arc<AtomicU32>,
) {
    let calls = Arc::new(AtomicU32::new(0));
    let script = Arc::new(script);
    let service = service_fn({
        let calls = Arc::clone(&calls);
        move |_req: Request<Body>| {
            let n = calls.fetch_add(1, Ordering::SeqCst) as usize;
            let step = script[n.min(script.len() - 1)].clone();
            async move { step.map_err(io::Error::from) }
        }
    });
    (service, calls)
}

#[tokio::test(start_paused = true)]
async fn obeys_retry_after_and_reports_the_retry() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let layer = RetryLayer::builder()
        .fixed_backoff(Duration::from_millis(100))
        .on_retry({
            let seen = Arc::clone(&seen);
            move |attempt, delay, reason| seen.lock().unwrap().push((attempt, delay, reason))
        })
        .build()
        .unwrap();
    let (upstream, calls) = scripted(vec![
        Ok(status(429, &[("retry-after", "2")])),
        Ok(status(200, &[])),
    ]);
    let started = Instant::now();
    let response = layer.layer(upstream).oneshot(get()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        response.extensions().get::<RetryReport>(),
        Some(&RetryReport {
            attempts: 2,
            stop: None,
            hint: None
        })
    );
    // What the metrics layer above reads, through seawall-core alone.
    assert_eq!(seawall_core::Attempts::of(&response), 2);
    assert_eq!(
        response.extensions().get::<seawall_core::Attempts>(),
        Some(&seawall_core::Attempts(2))
    );
    assert_eq!(
        *seen.lock().unwrap(),
        [(1, Duration::from_secs(2), FailureKind::Throttled)]
    );
    let stats = layer.handle().stats();
    assert_eq!((stats.requests, stats.attempts()), (1, 2));
    assert_eq!(stats.retries_for(FailureKind::Throttled), 1);
}

#[tokio::test(start_paused = true)]
async fn the_final_error_names_the_attempts_and_the_last_cause() {
    let layer = RetryLayer::builder()
        .max_attempts(3)
        .fixed_backoff(Duration::from_millis(10))
        .build()
        .unwrap();
    let (upstream, calls) = scripted(vec![Err(io::ErrorKind::ConnectionReset)]);
    let error: RetryError<io::Error> = layer.layer(upstream).oneshot(get()).await.unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(error.attempts(), 3);
    assert_eq!(seawall_core::ClassifyError::attempts(&error), Some(3));
    assert_eq!(error.stop_reason(), StopReason::AttemptsExhausted);
    assert_eq!(error.inner().kind(), io::ErrorKind::ConnectionReset);
    assert_eq!(
        error.to_string(),
        "request failed after 3 attempts (no attempts left)"
    );
    // The cause is the source, printed once by whoever walks the chain.
    assert_eq!(
        std::error::Error::source(&error).map(ToString::to_string),
        Some("connection reset".to_owned())
    );
    let stats = layer.handle().stats();
    assert_eq!(stats.retries_for(FailureKind::Transport), 2);
    assert_eq!(stats.stops_for(StopReason::AttemptsExhausted), 1);
    assert_eq!(stats.gave_up(), 1);
}

/// Sends one request through `layer` to an upstream that answers 429 with
/// `Retry-After: hint_secs`, a wait past the layer's deadline, and checks that the 429 came
/// back at once after one attempt, its report saying the deadline stopped it and what the
/// server asked for.
async fn assert_a_hint_past_the_deadline_returns_at_once(layer: &RetryLayer, hint_secs: u64) {
    let hint = hint_secs.to_string();
    let (upstream, calls) = scripted(vec![Ok(status(429, &[("retry-after", &hint)]))]);
    let started = Instant::now();
    let response = layer
        .layer(upstream)
        .oneshot(get())
        .await
        .expect("the 429 is returned as a response");
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        response.extensions().get::<RetryReport>(),
        Some(&RetryReport {
            attempts: 1,
            stop: Some(StopReason::DeadlineExceeded),
            hint: Some(Duration::from_secs(hint_secs)),
        })
    );
    // One attempt is what a response without `Attempts` means: nothing is inserted for it.
    assert_eq!(response.extensions().get::<seawall_core::Attempts>(), None);
    assert_eq!(seawall_core::Attempts::of(&response), 1);
}

#[tokio::test(start_paused = true)]
async fn a_hint_past_the_deadline_stops_at_once_with_the_hint() {
    let layer = RetryLayer::builder()
        .deadline(Duration::from_secs(10))
        .build()
        .unwrap();
    assert_a_hint_past_the_deadline_returns_at_once(&layer, 30).await;
}

#[tokio::test(start_paused = true)]
async fn a_throttling_upstream_cannot_hold_a_request_past_the_default_deadline() {
    // The defaults, as a user who sets nothing gets them: 3 attempts, hints up to 5 min.
    let layer = RetryLayer::builder().seed(1).build().unwrap();
    // Waiting 300 s cannot end before the 30 s deadline: the 429 is returned at once, with
    // what the server asked for, rather than after 2 × 300 s.
    assert_a_hint_past_the_deadline_returns_at_once(&layer, 300).await;
    assert_eq!(
        layer
            .handle()
            .stats()
            .stops_for(StopReason::DeadlineExceeded),
        1
    );
    assert_eq!(layer.policy().deadline(), Some(Duration::from_secs(30)));
}

#[tokio::test(start_paused = true)]
async fn the_default_deadline_stops_retries_at_exactly_30_s() {
    let layer = RetryLayer::builder()
        .max_attempts(100)
        .fixed_backoff(Duration::from_millis(10))
        .build()
        .unwrap();
    let (upstream, calls) = scripted(vec![Ok(status(429, &[("retry-after", "10")]))]);
    let started = Instant::now();
    let response = layer.layer(upstream).oneshot(get()).await.unwrap();
    // Attempts at 0, 10, 20 and 30 s; the next would start at 40 s, past the deadline.
    assert_eq!(started.elapsed(), Duration::from_secs(30));
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert_eq!(
        response.extensions().get::<RetryReport>(),
        Some(&RetryReport {
            attempts: 4,
            stop: Some(StopReason::DeadlineExceeded),
            hint: Some(Duration::from_secs(10)),
        })
    );
}

#[tokio::test(start_paused = true)]
async fn the_default_deadline_ends_a_failing_request_with_its_attempts() {
    let layer = RetryLayer::builder()
        .max_attempts(100)
        .fixed_backoff(Duration::from_secs(7))
        .jitter(Jitter::None)
        .build()
        .unwrap();
    let (upstream, calls) = scripted(vec![Err(io::ErrorKind::ConnectionReset)]);
    let started = Instant::now();
    let error: RetryError<io::Error> = layer.layer(upstream).oneshot(get()).await.unwrap_err();
    // Attempts at 0, 7, 14, 21 and 28 s; the next would start at 35 s.
    assert_eq!(started.elapsed(), Duration::from_secs(28));
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    assert_eq!(error.attempts(), 5);
    assert_eq!(error.stop_reason(), StopReason::DeadlineExceeded);
    assert_eq!(error.hint(), None);
    assert_eq!(error.inner().kind(), io::ErrorKind::ConnectionReset);
}

#[tokio::test(start_paused = true)]
async fn no_deadline_lets_retries_wait_as_long_as_the_server_asks() {
    let layer = RetryLayer::builder().no_deadline().seed(1).build().unwrap();
    assert_eq!(layer.policy().deadline(), None);
    let (upstream, calls) = scripted(vec![Ok(status(429, &[("retry-after", "300")]))]);
    let started = Instant::now();
    let response = layer.layer(upstream).oneshot(get()).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(600));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        response.extensions().get::<RetryReport>(),
        Some(&RetryReport {
            attempts: 3,
            stop: Some(StopReason::AttemptsExhausted),
            hint: None,
        })
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_forms_garbage_and_absurd_values_through_the_service() {
    let past = httpdate::fmt_http_date(std::time::SystemTime::now() - Duration::from_secs(60));
    let future = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(5));
    // (Retry-After, the wait the layer keeps before the second attempt)
    let cases = [
        ("3", Duration::from_secs(3)),
        ("soon", Duration::from_millis(100)),
        ("-1", Duration::from_millis(100)),
        ("99999999999", Duration::from_millis(100)),
        // Above the 5-minute cap: clamped.
        ("1200", Duration::from_secs(300)),
        (past.as_str(), Duration::from_millis(100)),
    ];
    for (value, wait) in cases {
        // No deadline, so that a clamped 5-minute hint is waited out.
        let layer = RetryLayer::builder()
            .fixed_backoff(Duration::from_millis(100))
            .jitter(seawall_retry::Jitter::None)
            .no_deadline()
            .build()
            .unwrap();
        let (upstream, _) = scripted(vec![
            Ok(status(503, &[("retry-after", value)])),
            Ok(status(200, &[])),
        ]);
        let started = Instant::now();
        layer.layer(upstream).oneshot(get()).await.unwrap();
        assert_eq!(started.elapsed(), wait, "Retry-After: {value}");
    }
    // An HTTP date in the future: the date has one-second resolution and the clock moves on
    // while the test runs, so the wait is 4 to 5 seconds.
    let layer = RetryLayer::builder().build().unwrap();
    let (upstream, _) = scripted(vec![
        Ok(status(503, &[("retry-after", future.as_str())])),
        Ok(status(200, &[])),
    ]);
    let started = Instant::now();
    layer.layer(upstream).oneshot(get()).await.unwrap();
    let waited = started.elapsed();
    assert!(
        waited > Duration::from_secs(4) && waited <= Duration::from_secs(5),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_budget_caps_retries_at_its_share_plus_the_floor() {
    // 10,000 requests over 10 s against an upstream that always fails; 20 % plus 10/s.
    let layer = RetryLayer::builder()
        .max_attempts(3)
        .fixed_backoff(Duration::ZERO)
        .budget(Duration::from_secs(10), 10, 20.0)
        .build()
        .unwrap();
    let (upstream, calls) = scripted(vec![Ok(status(503, &[]))]);
    let client = layer.layer(upstream);
    for i in 0..10_000 {
        if i > 0 {
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        let response = client.clone().oneshot(get()).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    let stats = layer.handle().stats();
    let retries = stats.total_retries();
    assert!((2_099..=2_101).contains(&retries), "{retries} retries");
    assert_eq!(u64::from(calls.load(Ordering::SeqCst)), 10_000 + retries);
    assert_eq!(layer.handle().budget_available(), Some(0));

    // The budget is empty: four more failing requests (0.8 of a retry) are not retried.
    let before = stats.budget_exhausted();
    for _ in 0..4 {
        let response = client.clone().oneshot(get()).await.unwrap();
        assert_eq!(
            response.extensions().get::<RetryReport>(),
            Some(&RetryReport {
                attempts: 1,
                stop: Some(StopReason::BudgetExhausted),
                hint: None
            })
        );
    }
    let after = layer.handle().stats();
    assert_eq!(after.total_retries(), retries);
    assert_eq!(after.budget_exhausted(), before + 4);
}

/// Counts `poll_ready` calls, so that every attempt is seen to wait for readiness.
#[derive(Clone)]
struct CountsReadiness<S> {
    inner: S,
    ready_polls: Arc<AtomicU32>,
}

impl<S: Service<R>, R> Service<R> for CountsReadiness<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.ready_polls.fetch_add(1, Ordering::SeqCst);
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> S::Future {
        self.inner.call(request)
    }
}

#[tokio::test(start_paused = true)]
async fn every_attempt_waits_for_readiness_and_keeps_the_extensions() {
    #[derive(Clone, Debug, PartialEq)]
    struct Tag(&'static str);
    let tags = Arc::new(Mutex::new(Vec::new()));
    let calls = Arc::new(AtomicU32::new(0));
    let upstream = service_fn({
        let (tags, calls) = (Arc::clone(&tags), Arc::clone(&calls));
        move |req: Request<Body>| {
            tags.lock()
                .unwrap()
                .push(req.extensions().get::<Tag>().cloned());
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, Infallible>(status(if n < 2 { 500 } else { 204 }, &[])) }
        }
    });
    let ready_polls = Arc::new(AtomicU32::new(0));
    let layer = RetryLayer::builder()
        .fixed_backoff(Duration::from_millis(5))
        .build()
        .unwrap();
    let client = layer.layer(CountsReadiness {
        inner: upstream,
        ready_polls: Arc::clone(&ready_polls),
    });
    let mut request = get();
    request.extensions_mut().insert(Tag("priority"));
    let response = client.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(ready_polls.load(Ordering::SeqCst), 3);
    assert_eq!(*tags.lock().unwrap(), vec![Some(Tag("priority")); 3]);
}

/// Counts its clones, so that what the layer clones per request is seen.
struct CountsClones<S> {
    inner: S,
    clones: Arc<AtomicU32>,
}

impl<S: Clone> Clone for CountsClones<S> {
    fn clone(&self) -> Self {
        self.clones.fetch_add(1, Ordering::SeqCst);
        Self {
            inner: self.inner.clone(),
            clones: Arc::clone(&self.clones),
        }
    }
}

impl<S: Service<R>, R> Service<R> for CountsClones<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> S::Future {
        self.inner.call(request)
    }
}

/// A request that succeeds first time clones nothing; a request that is retried clones the
/// wrapped service once, when its first retry is due, and uses that clone for every retry.
#[tokio::test(start_paused = true)]
async fn only_a_retried_request_clones_the_service() {
    let (upstream, calls) = scripted(vec![Ok(status(200, &[]))]);
    let clones = Arc::new(AtomicU32::new(0));
    let layer = RetryLayer::builder()
        .fixed_backoff(Duration::from_millis(5))
        .build()
        .unwrap();
    let mut client = layer.layer(CountsClones {
        inner: upstream,
        clones: Arc::clone(&clones),
    });
    let made = clones.load(Ordering::SeqCst);
    for _ in 0..100 {
        let response = client.ready().await.unwrap().call(get()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 100);
    assert_eq!(
        clones.load(Ordering::SeqCst),
        made,
        "no clone for first-time successes"
    );

    let (upstream, calls) = scripted(vec![
        Ok(status(503, &[])),
        Ok(status(503, &[])),
        Ok(status(200, &[])),
    ]);
    let clones = Arc::new(AtomicU32::new(0));
    let mut client = layer.layer(CountsClones {
        inner: upstream,
        clones: Arc::clone(&clones),
    });
    let made = clones.load(Ordering::SeqCst);
    let response = client.ready().await.unwrap().call(get()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        clones.load(Ordering::SeqCst),
        made + 1,
        "one clone for both retries"
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_cancelled_during_its_backoff_sends_nothing_more() {
    let layer = RetryLayer::builder()
        .fixed_backoff(Duration::from_secs(1))
        .build()
        .unwrap();
    let (upstream, calls) = scripted(vec![Ok(status(502, &[]))]);
    let mut future = Box::pin(layer.layer(upstream).oneshot(get()));
    assert!(
        (&mut future).now_or_never().is_none(),
        "waiting out the backoff"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // The default budget: a floor of 100 retries over 10 s, and 0.2 for the request; the
    // retry decided took one.
    assert_eq!(layer.handle().budget_available(), Some(99));
    drop(future);
    // Never sent, so given back: a caller's timeout during backoffs must not drain the
    // budget other callers' retries need.
    assert_eq!(layer.handle().budget_available(), Some(100));
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Not made, so not counted: the figures' attempts are the attempts sent.
    let stats = layer.handle().stats();
    assert_eq!((stats.total_retries(), stats.attempts()), (0, 1));
}

#[tokio::test(start_paused = true)]
async fn an_operation_dropped_during_its_backoff_gives_its_retry_back() {
    // `run_with` takes its retries from the same budget as requests, and gives them back the
    // same way.
    let layer = RetryLayer::builder()
        .fixed_backoff(Duration::from_secs(1))
        .build()
        .unwrap();
    let transient = |_: &Result<(), &str>| Outcome::Failure(FailureKind::Transport);
    let calls = AtomicU32::new(0);
    let mut run = Box::pin(layer.run_with(&transient, || {
        calls.fetch_add(1, Ordering::SeqCst);
        async { Err("reset") }
    }));
    assert!(
        run.as_mut().now_or_never().is_none(),
        "waiting out the backoff"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(layer.handle().budget_available(), Some(99));
    drop(run);
    assert_eq!(layer.handle().budget_available(), Some(100));
    let stats = layer.handle().stats();
    assert_eq!((stats.total_retries(), stats.attempts()), (0, 1));
}

#[tokio::test(start_paused = true)]
async fn a_retry_whose_withdrawal_left_the_window_gives_nothing_back() {
    // A backoff of 20 s, twice the budget's window: by the time the caller gives up, the
    // retry taken has left the window by itself, and giving it back again would add one.
    let layer = RetryLayer::builder()
        .fixed_backoff(Duration::from_secs(20))
        .build()
        .unwrap();
    let (upstream, _calls) = scripted(vec![Ok(status(502, &[]))]);
    let mut future = Box::pin(layer.layer(upstream).oneshot(get()));
    assert!((&mut future).now_or_never().is_none());
    assert_eq!(layer.handle().budget_available(), Some(99));
    tokio::time::advance(Duration::from_secs(15)).await;
    // The floor alone: the withdrawal and the request's deposit have both left the window.
    assert_eq!(layer.handle().budget_available(), Some(100));
    drop(future);
    assert_eq!(layer.handle().budget_available(), Some(100));
}

#[tokio::test(start_paused = true)]
async fn a_retry_sent_keeps_its_budget_withdrawal() {
    let layer = RetryLayer::builder()
        .fixed_backoff(Duration::from_secs(1))
        .build()
        .unwrap();
    let (upstream, calls) = scripted(vec![Ok(status(502, &[])), Ok(status(200, &[]))]);
    let response = layer.layer(upstream).oneshot(get()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(layer.handle().budget_available(), Some(99));
}

#[tokio::test(start_paused = true)]
async fn post_is_sent_once_unless_it_carries_an_idempotency_key() {
    let layer = RetryLayer::builder()
        .fixed_backoff(Duration::from_millis(1))
        .build()
        .unwrap();
    let (upstream, calls) = scripted(vec![Ok(status(503, &[])), Ok(status(201, &[]))]);
    let post = || Request::post("http://api.test/orders");
    let response = layer
        .layer(upstream.clone())
        .oneshot(post().body(Full::new(Bytes::from_static(b"{}"))).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Not a give-up: the request was never retryable, so no report is added.
    assert_eq!(response.extensions().get::<RetryReport>(), None);

    let response = layer
        .layer(upstream)
        .oneshot(
            post()
                .header("idempotency-key", "order-7")
                .body(Full::new(Bytes::from_static(b"{}")))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// PUTs `document` through a retry layer to an upstream that answers 503 `failures` times,
/// then 200: the final status, and the body each attempt sent.
async fn bodies_sent(document: Bytes, failures: u32) -> (StatusCode, Vec<Bytes>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let calls = Arc::new(AtomicU32::new(0));
    let upstream = service_fn({
        let (bodies, calls) = (Arc::clone(&bodies), Arc::clone(&calls));
        move |req: Request<Body>| {
            let (bodies, n) = (Arc::clone(&bodies), calls.fetch_add(1, Ordering::SeqCst));
            async move {
                let bytes = req
                    .into_body()
                    .collect()
                    .await
                    .expect("a complete body")
                    .to_bytes();
                bodies.lock().expect("not poisoned").push(bytes);
                Ok::<_, Infallible>(status(if n < failures { 503 } else { 200 }, &[]))
            }
        }
    });
    let layer = RetryLayer::builder()
        .fixed_backoff(Duration::from_millis(1))
        .build()
        .expect("valid settings");
    let request = Request::put("http://api.test/doc")
        .body(Full::new(document))
        .expect("a valid request");
    let response = layer
        .layer(upstream)
        .oneshot(request)
        .await
        .expect("an answer");
    let sent = bodies.lock().expect("not poisoned").clone();
    (response.status(), sent)
}

#[tokio::test(start_paused = true)]
async fn every_attempt_sends_the_same_body() {
    let document = Bytes::from_static(b"the document");
    assert_eq!(
        bodies_sent(document.clone(), 2).await,
        (StatusCode::OK, vec![document; 3])
    );
}

#[tokio::test(start_paused = true)]
async fn a_complete_body_over_the_replay_cap_is_retried_whole() {
    // A 100 KiB document in memory, over the default 64 KiB cap, which bounds only what a
    // streamed body would have to keep.
    let document = Bytes::from(vec![b'x'; 100 * 1024]);
    assert_eq!(
        bodies_sent(document.clone(), 1).await,
        (StatusCode::OK, vec![document; 2])
    );
}

#[tokio::test(start_paused = true)]
async fn every_attempt_sends_the_same_head() {
    type Head = (
        http::Method,
        http::Uri,
        http::Version,
        Vec<(String, Vec<u8>, bool)>,
    );
    let heads: Arc<Mutex<Vec<Head>>> = Arc::new(Mutex::new(Vec::new()));
    let calls = Arc::new(AtomicU32::new(0));
    let upstream = service_fn({
        let (heads, calls) = (Arc::clone(&heads), Arc::clone(&calls));
        move |req: Request<Body>| {
            let headers = req
                .headers()
                .iter()
                .map(|(name, value)| {
                    let bytes = value.as_bytes().to_vec();
                    (name.to_string(), bytes, value.is_sensitive())
                })
                .collect();
            let head = (
                req.method().clone(),
                req.uri().clone(),
                req.version(),
                headers,
            );
            heads.lock().unwrap().push(head);
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, Infallible>(status(if n < 2 { 503 } else { 200 }, &[])) }
        }
    });
    let layer = RetryLayer::builder()
        .fixed_backoff(Duration::from_millis(1))
        .build()
        .unwrap();
    let mut token = http::HeaderValue::from_static("Bearer t0k3n");
    token.set_sensitive(true);
    let request = Request::delete("https://user@api.test:8443/items/7?force=true&note=a%20b")
        .version(http::Version::HTTP_2)
        .header("accept", "application/json")
        .header("x-trace", "first")
        .header("authorization", token)
        .header("x-trace", "second")
        .header(
            "x-opaque",
            http::HeaderValue::from_bytes(b"caf\xe9").unwrap(),
        )
        .body(Full::new(Bytes::new()))
        .unwrap();
    let expected = {
        let headers = request.headers().iter();
        let headers = headers
            .map(|(name, value)| {
                (
                    name.to_string(),
                    value.as_bytes().to_vec(),
                    value.is_sensitive(),
                )
            })
            .collect::<Vec<_>>();
        (
            request.method().clone(),
            request.uri().clone(),
            request.version(),
            headers,
        )
    };
    let response = layer.layer(upstream).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(*heads.lock().unwrap(), vec![expected; 3]);
}

#[test]
fn every_invalid_setting_is_a_config_error_naming_its_field() {
    let cases: Vec<(&str, seawall_retry::RetryBuilder)> = vec![
        ("max_attempts", RetryLayer::builder().max_attempts(0)),
        ("max_attempts", RetryLayer::builder().max_attempts(101)),
        (
            "backoff_cap",
            RetryLayer::builder()
                .exponential_backoff(Duration::from_secs(2), Duration::from_secs(1)),
        ),
        (
            "backoff_base",
            RetryLayer::builder().fixed_backoff(Duration::from_secs(7_200)),
        ),
        (
            "backoff_cap",
            RetryLayer::builder()
                .linear_backoff(Duration::from_secs(1), Duration::from_secs(200_000)),
        ),
        ("deadline", RetryLayer::builder().deadline(Duration::ZERO)),
        (
            "deadline",
            RetryLayer::builder().deadline(Duration::from_secs(100_000)),
        ),
        (
            "max_replay_bytes",
            RetryLayer::builder().max_replay_bytes(2 << 30),
        ),
        (
            "budget_ttl",
            RetryLayer::builder().budget(Duration::ZERO, 10, 20.0),
        ),
        (
            "budget_min_per_sec",
            RetryLayer::builder().budget(Duration::from_secs(10), 5_000_000, 20.0),
        ),
        (
            "budget_percent",
            RetryLayer::builder().budget(Duration::from_secs(10), 10, -5.0),
        ),
        (
            "budget_percent",
            RetryLayer::builder().budget(Duration::from_secs(10), 10, f64::INFINITY),
        ),
    ];
    for (field, builder) in cases {
        let error = builder.build().expect_err(field);
        assert_eq!(error.field(), field, "{error}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_answer_after_retries_carries_every_attempts_wait_in_the_limiter() {
    let waited = |code: u16, wait_ms: u64| {
        let mut response = status(code, &[]);
        response
            .extensions_mut()
            .insert(seawall_core::QueueWait(Duration::from_millis(wait_ms)));
        Ok(response)
    };
    let layer = RetryLayer::builder()
        .fixed_backoff(Duration::from_millis(10))
        .build()
        .unwrap();
    // Two 503s that waited 1 s and 2 s in a limiter below, then a 200 that waited 4 s.
    let (upstream, calls) = scripted(vec![
        waited(503, 1_000),
        waited(503, 2_000),
        waited(200, 4_000),
    ]);
    let response = layer.layer(upstream).oneshot(get()).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        seawall_core::QueueWait::of(&response),
        Duration::from_millis(7_000)
    );
    // Without retries the answer's own wait is left as it is.
    let (upstream, _) = scripted(vec![waited(200, 4_000)]);
    let response = layer.layer(upstream).oneshot(get()).await.unwrap();
    assert_eq!(
        seawall_core::QueueWait::of(&response),
        Duration::from_millis(4_000)
    );
}
