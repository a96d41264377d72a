//! The response future of [`CircuitBreaker`](crate::CircuitBreaker).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use http::{Response, StatusCode, header};
use pin_project_lite::pin_project;
use seawall_core::hints::parse_retry_after;
use seawall_core::{Classify, FailureKind, Outcome, QueueWait};
use tokio::time::Instant;

use crate::breaker::{Admission, Breaker, Verdict};
use crate::error::{BreakerError, CircuitOpen};

/// Records a call's outcome when it finishes, or as ignored when it is dropped unfinished
/// (a cancelled probe gives its permit back).
pub(crate) struct CallGuard<C, K: fmt::Debug> {
    breaker: Arc<Breaker<K>>,
    admission: Admission,
    started: Option<Instant>,
    classifier: C,
    done: bool,
}

impl<C, K: fmt::Debug> CallGuard<C, K> {
    pub(crate) fn new(
        breaker: Arc<Breaker<K>>,
        admission: Admission,
        started: Option<Instant>,
        classifier: C,
    ) -> Self {
        Self {
            breaker,
            admission,
            started,
            classifier,
            done: false,
        }
    }

    fn finish<B, E>(&mut self, result: &Result<Response<B>, E>)
    where
        C: Classify<Response<B>, E>,
    {
        self.done = true;
        let now = self.started.map(|_| Instant::now());
        let slow = match (self.started, now, self.breaker.slow_threshold()) {
            (Some(started), Some(now), Some(threshold)) => {
                let waited = result.as_ref().map_or(Duration::ZERO, QueueWait::of);
                now.saturating_duration_since(started)
                    .saturating_sub(waited)
                    > threshold
            }
            _ => false,
        };
        let config = self.breaker.config();
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
        self.breaker.record(self.admission, verdict, now);
    }
}

impl<C, K: fmt::Debug> Drop for CallGuard<C, K> {
    fn drop(&mut self) {
        if !self.done {
            self.breaker.record(self.admission, Verdict::Ignored, None);
        }
    }
}

pin_project! {
    /// The response future of [`CircuitBreaker`](crate::CircuitBreaker).
    pub struct ResponseFuture<F, C, K: fmt::Debug> {
        #[pin]
        kind: Kind<F, C, K>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, C, K: fmt::Debug> {
        Rejected { open: Option<CircuitOpen> },
        Called {
            #[pin]
            future: F,
            guard: CallGuard<C, K>,
        },
    }
}

impl<F, C, K: fmt::Debug> ResponseFuture<F, C, K> {
    pub(crate) fn rejected(open: CircuitOpen) -> Self {
        Self {
            kind: Kind::Rejected { open: Some(open) },
        }
    }

    pub(crate) fn called(future: F, guard: CallGuard<C, K>) -> Self {
        Self {
            kind: Kind::Called { future, guard },
        }
    }
}

impl<F, C, K: fmt::Debug> fmt::Debug for ResponseFuture<F, C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, C, K, B, E> Future for ResponseFuture<F, C, K>
where
    F: Future<Output = Result<Response<B>, E>>,
    C: Classify<Response<B>, E>,
    K: fmt::Debug,
{
    type Output = Result<Response<B>, BreakerError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Rejected { open } => match open.take() {
                Some(open) => Poll::Ready(Err(BreakerError::Open(open))),
                None => Poll::Pending,
            },
            KindProj::Called { future, guard } => {
                let result = ready!(future.poll(cx));
                guard.finish(&result);
                Poll::Ready(result.map_err(BreakerError::Inner))
            }
        }
    }
}
