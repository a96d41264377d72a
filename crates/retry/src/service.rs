//! The [`Retry`] service.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use http_body::Body;
use seawall_core::{CallTime, Classify, FailureKind};
use tower::Service;

use crate::budget::RetryBudget;
use crate::copy::RequestCopy;
use crate::error::RetryError;
use crate::future::ResponseFuture;
use crate::policy::{RetryPolicy, RetryState, StopReason};
use crate::replay::{BoxError, ReplayBody};
use crate::stats::{Counters, RetryHandle};

/// The callback told about every retry: the attempt that failed (1 for the first), the delay
/// before the next one, and how the attempt failed.
pub type OnRetry = Arc<dyn Fn(u32, Duration, FailureKind) + Send + Sync>;

/// What every clone of one retry layer shares.
pub(crate) struct Shared<C> {
    pub(crate) policy: RetryPolicy,
    pub(crate) classifier: C,
    pub(crate) budget: Option<RetryBudget>,
    pub(crate) counters: Counters,
    pub(crate) on_retry: Option<OnRetry>,
    seed: u64,
    sequence: AtomicU64,
}

impl<C> Shared<C> {
    pub(crate) fn new(
        policy: RetryPolicy,
        classifier: C,
        budget: Option<RetryBudget>,
        on_retry: Option<OnRetry>,
        seed: u64,
    ) -> Self {
        Self {
            policy,
            classifier,
            budget,
            counters: Counters::default(),
            on_retry,
            seed,
            sequence: AtomicU64::new(0),
        }
    }

    /// The jitter state of a request that is about to be retried for the first time. Made
    /// only then, so that requests that succeed first time touch no shared counter for it.
    pub(crate) fn retry_state(&self) -> RetryState {
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        RetryState::new(self.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    pub(crate) fn stopped(&self, reason: StopReason) {
        self.counters.stop(reason);
    }
}

/// What the clones of one retry service share: the layer's state, and the service the layer
/// wrapped, from which the service for a retry is cloned.
pub(crate) struct Bound<S, C> {
    pub(crate) shared: Arc<Shared<C>>,
    /// Locked only to clone a service for a retry, never on a first attempt.
    template: Mutex<S>,
}

impl<S: Clone, C> Bound<S, C> {
    /// A service for a retry: a clone of the one the layer wrapped.
    pub(crate) fn service(&self) -> S {
        // A panic in a clone leaves the template as it was: the lock is still usable.
        self.template
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// Retries failed requests. See the [crate docs](crate).
///
/// A first attempt goes through the service this one wraps, driven to readiness by
/// `poll_ready`; a retry goes through a clone of the service as it was wrapped, made when the
/// retry is due and driven to readiness again. Nothing is cloned for a request that succeeds
/// first time (tower's `Retry` clones the whole service for every request).
pub struct Retry<S, C> {
    inner: S,
    bound: Arc<Bound<S, C>>,
}

impl<S: fmt::Debug, C> fmt::Debug for Retry<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("policy", &self.bound.shared.policy)
            .finish_non_exhaustive()
    }
}

impl<S: Clone, C> Clone for Retry<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            bound: Arc::clone(&self.bound),
        }
    }
}

impl<S: Clone, C> Retry<S, C> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<C>>) -> Self {
        let template = Mutex::new(inner.clone());
        Self {
            inner,
            bound: Arc::new(Bound { shared, template }),
        }
    }
}

impl<S, C> Retry<S, C> {
    /// The wrapped service, which makes first attempts.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, which makes first attempts, mutably. Retries go through clones
    /// of the service as the layer wrapped it.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// A handle on this layer's figures and budget.
    pub fn handle(&self) -> RetryHandle<C> {
        RetryHandle::new(Arc::clone(&self.bound.shared))
    }
}

impl<S, C, B, ResBody> Service<Request<B>> for Retry<S, C>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<ResBody>> + Clone,
    C: Classify<Response<ResBody>, S::Error>,
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResBody>;
    type Error = RetryError<S::Error>;
    type Future = ResponseFuture<S, B, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|error| RetryError::new(0, StopReason::NotReady, None, error))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // Held until the layers below have been called, so that they share this reading.
        let (now, _call_time) = CallTime::enter();
        let shared = &self.bound.shared;
        shared.counters.request();
        if let Some(budget) = &shared.budget {
            budget.deposit(now);
        }
        let may_resend = shared.policy.idempotency.allows(&request);
        let request = request.map(|body| ReplayBody::new(body, shared.policy.max_replay_bytes));
        let next = (shared.policy.max_attempts > 1).then(|| RequestCopy::new(&request));
        let future = self.inner.call(request);
        ResponseFuture::new(future, next, Arc::clone(&self.bound), may_resend, now)
    }
}
