//! The standard stack's attempt timeout, on paused time: a client that never answers (an
//! upstream that hangs) is given up on exactly when the timeout runs out, counted from the
//! call, and a client that answers at once is never timed.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::{Request, Response};
use http_body_util::Empty;
use seawall::circuit_breaker::BreakerError;
use seawall::rate_limit::RateLimitError;
use tokio::time::Instant;
use tower::{Service, ServiceExt};

type Body = Empty<bytes::Bytes>;

fn stack() -> seawall::Stack {
    seawall::stack()
        .retry(|retry| retry.max_attempts(1))
        .attempt_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

fn request() -> Request<Body> {
    Request::get("http://api.test/").body(Empty::new()).unwrap()
}

/// A client whose answers never come.
fn hung_client() -> impl Service<
    Request<seawall::ReplayBody<Body>>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
> + Clone {
    tower::service_fn(|_request| std::future::pending())
}

type StackError = seawall::retry::RetryError<BreakerError<RateLimitError<seawall::AttemptError>>>;

fn is_attempt_timeout(error: &StackError) -> bool {
    matches!(error.inner(), BreakerError::Inner(RateLimitError::Inner(attempt)) if attempt.is_timeout())
}

#[tokio::test(start_paused = true)]
async fn a_hung_attempt_ends_at_the_timeout() {
    let mut service = stack().service(hung_client());
    let start = Instant::now();
    let error = service
        .ready()
        .await
        .unwrap()
        .call(request())
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert!(is_attempt_timeout(&error), "{error:?}");
    assert_eq!(error.attempts(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_timeout_counts_from_the_call_not_the_first_poll() {
    let mut service = stack().service(hung_client());
    let start = Instant::now();
    let future = service.ready().await.unwrap().call(request());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let error = future.await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert!(is_attempt_timeout(&error), "{error:?}");
}

/// No runtime here: registering a timer would panic, so this passes only if an answer that is
/// ready at its first poll never registers one.
#[test]
fn an_answer_ready_at_once_is_not_timed() {
    let client = tower::service_fn(|_request: Request<seawall::ReplayBody<Body>>| async {
        Ok::<_, Infallible>(Response::new(Empty::<bytes::Bytes>::new()))
    });
    let mut service = stack().service(client);
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(service.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    let mut future = pin!(service.call(request()));
    let poll = future.as_mut().poll(&mut cx);
    assert!(matches!(poll, Poll::Ready(Ok(_))), "{poll:?}");
}
