//! The [`Retry`] service.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use http_body::Body;
use seawall_core::{CallTime, Classify, FailureKind};
use tower::Service;

use crate::budget::RetryBudget;
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

/// Retries failed requests. See the [crate docs](crate).
pub struct Retry<S, C> {
    inner: S,
    shared: Arc<Shared<C>>,
}

impl<S: fmt::Debug, C> fmt::Debug for Retry<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("policy", &self.shared.policy)
            .finish_non_exhaustive()
    }
}

impl<S: Clone, C> Clone for Retry<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S, C> Retry<S, C> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<C>>) -> Self {
        Self { inner, shared }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// A handle on this layer's figures and budget.
    pub fn handle(&self) -> RetryHandle<C> {
        RetryHandle::new(Arc::clone(&self.shared))
    }
}

/// A copy of `request` for another attempt: same head, same extensions, a fresh body reader.
pub(crate) fn copy_request<B>(request: &Request<ReplayBody<B>>) -> Request<ReplayBody<B>> {
    let mut copy = Request::new(request.body().clone());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    *copy.extensions_mut() = request.extensions().clone();
    copy
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
        let shared = &self.shared;
        // Held until the layers below have been called, so they share this call's reading.
        let (now, _call_time) = CallTime::enter();
        shared.counters.request();
        if let Some(budget) = &shared.budget {
            budget.deposit(now);
        }
        let may_resend = shared.policy.idempotency.allows(&request);
        let request = request.map(|body| ReplayBody::new(body, shared.policy.max_replay_bytes));
        let next = (shared.policy.max_attempts > 1).then(|| copy_request(&request));
        // The service that was driven to readiness makes this call; the clone left in its
        // place serves the next caller, and this one is kept for the retries.
        let clone = self.inner.clone();
        let mut service = std::mem::replace(&mut self.inner, clone);
        let future = service.call(request);
        ResponseFuture::new(
            future,
            service,
            next,
            Arc::clone(&self.shared),
            may_resend,
            now,
        )
    }
}
