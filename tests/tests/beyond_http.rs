//! The stack's policies around any async operation (not an HTTP request): the limiter's
//! `acquire`, the breaker's `guard`, the retry layer's `run`, and `Stack::run` composing them,
//! on tokio's paused clock with exact instants.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use seawall::RunError;
use seawall::circuit_breaker::{CircuitBreakerLayer, State};
use seawall::core::{FailureKind, Global, Outcome};
use seawall::rate_limit::{RateLimitLayer, Rejected};
use seawall::retry::{Jitter, RetryLayer, StopReason};
use tokio::time::Instant;

/// An SDK's error: one it says is worth another try, one it says is not.
#[derive(Debug, PartialEq, Eq)]
enum SdkError {
    Transient,
    Permanent,
}

impl std::fmt::Display for SdkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for SdkError {}

/// The caller's classifier for the operation's result.
fn classify(result: &Result<u32, SdkError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Success,
        Err(SdkError::Transient) => Outcome::Failure(FailureKind::Transport),
        Err(SdkError::Permanent) => Outcome::Failure(FailureKind::Other),
    }
}

/// Records, in milliseconds from `start`, when each call of an operation began to run.
#[derive(Clone)]
struct Calls {
    start: Instant,
    at: Rc<RefCell<Vec<u128>>>,
}

impl Calls {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            at: Rc::default(),
        }
    }

    fn record(&self) {
        self.at.borrow_mut().push(self.start.elapsed().as_millis());
    }

    fn at(&self) -> Vec<u128> {
        self.at.borrow().clone()
    }
}

#[tokio::test(start_paused = true)]
async fn an_operation_failing_five_times_is_paced_by_the_limiter_and_trips_the_breaker() {
    let stack = seawall::stack()
        .key_by(Global)
        .rate_limit(|limit| limit.per_second(10).burst(1))
        .circuit_breaker(|breaker| {
            breaker
                .consecutive_failures(5)
                .no_failure_rate()
                .open_duration(Duration::from_secs(60))
        })
        .retry(|retry| retry.max_attempts(1))
        .build()
        .unwrap();
    let calls = Calls::new();
    for n in 0..5 {
        let error = stack
            .run_with(&(), 1, &classify, || {
                let calls = calls.clone();
                async move {
                    calls.record();
                    Err::<u32, _>(SdkError::Transient)
                }
            })
            .await
            .unwrap_err();
        assert_eq!(error.attempts(), 1, "run {n}");
        assert!(matches!(
            error.inner(),
            RunError::Failed(SdkError::Transient)
        ));
    }
    // One token a 100 ms with a burst of 1: the limiter admitted them at these instants.
    assert_eq!(calls.at(), [0, 100, 200, 300, 400]);
    assert_eq!(stack.circuit_breaker().state(&()), State::Open);

    // The sixth is refused at once by the breaker, without calling the operation or
    // spending a token.
    let before = Instant::now();
    let error = stack
        .run_with(&(), 1, &classify, || {
            let calls = calls.clone();
            async move {
                calls.record();
                Ok::<u32, SdkError>(1)
            }
        })
        .await
        .unwrap_err();
    assert_eq!(before.elapsed(), Duration::ZERO);
    let RunError::CircuitOpen(open) = error.inner() else {
        panic!("expected the breaker's refusal, got {:?}", error.inner());
    };
    assert_eq!(open.state(), State::Open);
    assert_eq!(open.retry_after(), Some(Duration::from_secs(60)));
    assert_eq!(calls.at().len(), 5);
    assert_eq!(stack.rate_limit().stats().admitted, 5);
    let breaker = &stack.circuit_breaker().stats()[0];
    assert_eq!((breaker.failures, breaker.rejected), (5, 1));
}

#[tokio::test(start_paused = true)]
async fn the_stack_retries_what_the_classifier_calls_transient_and_not_the_rest() {
    let stack = seawall::stack()
        .key_by(Global)
        .rate_limit(|limit| limit.per_second(1000).burst(10))
        .retry(|retry| {
            retry
                .max_attempts(4)
                .exponential_backoff(Duration::from_millis(100), Duration::from_secs(10))
                .jitter(Jitter::None)
        })
        .build()
        .unwrap();

    // Transient twice, then a value: retried after 100 ms, then 200 ms.
    let calls = Calls::new();
    let answer = stack
        .run_with(&(), 1, &classify, || {
            let calls = calls.clone();
            async move {
                calls.record();
                if calls.at().len() < 3 {
                    Err(SdkError::Transient)
                } else {
                    Ok(42)
                }
            }
        })
        .await
        .unwrap();
    assert_eq!(answer, 42);
    assert_eq!(calls.at(), [0, 100, 300]);

    // Permanent: not retried.
    let calls = Calls::new();
    let error = stack
        .run_with(&(), 1, &classify, || {
            let calls = calls.clone();
            async move {
                calls.record();
                Err::<u32, _>(SdkError::Permanent)
            }
        })
        .await
        .unwrap_err();
    assert_eq!(calls.at(), [0]);
    assert_eq!(error.attempts(), 1);
    assert_eq!(error.stop_reason(), StopReason::NotRetryable);
    assert!(matches!(
        error.into_inner(),
        RunError::Failed(SdkError::Permanent)
    ));
    let stats = stack.retry().stats();
    assert_eq!((stats.requests, stats.total_retries()), (2, 2));
}

#[tokio::test(start_paused = true)]
async fn retry_run_stops_at_its_attempts_with_the_last_error() {
    let retry = RetryLayer::builder()
        .max_attempts(3)
        .exponential_backoff(Duration::from_millis(50), Duration::from_secs(1))
        .jitter(Jitter::None)
        .classifier(classify)
        .build()
        .unwrap();
    let calls = Calls::new();
    let error = retry
        .run(|| {
            let calls = calls.clone();
            async move {
                calls.record();
                Err::<u32, _>(SdkError::Transient)
            }
        })
        .await
        .unwrap_err();
    assert_eq!(calls.at(), [0, 50, 150]);
    assert_eq!(error.attempts(), 3);
    assert_eq!(error.stop_reason(), StopReason::AttemptsExhausted);
    assert_eq!(error.into_inner(), SdkError::Transient);
}

#[tokio::test(start_paused = true)]
async fn acquire_waits_in_line_honours_max_wait_and_leaves_the_queue_when_dropped() {
    let limit = RateLimitLayer::builder()
        .per_second(10)
        .burst(1)
        .wait(5, Duration::from_millis(250))
        .build()
        .unwrap();
    let start = Instant::now();
    let first = limit.acquire(&(), 1).await.unwrap();
    assert_eq!(first.waited(), Duration::ZERO);

    // Two wait (their turns at 100 ms and 200 ms); a third would wait 300 ms, over max_wait.
    let second = limit.acquire(&(), 1);
    let third = limit.acquire(&(), 1);
    let refused = limit.acquire(&(), 1).await.unwrap_err();
    assert!(
        matches!(
            refused,
            Rejected::WaitTooLong { predicted, max_wait }
                if predicted == Duration::from_millis(300)
                    && max_wait == Duration::from_millis(250)
        ),
        "{refused:?}"
    );
    // The second is dropped while it waits: the third takes its turn.
    drop(second);
    let third = third.await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert_eq!(third.waited(), Duration::from_millis(100));
    let stats = limit.handle().stats();
    assert_eq!(
        (
            stats.admitted,
            stats.cancelled,
            stats.rejected_wait_too_long,
            stats.queue_depth
        ),
        (2, 1, 1, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_dropped_guard_gives_its_half_open_permit_back() {
    let breaker = CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .no_failure_rate()
        .open_duration(Duration::from_secs(10))
        .half_open_permits(1)
        .half_open_successes(1)
        .build()
        .unwrap();
    breaker
        .guard(&())
        .unwrap()
        .record(&Err::<u32, _>(SdkError::Transient), &classify);
    assert_eq!(breaker.handle().state(&()), State::Open);
    assert!(breaker.guard(&()).is_err());

    tokio::time::advance(Duration::from_secs(10)).await;
    let probe = breaker.guard(&()).unwrap();
    assert_eq!(breaker.handle().state(&()), State::HalfOpen);
    // The only probe permit is out.
    assert_eq!(breaker.guard(&()).unwrap_err().state(), State::HalfOpen);
    // Cancelled: the permit comes back, and a success through it closes the breaker.
    drop(probe);
    breaker
        .guard(&())
        .unwrap()
        .record(&Ok::<u32, SdkError>(1), &classify);
    assert_eq!(breaker.handle().state(&()), State::Closed);
    let stats = &breaker.handle().stats()[0];
    assert_eq!((stats.failures, stats.ignored), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn an_operation_waiting_in_the_limiter_is_refused_when_the_breaker_opens_meanwhile() {
    let stack = seawall::stack()
        .key_by(Global)
        .rate_limit(|limit| limit.per_second(1).burst(1))
        .circuit_breaker(|breaker| breaker.consecutive_failures(1).no_failure_rate())
        .retry(|retry| retry.max_attempts(1))
        .build()
        .unwrap();
    let calls = Calls::new();
    // The first runs at once and fails after 500 ms; the second waits for its token at 1 s.
    let first = stack.run_with(&(), 1, &classify, || {
        let calls = calls.clone();
        async move {
            calls.record();
            tokio::time::sleep(Duration::from_millis(500)).await;
            Err::<u32, _>(SdkError::Transient)
        }
    });
    let second = stack.run_with(&(), 1, &classify, || {
        let calls = calls.clone();
        async move {
            calls.record();
            Ok::<u32, SdkError>(1)
        }
    });
    let start = Instant::now();
    let (first, second) = tokio::join!(first, second);
    assert!(matches!(first.unwrap_err().inner(), RunError::Failed(_)));
    // At its turn the breaker, open since 500 ms, refused it: no token, no call.
    let second = second.unwrap_err();
    assert!(
        matches!(second.inner(), RunError::CircuitOpen(open) if open.state() == State::Open),
        "{:?}",
        second.inner()
    );
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(calls.at(), [0]);
    let limits = stack.rate_limit().stats();
    assert_eq!((limits.admitted, limits.withdrawn), (1, 1));
}
