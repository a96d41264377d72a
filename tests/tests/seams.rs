//! The seams between layers, stacked by hand: a circuit breaker that opens refuses the
//! requests already waiting in the rate limiter below it, and neither layer makes a refusal or
//! a waiting request hold what the service below gives out on `poll_ready` (a
//! `ConcurrencyLimit` permit, a `Buffer` slot).
//!
//! The upstream here is an in-process service with scripted latency, so that every instant is
//! exact on tokio's paused clock (a socket's I/O lets the paused clock jump ahead).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use seawall_circuit_breaker::{BreakerError, CircuitBreakerLayer, State};
use seawall_rate_limit::RateLimitLayer;
use tokio::time::{Instant, sleep};
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Layer, Service, ServiceBuilder, ServiceExt};

/// The service a layer under test wraps: what sits between it and the upstream.
type Below = BoxCloneSyncService<Request<()>, Response<()>, BoxError>;

/// An upstream that answers `status` after `latency`, and the number of calls it received.
fn upstream(
    status: u16,
    latency: Duration,
) -> (
    impl Service<Request<()>, Response = Response<()>, Error = Infallible, Future: Send>
    + Clone
    + Send
    + 'static,
    Arc<AtomicU32>,
) {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    let service = tower::service_fn(move |_request: Request<()>| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            sleep(latency).await;
            let mut response = Response::new(());
            *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            Ok::<_, Infallible>(response)
        }
    });
    (service, calls)
}

fn get(host: &str) -> Request<()> {
    Request::get(format!("http://{host}/items"))
        .body(())
        .expect("a valid request")
}

/// What a user sees: the layer's typed refusal, at the instant it came.
#[derive(Debug, Clone, PartialEq)]
enum Ending {
    Status(u16, Duration),
    BreakerOpen {
        state: State,
        retry_at: Option<Duration>,
        at: Duration,
    },
    Other(String),
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_refuses_requests_already_waiting_in_the_limiter() {
    let start = Instant::now();
    let (service, calls) = upstream(503, Duration::from_millis(400));
    let breaker = CircuitBreakerLayer::builder()
        .consecutive_failures(3)
        .open_duration(Duration::from_secs(30))
        .build()
        .expect("valid breaker");
    let limiter = RateLimitLayer::builder()
        .per_second(2)
        .burst(3)
        .build()
        .expect("valid limiter");
    let client = ServiceBuilder::new()
        .layer(breaker.clone())
        .layer(limiter.clone())
        .service(service);
    // 18 requests at once: 3 go (the burst), 15 wait for slots 500 ms apart. The 3 answer
    // 503 at 400 ms and open the breaker, before the first waiter's slot.
    let endings = futures::future::join_all((0..18).map(|_| {
        let client = client.clone();
        async move {
            let result = client.oneshot(get("api.test")).await;
            let at = start.elapsed();
            match result {
                Ok(response) => Ending::Status(response.status().as_u16(), at),
                Err(BreakerError::Open(open)) => Ending::BreakerOpen {
                    state: open.state(),
                    retry_at: open.retry_at().map(|t| t - start),
                    at,
                },
                Err(other) => Ending::Other(other.to_string()),
            }
        }
    }))
    .await;
    let mut expected = vec![Ending::Status(503, Duration::from_millis(400)); 3];
    // Refused as the open breaker refuses, with when it next admits; the first waiter at its
    // slot, and, since it took no token, every waiter behind it at that same instant.
    expected.extend((0..15).map(|_| Ending::BreakerOpen {
        state: State::Open,
        retry_at: Some(Duration::from_millis(30_400)),
        at: Duration::from_millis(500),
    }));
    assert_eq!(endings, expected);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "no waiter reached the upstream"
    );
    let breaker_stats = &breaker.handle().stats()[0];
    assert_eq!(
        (
            breaker_stats.failures,
            breaker_stats.rejected,
            breaker_stats.ignored
        ),
        (3, 15, 0),
        "each withdrawn request is one refusal"
    );
    let limiter_stats = limiter.handle().stats();
    assert_eq!(
        (
            limiter_stats.admitted,
            limiter_stats.withdrawn,
            limiter_stats.cancelled,
            limiter_stats.rejected_wait_too_long + limiter_stats.rejected_queue_full,
            limiter_stats.queue_depth,
        ),
        (3, 15, 0, 0, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn the_seam_holds_through_layers_that_call_on_from_their_own_call() {
    let start = Instant::now();
    let (service, calls) = upstream(503, Duration::from_millis(400));
    let breaker = CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .open_duration(Duration::from_secs(10))
        .build()
        .expect("valid breaker");
    let limiter = RateLimitLayer::builder()
        .per_second(1)
        .build()
        .expect("valid limiter");
    // A user's own order: an attempt timeout, a request mapping and a concurrency limit
    // between the breaker and the limiter.
    let client = ServiceBuilder::new()
        .layer(breaker.clone())
        .timeout(Duration::from_secs(5))
        .map_request(|request: Request<()>| request)
        .concurrency_limit(100)
        .layer(limiter.clone())
        .service(service);
    let mut first_client = client.clone();
    let first = first_client
        .ready()
        .await
        .expect("ready")
        .call(get("api.test"));
    let first = tokio::spawn(first);
    let second = client.clone().oneshot(get("api.test")).await;
    let refused = second.expect_err("the breaker opened while it waited");
    let open = refused
        .as_open()
        .copied()
        .expect("refused as the breaker refuses");
    assert_eq!(
        (open.state(), open.retry_at().map(|t| t - start)),
        (State::Open, Some(Duration::from_millis(10_400)))
    );
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    let first = first.await.expect("no panic").expect("an answer");
    assert_eq!(first.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(limiter.handle().stats().withdrawn, 1);
}

/// Sends one request to `host` through `client` and says how long it took to answer.
async fn timed<S>(client: &mut S, host: &str) -> (Result<StatusCode, String>, Duration)
where
    S: Service<Request<()>, Response = Response<()>>,
    S::Error: std::fmt::Display,
{
    let start = Instant::now();
    let result = match client.ready().await {
        Ok(ready) => ready.call(get(host)).await,
        Err(error) => Err(error),
    };
    (
        result.map(|r| r.status()).map_err(|e| e.to_string()),
        start.elapsed(),
    )
}

/// A limiter per host over `below` (a `ConcurrencyLimit` of 1, or a `Buffer` of 1 over one):
/// a request waiting for host A's quota must not keep host B's request from going at once.
async fn a_waiting_request_leaves_the_service_below_free(below: impl FnOnce(Below) -> Below) {
    let (service, calls) = upstream(200, Duration::ZERO);
    let limiter = RateLimitLayer::builder()
        .per_second(1)
        .per_host()
        .build()
        .expect("valid limiter");
    let mut client = ServiceBuilder::new()
        .layer(limiter)
        .service(below(Below::new(service.map_err(BoxError::from))));
    assert_eq!(
        timed(&mut client, "a.test").await,
        (Ok(StatusCode::OK), Duration::ZERO)
    );
    // Host A's token is spent: this one waits a second in the limiter.
    let waiting = client.ready().await.expect("ready").call(get("a.test"));
    let waiting = tokio::spawn(async move {
        let result = waiting.await.map(|r| r.status()).map_err(|e| e.to_string());
        (result, Instant::now())
    });
    tokio::task::yield_now().await;
    let start = Instant::now();
    assert_eq!(
        timed(&mut client, "b.test").await,
        (Ok(StatusCode::OK), Duration::ZERO),
        "host B went at once, not after host A's waiter"
    );
    let (result, at) = waiting.await.expect("no panic");
    assert_eq!(result, Ok(StatusCode::OK));
    assert_eq!(at - start, Duration::from_secs(1));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

fn concurrency_limit_of_one(service: Below) -> Below {
    Below::new(ServiceBuilder::new().concurrency_limit(1).service(service))
}

fn buffer_of_one(service: Below) -> Below {
    Below::new(
        ServiceBuilder::new()
            .buffer(1)
            .concurrency_limit(1)
            .service(service),
    )
}

#[tokio::test(start_paused = true)]
async fn a_request_waiting_in_the_limiter_holds_no_concurrency_permit() {
    a_waiting_request_leaves_the_service_below_free(concurrency_limit_of_one).await;
}

#[tokio::test(start_paused = true)]
async fn a_request_waiting_in_the_limiter_holds_no_buffer_slot() {
    a_waiting_request_leaves_the_service_below_free(buffer_of_one).await;
}

/// A breaker that trips on slow calls, over a limiter of one request a second, over an
/// upstream that refuses every connection at once (as a host that is down does): the second
/// call waits a second in the limiter and then fails at once. Its failure is the upstream's;
/// its second in the queue is not the upstream's slowness, though an error, unlike a
/// response, carries no `QueueWait` to say so.
#[tokio::test(start_paused = true)]
async fn time_held_in_the_limiter_is_not_a_slow_call_when_the_call_then_fails() {
    let breaker = CircuitBreakerLayer::builder()
        .no_consecutive_failures()
        .no_failure_rate()
        .slow_calls(Duration::from_millis(500), 50.0)
        .count_window(2)
        .minimum_calls(2)
        .build()
        .expect("valid breaker");
    let limiter = RateLimitLayer::builder()
        .per_second(1)
        .burst(1)
        .build()
        .expect("valid limiter");
    let refusing = tower::service_fn(|_request: Request<()>| async {
        Err::<Response<()>, BoxError>(
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into(),
        )
    });
    let client = ServiceBuilder::new()
        .layer(breaker.clone())
        .layer(limiter)
        .service(refusing);
    let start = Instant::now();
    for _ in 0..2 {
        let error = client
            .clone()
            .oneshot(get("a.test"))
            .await
            .expect_err("the upstream refuses");
        assert!(
            error.as_open().is_none(),
            "failed below, not refused: {error}"
        );
    }
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(1),
        "the second call waited"
    );
    let stats = &breaker.handle().stats()[0];
    assert_eq!(stats.state, State::Closed, "not opened for slowness");
    assert_eq!((stats.window.calls, stats.window.slow), (2, 0));
}

/// The facade's limits, with a route for `/search`, over `below` over an upstream answering
/// after `latency`; and the upstream's count of calls.
fn routed_limits_over(
    below: impl FnOnce(Below) -> Below,
    latency: Duration,
) -> (
    seawall::RouteLimit<Below, seawall_core::ByHost, seawall_rate_limit::InMemoryStore>,
    Arc<AtomicU32>,
) {
    let (service, calls) = upstream(200, latency);
    let stack = seawall::stack()
        .rate_limit(|limit| limit.per_second(100))
        .route("/search", |limit| limit.per_second(100))
        .build()
        .expect("valid stack");
    let client = stack
        .rate_limit_layer()
        .layer(below(Below::new(service.map_err(BoxError::from))));
    (client, calls)
}

/// The facade's per-route limiter over `below`, kept and readied by its caller between
/// requests (the `ready().await?.call(..)` idiom): a request that takes a route goes through
/// the route's limiter, over a clone of `below`, and must not wait for the permit that
/// readying the default limiter took.
async fn a_routed_request_leaves_the_service_below_free(below: impl FnOnce(Below) -> Below) {
    let (mut client, calls) = routed_limits_over(below, Duration::ZERO);
    for (round, path) in ["/search", "/items", "/search/books"]
        .into_iter()
        .enumerate()
    {
        let request = Request::get(format!("http://a.test{path}"))
            .body(())
            .expect("a valid request");
        let call = client.ready().await.expect("ready").call(request);
        let answered = tokio::time::timeout(Duration::from_secs(1), call).await;
        assert!(answered.is_ok(), "{path} (request {round}) was held");
        let response = answered.expect("checked").expect("answered");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

/// As above, with the only permit taken by another request while the caller readies its
/// service: readying leaves the caller's service waiting in the semaphore's line, and a
/// released permit goes to whoever is first there. The routed request must get it.
async fn a_routed_request_gets_the_permit_another_request_releases(
    below: impl FnOnce(Below) -> Below,
) {
    let (mut client, calls) = routed_limits_over(below, Duration::from_secs(5));
    let start = Instant::now();
    let first = client.ready().await.expect("ready").call(get("a.test"));
    let first = tokio::spawn(first);
    tokio::task::yield_now().await;
    let search = Request::get("http://a.test/search")
        .body(())
        .expect("a valid request");
    let routed = client.ready().await.expect("ready").call(search);
    let answered = tokio::time::timeout(Duration::from_secs(60), routed).await;
    assert!(answered.is_ok(), "the routed request was held");
    assert_eq!(
        answered.expect("checked").expect("answered").status(),
        StatusCode::OK
    );
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(10),
        "after the first's 5 s, its own 5 s"
    );
    first.await.expect("no panic").expect("answered");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_routed_request_gets_a_concurrency_permit_released_while_it_waited() {
    a_routed_request_gets_the_permit_another_request_releases(concurrency_limit_of_one).await;
}

#[tokio::test(start_paused = true)]
async fn a_routed_request_gets_a_buffer_slot_released_while_it_waited() {
    a_routed_request_gets_the_permit_another_request_releases(buffer_of_one).await;
}

#[tokio::test(start_paused = true)]
async fn a_routed_request_holds_no_concurrency_permit_of_the_default_limiter() {
    a_routed_request_leaves_the_service_below_free(concurrency_limit_of_one).await;
}

#[tokio::test(start_paused = true)]
async fn a_routed_request_holds_no_buffer_slot_of_the_default_limiter() {
    a_routed_request_leaves_the_service_below_free(buffer_of_one).await;
}

/// A breaker over `below`, whose only permit a hung call holds: once the breaker is open, a
/// call is refused at once instead of waiting for the permit.
async fn an_open_breaker_does_not_wait_for_the_service_below(below: impl FnOnce(Below) -> Below) {
    let (service, calls) = upstream(200, Duration::from_secs(60));
    let breaker = CircuitBreakerLayer::builder()
        .build()
        .expect("valid breaker");
    let mut client = ServiceBuilder::new()
        .layer(breaker.clone())
        .service(below(Below::new(service.map_err(BoxError::from))));
    // Calls that hang for a minute hold the service below: the first its permit, the others
    // (in a buffer) the worker and the buffer's one slot.
    let mut hung = Vec::new();
    for _ in 0..3 {
        let call = client.ready().await.expect("ready").call(get("a.test"));
        hung.push(tokio::spawn(call));
        tokio::task::yield_now().await;
    }
    breaker.handle().force_open(&());
    let start = Instant::now();
    let refused = match client.ready().await {
        Ok(ready) => ready.call(get("a.test")).await,
        Err(error) => Err(error),
    };
    let open = refused
        .expect_err("the breaker is open")
        .as_open()
        .copied()
        .expect("refused by the breaker");
    assert_eq!(
        (open.state(), start.elapsed()),
        (State::ForcedOpen, Duration::ZERO)
    );
    hung.iter().for_each(tokio::task::JoinHandle::abort);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_refuses_without_waiting_for_a_concurrency_permit() {
    an_open_breaker_does_not_wait_for_the_service_below(concurrency_limit_of_one).await;
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_refuses_without_waiting_for_a_buffer_slot() {
    an_open_breaker_does_not_wait_for_the_service_below(buffer_of_one).await;
}
