//! The middleware with a real reqwest client against hyper servers on 127.0.0.1, on tokio's
//! paused clock (the servers read the same clock).

#![allow(
    clippy::unwrap_used,
    reason = "a test reports a broken fixture by panicking"
)]

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Extensions;
use http_body_util::Empty;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};
use seawall::retry::Jitter;
use seawall_core::FailureKind;
use seawall_examples::{Upstream, respond};
use seawall_reqwest::{SeawallMiddleware, failure_kind, stack_error};
use tokio::time::Instant;
use tower::ServiceExt;

/// When each request reached the server, from the test's start.
type Arrivals = Arc<Mutex<Vec<Duration>>>;

/// A status and the headers to send with it.
type Answer = (u16, &'static [(&'static str, &'static str)]);

/// A server that answers the n-th request (from 0) with `answer(n)`, logging arrivals.
async fn upstream(answer: fn(usize) -> Answer) -> (Upstream, Arrivals) {
    let start = Instant::now();
    let arrivals: Arrivals = Arc::default();
    let log = Arc::clone(&arrivals);
    let server = Upstream::start(move |_request| {
        let n = {
            let mut seen = log.lock().unwrap();
            seen.push(start.elapsed());
            seen.len() - 1
        };
        let (status, headers) = answer(n);
        async move { respond(status, headers, "ok") }
    })
    .await
    .unwrap();
    (server, arrivals)
}

/// A server whose first answer takes 30 s and the rest none, and how many requests it got.
async fn slow_first_answer() -> (Upstream, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&calls);
    let server = Upstream::start(move |_request| {
        let first = count.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            if first {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            respond(200, &[], "ok")
        }
    })
    .await
    .unwrap();
    (server, calls)
}

/// Counts the requests that reach the middleware after seawall's: one per attempt.
#[derive(Clone, Default)]
struct CountAttempts(Arc<AtomicUsize>);

#[async_trait::async_trait]
impl Middleware for CountAttempts {
    async fn handle(
        &self,
        request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        self.0.fetch_add(1, Ordering::SeqCst);
        next.run(request, extensions).await
    }
}

/// The standard stack, its retries after a fixed backoff without jitter.
fn retrying_every(backoff: Duration) -> seawall::Stack {
    seawall::stack()
        .retry(move |retry| retry.fixed_backoff(backoff).jitter(Jitter::None))
        .build()
        .unwrap()
}

fn client(stack: &seawall::Stack, attempts: &CountAttempts) -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new())
        .with(SeawallMiddleware::new(stack))
        .with(attempts.clone())
        .build()
}

#[tokio::test(start_paused = true)]
async fn retries_503s_through_the_rest_of_the_chain() {
    let (server, arrivals) = upstream(|n| if n < 2 { (503, &[]) } else { (200, &[]) }).await;
    let stack = seawall::stack()
        .retry(|retry| {
            retry
                .exponential_backoff(Duration::from_millis(100), Duration::from_secs(1))
                .jitter(Jitter::None)
        })
        .build()
        .unwrap();
    let attempts = CountAttempts::default();
    let url = server.url("/items?page=2");
    let response = client(&stack, &attempts).get(&url).send().await.unwrap();

    assert_eq!(response.status(), 200);
    assert_eq!(response.url().as_str(), url);
    assert_eq!(response.text().await.unwrap(), "ok");
    // Two backoffs without jitter: 100 ms, then 200 ms.
    assert_eq!(
        *arrivals.lock().unwrap(),
        [0, 100, 300].map(Duration::from_millis)
    );
    assert_eq!(attempts.0.load(Ordering::SeqCst), 3);
    let retry = stack.retry().stats();
    assert_eq!(retry.retries_for(FailureKind::ServerError), 2);
    assert_eq!(stack.metrics().snapshot().total, 1);
}

#[tokio::test(start_paused = true)]
async fn shares_the_rate_limit_with_a_tower_client_from_the_same_stack() {
    let (server, arrivals) = upstream(|_| (200, &[])).await;
    let stack = seawall::stack()
        .rate_limit(|limit| limit.per_second(1).burst(1))
        .build()
        .unwrap();
    let tower_client = stack.hyper_client::<Empty<Bytes>>();
    let request = http::Request::get(server.url("/a"))
        .body(Empty::new())
        .unwrap();
    assert_eq!(tower_client.oneshot(request).await.unwrap().status(), 200);
    let attempts = CountAttempts::default();
    let response = client(&stack, &attempts)
        .get(server.url("/b"))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    // The tower client took the only token; the reqwest request waited for the next.
    assert_eq!(
        *arrivals.lock().unwrap(),
        [Duration::ZERO, Duration::from_secs(1)]
    );
    let limiter = stack.rate_limit().stats();
    assert_eq!((limiter.admitted, limiter.admitted_after_wait), (2, 1));
    assert_eq!(stack.metrics().snapshot().total, 2);
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_refuses_with_a_typed_error_and_sends_nothing() {
    let (server, arrivals) = upstream(|_| (200, &[])).await;
    let stack = seawall::stack().build().unwrap();
    let url = server.url("/items");
    let request = http::Request::get(url.as_str()).body(()).unwrap();
    let host = seawall_core::KeyExtractor::extract_from(&seawall_core::ByHost, &request);
    stack.circuit_breaker().force_open(&host);
    let attempts = CountAttempts::default();
    let error = client(&stack, &attempts)
        .get(&url)
        .send()
        .await
        .unwrap_err();

    assert_eq!(failure_kind(&error), FailureKind::Rejected);
    let stack_error = stack_error(&error).unwrap();
    // The retry layer's one attempt, refused below it and not retried.
    assert_eq!(stack_error.attempts(), 1);
    assert!(stack_error.inner().as_open().is_some(), "{stack_error}");
    assert!(arrivals.lock().unwrap().is_empty());
    assert_eq!(attempts.0.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn waits_out_a_429_retry_after_before_the_next_attempt() {
    let (server, arrivals) = upstream(|n| {
        if n == 0 {
            (429, &[("retry-after", "2")])
        } else {
            (200, &[])
        }
    })
    .await;
    let stack = seawall::stack().build().unwrap();
    let attempts = CountAttempts::default();
    let response = client(&stack, &attempts)
        .get(server.url("/items"))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    assert_eq!(
        *arrivals.lock().unwrap(),
        [Duration::ZERO, Duration::from_secs(2)]
    );
    assert_eq!(stack.retry().stats().retries_for(FailureKind::Throttled), 1);
}

#[tokio::test(start_paused = true)]
async fn the_attempt_timeout_drops_a_slow_attempt_and_retries() {
    let start = Instant::now();
    let (server, calls) = slow_first_answer().await;
    let stack = seawall::stack()
        .attempt_timeout(Duration::from_secs(1))
        .retry(|retry| {
            retry
                .fixed_backoff(Duration::from_millis(100))
                .jitter(Jitter::None)
        })
        .build()
        .unwrap();
    let attempts = CountAttempts::default();
    let response = client(&stack, &attempts)
        .get(server.url("/slow"))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    // The first attempt was given up at 1 s; the second went out after the 100 ms backoff.
    assert_eq!(start.elapsed(), Duration::from_millis(1_100));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(stack.retry().stats().retries_for(FailureKind::Timeout), 1);
}

#[tokio::test(start_paused = true)]
async fn the_bridge_refuses_a_request_that_did_not_come_through_the_middleware() {
    let mut bridge = seawall_reqwest::Bridge;
    let request = http::Request::get("http://127.0.0.1:9/")
        .body(reqwest::Body::from(""))
        .unwrap();
    let error = tower::Service::call(&mut bridge, request)
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        seawall_reqwest::BridgeError::OutsideMiddleware
    ));
}

#[tokio::test(start_paused = true)]
async fn a_post_with_an_idempotency_key_is_resent_with_the_same_body() {
    use http_body_util::BodyExt;
    let bodies: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let log = Arc::clone(&bodies);
    let server = Upstream::start(move |request: http::Request<hyper::body::Incoming>| {
        let log = Arc::clone(&log);
        async move {
            let body = request.into_body().collect().await.unwrap().to_bytes();
            let first = {
                let mut seen = log.lock().unwrap();
                seen.push(body);
                seen.len() == 1
            };
            respond(if first { 503 } else { 201 }, &[], "ok")
        }
    })
    .await
    .unwrap();
    let stack = seawall::stack()
        .retry(|retry| retry.fixed_backoff(Duration::from_millis(10)))
        .build()
        .unwrap();
    let payload: Vec<u8> = (0..10_240u32).map(|i| (i % 251) as u8).collect();
    let attempts = CountAttempts::default();
    let response = client(&stack, &attempts)
        .post(server.url("/orders"))
        .header("idempotency-key", "order-42")
        .body(payload.clone())
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 201);
    let bodies = bodies.lock().unwrap();
    assert_eq!(bodies.len(), 2);
    assert!(bodies.iter().all(|body| body[..] == payload[..]));
}

/// A user's POST answered with a 307 or 308 (a moved endpoint): reqwest follows it, sending
/// the body again, as it does without the middleware.
#[tokio::test(start_paused = true)]
async fn a_post_answered_with_307_or_308_follows_the_redirect_with_its_body() {
    use http_body_util::BodyExt;
    let server = Upstream::start(|request: http::Request<hyper::body::Incoming>| async move {
        let path = request.uri().path().to_owned();
        let body = request.into_body().collect().await.unwrap().to_bytes();
        match path.as_str() {
            "/old-307" => respond(307, &[("location", "/new")], ""),
            "/old-308" => respond(308, &[("location", "/new")], ""),
            _ => http::Response::new(http_body_util::Full::new(body)),
        }
    })
    .await
    .unwrap();
    let stack = seawall::stack().build().unwrap();
    let attempts = CountAttempts::default();
    let client = client(&stack, &attempts);
    for path in ["/old-307", "/old-308"] {
        let response = client
            .post(server.url(path))
            .body(r#"{"order":42}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.url().path(), "/new", "{path}");
        assert_eq!(response.text().await.unwrap(), r#"{"order":42}"#, "{path}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_reqwest_timeout_is_a_timeout_the_stack_retries() {
    let start = Instant::now();
    let (server, calls) = slow_first_answer().await;
    let stack = retrying_every(Duration::from_millis(100));
    let client = ClientBuilder::new(
        reqwest::Client::builder()
            .timeout(Duration::from_millis(200))
            .build()
            .unwrap(),
    )
    .with(SeawallMiddleware::new(&stack))
    .build();

    let response = client.get(server.url("/slow")).send().await.unwrap();

    assert_eq!(response.status(), 200);
    // reqwest gave the first attempt up at 200 ms; the retry went out 100 ms later.
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(stack.retry().stats().retries_for(FailureKind::Timeout), 1);
}

#[tokio::test(start_paused = true)]
async fn a_layer_that_works_after_the_last_attempt_still_answers() {
    let (server, _arrivals) = upstream(|_| (200, &[])).await;
    // After the answer arrives, this layer waits before passing it on: the middleware keeps
    // driving the stack with no attempt left to serve, and neither hangs nor gives up.
    let layer = tower::util::AndThenLayer::new(|response: http::Response<reqwest::Body>| async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        Ok::<_, seawall_reqwest::BridgeError>(response)
    });
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(SeawallMiddleware::from_layer(layer))
        .build();

    let response = client.get(server.url("/later")).send().await.unwrap();

    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "ok");
}

/// A request's `x-tenant` header, as the stack's key.
fn tenant(head: &seawall_core::RequestHead<'_>) -> String {
    head.headers
        .get("x-tenant")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("anonymous")
        .to_owned()
}

#[tokio::test(start_paused = true)]
async fn a_stack_keyed_by_tenant_is_shared_by_the_middleware_and_tower_clients() {
    let (server, arrivals) = upstream(|_| (200, &[])).await;
    let stack = seawall::stack()
        .key_by(tenant)
        .rate_limit(|limit| limit.per_second(1).burst(1).fail_fast())
        .build()
        .unwrap();
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(SeawallMiddleware::new(&stack))
        .build();
    let url = server.url("/");
    let response = client
        .get(&url)
        .header("x-tenant", "acme")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Acme's one token is spent: a tower client of the same stack is refused for acme...
    let tower = stack.hyper_client::<Empty<Bytes>>();
    let request = |tenant: &str| {
        http::Request::get(&url)
            .header("x-tenant", tenant)
            .body(Empty::new())
            .unwrap()
    };
    assert!(tower.clone().oneshot(request("acme")).await.is_err());
    // ... and the middleware too, while another tenant goes through.
    let refused = client
        .get(&url)
        .header("x-tenant", "acme")
        .send()
        .await
        .unwrap_err();
    assert_eq!(failure_kind(&refused), FailureKind::Rejected);
    let response = client
        .get(&url)
        .header("x-tenant", "globex")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(arrivals.lock().unwrap().len(), 2);
    let limits = stack.rate_limit().stats();
    assert_eq!(
        (limits.admitted, limits.rejected_limited, limits.keys),
        (2, 2, 2)
    );
}

/// A middleware after seawall's whose first call fails as a timed-out connection would (as a
/// proxy or a signing middleware that gives up reports it).
#[derive(Clone, Default)]
struct TimesOutOnce(Arc<AtomicUsize>);

#[async_trait::async_trait]
impl Middleware for TimesOutOnce {
    async fn handle(
        &self,
        request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(reqwest_middleware::Error::middleware(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no answer in time",
            )));
        }
        next.run(request, extensions).await
    }
}

#[tokio::test]
async fn a_later_middleware_s_timeout_is_classified_and_retried() {
    let (server, _arrivals) = upstream(|_| (200, &[])).await;
    let stack = retrying_every(Duration::from_millis(1));
    let calls = TimesOutOnce::default();
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(SeawallMiddleware::new(&stack))
        .with(calls.clone())
        .build();
    let response = client.get(server.url("/items")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(calls.0.load(Ordering::SeqCst), 2);
    assert_eq!(stack.retry().stats().retries_for(FailureKind::Timeout), 1);
}
