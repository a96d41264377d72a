//! The response future of [`CircuitBreaker`](crate::CircuitBreaker).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use http::{Request, Response, StatusCode, header};
use pin_project_lite::pin_project;
use seawall_core::admission::{AdmissionScope, Readmission};
use seawall_core::hints::parse_retry_after;
use seawall_core::{Classify, FailureKind, Held, Outcome, QueueWait};
use tokio::time::Instant;
use tower::Service;

use crate::breaker::{Admission, Breaker, Verdict};
use crate::error::{BreakerError, CircuitOpen};
use crate::guard::BreakerGuard;

/// Records a call's outcome through its classifier when it finishes, or as ignored when it
/// is dropped unfinished (a cancelled probe gives its permit back): the breaker's guard, with
/// the HTTP rules of judging a response.
pub(crate) struct CallGuard<C, K: fmt::Debug + Send + Sync + 'static> {
    guard: BreakerGuard<K>,
    classifier: C,
}

impl<C, K: fmt::Debug + Send + Sync + 'static> CallGuard<C, K> {
    pub(crate) fn new(
        breaker: Held<Breaker<K>>,
        admission: Admission,
        started: Option<Instant>,
        classifier: C,
    ) -> Self {
        Self {
            guard: BreakerGuard::new(breaker, admission, started),
            classifier,
        }
    }

    /// Binds a readmission a layer below asked for while holding this call back.
    pub(crate) fn hold(&mut self, held: Readmission) {
        self.guard.hold(held);
    }

    /// The breaker's own refusal, if a layer below asked again and the breaker refused: the
    /// call is recorded as withdrawn (already counted as a refusal).
    fn withdrawn(&mut self) -> Option<CircuitOpen> {
        self.guard.withdrawn()
    }

    fn finish<B, E>(&mut self, result: &Result<Response<B>, E>)
    where
        C: Classify<Response<B>, E>,
    {
        // Time waiting in a rate limiter below is not the upstream's slowness.
        let waited = result.as_ref().map_or(Duration::ZERO, QueueWait::of);
        let (now, slow) = self.guard.timing(waited);
        let config = self.guard.config();
        let verdict = match self.classifier.classify(result) {
            Outcome::Success => Verdict::Success { slow },
            Outcome::Ignored | Outcome::Failure(FailureKind::Rejected) => Verdict::Ignored,
            Outcome::Failure(FailureKind::Throttled)
                if !config.throttled_is_failure
                    && result
                        .as_ref()
                        .is_ok_and(|r| r.status() == StatusCode::TOO_MANY_REQUESTS) =>
            {
                Verdict::Ignored
            }
            Outcome::Failure(_) => Verdict::Failure {
                slow,
                open_for: result.as_ref().ok().and_then(|response| {
                    if !config.retry_after_sets_open
                        || response.status() != StatusCode::SERVICE_UNAVAILABLE
                    {
                        return None;
                    }
                    let value = response.headers().get(header::RETRY_AFTER)?.to_str().ok()?;
                    let delay = parse_retry_after(value, SystemTime::now())?;
                    config.hint_policy.bound(delay, "retry-after")
                }),
            },
        };
        self.guard.finish(verdict, now);
    }
}

pin_project! {
    /// The response future of [`CircuitBreaker`](crate::CircuitBreaker).
    pub struct ResponseFuture<S, B, C, K>
    where
        S: Service<Request<B>>,
        K: fmt::Debug,
        K: Send,
        K: Sync,
        K: 'static,
    {
        #[pin]
        kind: Kind<S, B, C, K>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, B, C, K>
    where
        S: Service<Request<B>>,
        K: fmt::Debug,
        K: Send,
        K: Sync,
        K: 'static,
    {
        Rejected { open: Option<CircuitOpen> },
        // Admitted while the service below was not ready: it is readied first (boxed, as
        // this is off the steady path and would otherwise widen every call's future).
        Readying {
            pending: Option<Box<(S, Request<B>)>>,
            guard: Option<CallGuard<C, K>>,
        },
        Called {
            #[pin]
            future: S::Future,
            guard: CallGuard<C, K>,
        },
    }
}

impl<S, B, C, K> ResponseFuture<S, B, C, K>
where
    S: Service<Request<B>>,
    K: fmt::Debug + Send + Sync + 'static,
{
    pub(crate) fn rejected(open: CircuitOpen) -> Self {
        tracing::debug!(
            state = open.state().as_str(),
            "circuit breaker refused a call"
        );
        Self {
            kind: Kind::Rejected { open: Some(open) },
        }
    }

    pub(crate) fn called(future: S::Future, guard: CallGuard<C, K>) -> Self {
        Self {
            kind: Kind::Called { future, guard },
        }
    }

    pub(crate) fn readying(service: S, request: Request<B>, guard: CallGuard<C, K>) -> Self {
        Self {
            kind: Kind::Readying {
                pending: Some(Box::new((service, request))),
                guard: Some(guard),
            },
        }
    }
}

impl<S, B, C, K> fmt::Debug for ResponseFuture<S, B, C, K>
where
    S: Service<Request<B>>,
    K: fmt::Debug + Send + Sync + 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, B, C, K, ResBody> Future for ResponseFuture<S, B, C, K>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    C: Classify<Response<ResBody>, S::Error>,
    K: fmt::Debug + Send + Sync + 'static,
{
    type Output = Result<Response<ResBody>, BreakerError<S::Error>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut kind = self.project().kind;
        loop {
            let next = match kind.as_mut().project() {
                KindProj::Rejected { open } => {
                    return match open.take() {
                        Some(open) => Poll::Ready(Err(BreakerError::Open(open))),
                        None => Poll::Pending,
                    };
                }
                KindProj::Readying { pending, guard } => {
                    let Some(parts) = pending.as_mut() else {
                        return Poll::Pending;
                    };
                    if let Err(error) = ready!(parts.0.poll_ready(cx)) {
                        // Never called: the breaker learns nothing (the guard records it so).
                        drop(guard.take());
                        pending.take();
                        return Poll::Ready(Err(BreakerError::Inner(error)));
                    }
                    let (Some(parts), Some(mut guard)) = (pending.take(), guard.take()) else {
                        return Poll::Pending;
                    };
                    let (mut service, request) = *parts;
                    let scope = AdmissionScope::open();
                    let future = service.call(request);
                    if let Some(held) = scope.close() {
                        guard.hold(held);
                    }
                    Kind::Called { future, guard }
                }
                KindProj::Called { future, guard } => {
                    let result = ready!(future.poll(cx));
                    if result.is_err()
                        && let Some(open) = guard.withdrawn()
                    {
                        return Poll::Ready(Err(BreakerError::Open(open)));
                    }
                    guard.finish(&result);
                    return Poll::Ready(result.map_err(BreakerError::Inner));
                }
            };
            kind.set(next);
        }
    }
}
