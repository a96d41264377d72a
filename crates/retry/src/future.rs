//! The [`ResponseFuture`] of the retry service.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use seawall_core::{Attempts, CallTime, Classify, FailureKind, HintPolicy, QueueWait, ServerHints};
use tokio::time::{Instant, Sleep};
use tower::Service;

use crate::copy::RequestCopy;
use crate::error::{RetryError, RetryReport};
use crate::policy::{AttemptInfo, Decision, RetryState, StopReason};
use crate::replay::ReplayBody;
use crate::service::{Bound, Shared};

pin_project_lite::pin_project! {
    /// The future of a [`Retry`](crate::Retry) call: every attempt, and the waits between them.
    pub struct ResponseFuture<S, B, C>
    where
        S: Service<Request<ReplayBody<B>>>,
    {
        #[pin]
        state: State<S::Future>,
        // The request kept for the attempts after the first, while one can still be made.
        next: Option<RequestCopy<B>>,
        bound: Arc<Bound<S, C>>,
        attempts: u32,
        may_resend: bool,
        started: Instant,
        // Made when an attempt first fails.
        retrying: Option<Box<Retrying<S, C>>>,
    }
}

/// What a request needs once an attempt of it has failed: boxed, so that a request that
/// succeeds first time carries (and moves) no room for it.
struct Retrying<S, C> {
    /// The jitter state and the waits so far.
    state: RetryState,
    /// The service for retries, cloned when the first one is due.
    service: Option<S>,
    /// The retry decided and not yet sent.
    due: Option<DueRetry<C>>,
}

/// A retry decided and not yet sent: counted when it is sent (a retry cancelled during its
/// backoff was never made), and given back to the budget if it never is.
struct DueRetry<C> {
    reason: FailureKind,
    /// The layer's shared state and when the retry was taken from its budget (with one).
    withdrawn: Option<(Arc<Shared<C>>, Instant)>,
}

impl<S, C> Drop for Retrying<S, C> {
    /// A request dropped during its backoff (a caller's timeout, say) gives back the retry
    /// it took from the budget: a retry never sent must not starve other callers of theirs.
    fn drop(&mut self) {
        if let Some(DueRetry {
            withdrawn: Some((shared, withdrawn)),
            ..
        }) = &self.due
            && let Some(budget) = &shared.budget
        {
            budget.refund(*withdrawn);
        }
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F> {
        Called { #[pin] future: F },
        // Boxed: a timer is about a hundred bytes, which every request's future would carry
        // (and move) for the few that wait to retry.
        Waiting { sleep: Pin<Box<Sleep>> },
        Ready,
    }
}

impl<S, B, C> ResponseFuture<S, B, C>
where
    S: Service<Request<ReplayBody<B>>>,
{
    pub(crate) fn new(
        future: S::Future,
        next: Option<RequestCopy<B>>,
        bound: Arc<Bound<S, C>>,
        may_resend: bool,
        started: Instant,
    ) -> Self {
        Self {
            state: State::Called { future },
            next,
            bound,
            attempts: 1,
            may_resend,
            started,
            retrying: None,
        }
    }
}

/// The delay the server asked for in a failed response, if hints are read at all.
fn server_hint<B, E>(
    result: &Result<Response<B>, E>,
    policy: Option<&HintPolicy>,
) -> Option<std::time::Duration> {
    match (result, policy) {
        (Ok(response), Some(policy)) => ServerHints::from_response(response, policy).retry_delay(),
        _ => None,
    }
}

impl<S, B, C, ResBody> Future for ResponseFuture<S, B, C>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<ResBody>> + Clone,
    C: Classify<Response<ResBody>, S::Error>,
{
    type Output = Result<Response<ResBody>, RetryError<S::Error>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Called { future } => {
                    let result = ready!(future.poll(cx));
                    let shared = &*this.bound.shared;
                    let outcome = shared.classifier.classify(&result);
                    if !outcome.is_failure() {
                        let result = with_earlier_waits(
                            result,
                            this.retrying.as_ref().map(|retrying| &retrying.state),
                        );
                        return Poll::Ready(finish(result, *this.attempts, None, None));
                    }
                    let now = Instant::now();
                    let attempt = AttemptInfo {
                        attempts: *this.attempts,
                        outcome,
                        may_resend: *this.may_resend,
                        replayable: this
                            .next
                            .as_ref()
                            .is_some_and(|next| next.body().is_replayable()),
                        hint: server_hint(&result, shared.policy.hints.as_ref()),
                        elapsed: now.saturating_duration_since(*this.started),
                    };
                    let retrying = this.retrying.get_or_insert_with(|| {
                        Box::new(Retrying {
                            state: shared.retry_state(),
                            service: None,
                            due: None,
                        })
                    });
                    let (state, due) = (&mut retrying.state, &mut retrying.due);
                    match shared
                        .policy
                        .decide(&attempt, state, shared.budget.as_ref(), now)
                    {
                        Decision::Done => {
                            let result = with_earlier_waits(result, Some(state));
                            return Poll::Ready(finish(result, *this.attempts, None, None));
                        }
                        Decision::Stop { reason, hint } => {
                            shared.stopped(reason);
                            let result = with_earlier_waits(result, Some(state));
                            return Poll::Ready(finish(result, *this.attempts, Some(reason), hint));
                        }
                        Decision::Retry { delay, reason } => {
                            *due = Some(DueRetry {
                                reason,
                                withdrawn: shared
                                    .budget
                                    .is_some()
                                    .then(|| (Arc::clone(&this.bound.shared), now)),
                            });
                            tracing::debug!(
                                attempt = *this.attempts,
                                delay_ms = delay.as_millis() as u64,
                                reason = reason.as_str(),
                                "retrying request"
                            );
                            if let Some(on_retry) = &shared.on_retry {
                                on_retry(*this.attempts, delay, reason);
                            }
                            if let Ok(response) = &result {
                                state.earlier_waits += QueueWait::of(response);
                            }
                            // The failed response (and its connection's claim on the body)
                            // goes before the wait, not after it.
                            drop(result);
                            this.state.set(State::Waiting {
                                sleep: Box::pin(tokio::time::sleep(delay)),
                            });
                        }
                    }
                }
                StateProj::Waiting { sleep } => {
                    ready!(sleep.as_mut().poll(cx));
                    this.state.set(State::Ready);
                }
                StateProj::Ready => {
                    let Some(retrying) = this.retrying.as_mut() else {
                        unreachable!("a retry was decided before an attempt failed")
                    };
                    let service = retrying.service.get_or_insert_with(|| this.bound.service());
                    if let Err(error) = ready!(service.poll_ready(cx)) {
                        this.bound.shared.stopped(StopReason::NotReady);
                        return Poll::Ready(Err(RetryError::new(
                            *this.attempts,
                            StopReason::NotReady,
                            None,
                            error,
                        )));
                    }
                    // `decide` retries only when a copy is at hand (`replayable`).
                    let Some(copy) = this.next.as_ref() else {
                        unreachable!("a retry was decided without a copy of the request")
                    };
                    let request = copy.request();
                    *this.attempts += 1;
                    if *this.attempts >= this.bound.shared.policy.max_attempts {
                        // The last attempt: nothing is sent after it.
                        *this.next = None;
                    }
                    // Later than the call this future came from: the layers below share a
                    // reading of their own.
                    let (_, _call_time) = CallTime::enter_fresh();
                    // Sent: counted, and the retry taken from the budget is spent.
                    if let Some(due) = retrying.due.take() {
                        this.bound.shared.counters.retry(due.reason);
                    }
                    let future = service.call(request);
                    this.state.set(State::Called { future });
                }
            }
        }
    }
}

/// A response that came after retries carries, as its [`QueueWait`], what every attempt
/// waited in a rate limiter below (an attempt that ended in an error has no answer to say
/// it), so that the layers above see the call's whole wait.
fn with_earlier_waits<B, E>(
    mut result: Result<Response<B>, E>,
    state: Option<&RetryState>,
) -> Result<Response<B>, E> {
    if let (Ok(response), Some(state)) = (&mut result, state)
        && !state.earlier_waits.is_zero()
    {
        let total = QueueWait::of(response).saturating_add(state.earlier_waits);
        response.extensions_mut().insert(QueueWait(total));
    }
    result
}

/// The result handed back: responses with their [`Attempts`] when resent (and a
/// [`RetryReport`] when the layer retried or gave up), errors wrapped with the attempts made and why the layer stopped.
fn finish<B, E>(
    result: Result<Response<B>, E>,
    attempts: u32,
    stop: Option<StopReason>,
    hint: Option<std::time::Duration>,
) -> Result<Response<B>, RetryError<E>> {
    match result {
        Ok(mut response) => {
            // Only when resent: one attempt is what a response without it means, so the steady
            // state allocates nothing.
            if attempts > 1 {
                response.extensions_mut().insert(Attempts(attempts));
            }
            if attempts > 1 || stop.is_some_and(StopReason::gave_up) {
                response.extensions_mut().insert(RetryReport {
                    attempts,
                    stop,
                    hint,
                });
            }
            Ok(response)
        }
        Err(error) => Err(RetryError::new(
            attempts,
            stop.unwrap_or(StopReason::NotRetryable),
            hint,
            error,
        )),
    }
}
