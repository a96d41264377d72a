//! The [`RateLimit`] service.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::{Request, Response};
use seawall_core::admission::hold_back;
use seawall_core::{CallKey, Held, KeyExtractor, RequestHead};
use tokio::time::Instant;
use tower::Service;

use crate::error::{RateLimitError, Rejected};
use crate::extensions::Cost;
use crate::future::{Queued, ResponseFuture};
use crate::limiter::Limiter;
use crate::queue::KeyEntry;
use crate::store::{Decision, RateStore};

/// A service that keeps requests under a quota. See the [crate docs](crate).
pub struct RateLimit<S, X: KeyExtractor, St: RateStore> {
    inner: S,
    /// Whether `inner` said it was ready; when it did not, this service says it is anyway
    /// (a refusal must not wait for the service below), and an admitted request readies
    /// `inner` in its response future.
    inner_ready: bool,
    extractor: X,
    limiter: Arc<Limiter<X::Key, St>>,
}

impl<S: fmt::Debug, X: KeyExtractor, St: RateStore> fmt::Debug for RateLimit<S, X, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl<S: Clone, X: KeyExtractor + Clone, St: RateStore> Clone for RateLimit<S, X, St> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            inner_ready: false,
            extractor: self.extractor.clone(),
            limiter: Arc::clone(&self.limiter),
        }
    }
}

impl<S, X: KeyExtractor, St: RateStore> RateLimit<S, X, St> {
    pub(crate) fn new(inner: S, extractor: X, limiter: Arc<Limiter<X::Key, St>>) -> Self {
        Self {
            inner,
            inner_ready: false,
            extractor,
            limiter,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// A handle on this service's limiter.
    pub fn handle(&self) -> crate::RateLimitHandle<X::Key, St> {
        crate::RateLimitHandle::new(Arc::clone(&self.limiter))
    }
}

/// Polls a future once, without a task to wake: stores such as the in-process one answer at
/// once, so the common case needs neither a task switch nor a clone of the inner service.
fn poll_now<F: Future + Unpin>(future: &mut F) -> Option<F::Output> {
    match std::pin::Pin::new(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

impl<S, X, St, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimit<S, X, St>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    X: KeyExtractor,
    St: RateStore,
    St::Future: Unpin,
{
    type Response = Response<ResBody>;
    type Error = RateLimitError<S::Error>;
    type Future = ResponseFuture<S, ReqBody, X::Key, St>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => self.inner_ready = true,
            Poll::Ready(Err(error)) => return Poll::Ready(Err(RateLimitError::Inner(error))),
            // Whether a request waits is known only from the request: ready now, so that a
            // refusal is immediate and a waiting request never holds a permit of the
            // service below (it readies its own when admitted).
            Poll::Pending => self.inner_ready = false,
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let limiter = &self.limiter;
        // Held until the layer below has been called, so it shares this call's reading.
        let (now, _call_time) = limiter.call_time();
        // Held as long: the layers below keyed by host find the key this one finds.
        let _call_key = CallKey::enter();
        let entry = limiter.entry_for(&self.extractor, &RequestHead::of(&request), now);
        let cost = request
            .extensions()
            .get::<Cost>()
            .map_or(1, |cost| cost.tokens());
        self.call_entry(request, entry, cost, now)
    }
}

impl<S, X, St> RateLimit<S, X, St>
where
    X: KeyExtractor,
    St: RateStore,
    St::Future: Unpin,
{
    /// Admits, queues or refuses `request` of `cost` for the key whose entry is `entry`.
    pub(crate) fn call_entry<ReqBody, ResBody>(
        &mut self,
        request: Request<ReqBody>,
        entry: Held<KeyEntry<St>>,
        cost: u32,
        now: Instant,
    ) -> ResponseFuture<S, ReqBody, X::Key, St>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    {
        let limiter = &self.limiter;
        let head_wait = match entry.paused_until(now) {
            // The steady state: nobody waits, so try for a token straight away, unless the
            // admissions already out with a shared store fill the queue's bound.
            None if entry.depth() == 0 => {
                if let Some(max_waiting) = limiter.store_is_full(&entry) {
                    return self.refuse(Rejected::QueueFull { max_waiting });
                }
                // An adaptive rate's gate, closed: wait for it, then the store.
                if let Some(paced) = limiter.adaptive_gate(&entry, cost, now) {
                    let head_wait = paced.max(limiter.peek(&entry, cost, now));
                    return self.wait_or_refuse(request, entry, cost, now, head_wait);
                }
                let mut attempt =
                    limiter
                        .store
                        .acquire(&entry.slot, limiter.quotas_of(&entry), cost, now);
                let decision = poll_now(&mut attempt);
                if !matches!(decision, Some(Ok(Decision::Admitted)) | None) {
                    limiter.adaptive_refund(&entry, cost);
                }
                match decision {
                    Some(Ok(Decision::Admitted)) => {
                        limiter.counters.admitted.add(1);
                        let settling = limiter.settling(cost, now);
                        if std::mem::take(&mut self.inner_ready) {
                            let future = self.inner.call(request);
                            return ResponseFuture::called(future, entry, settling);
                        }
                        let inner = self.take_inner();
                        return ResponseFuture::readying(inner, request, entry, settling);
                    }
                    Some(Ok(Decision::Wait(wait))) => wait,
                    Some(Ok(Decision::Oversize)) => {
                        return self.refuse(Rejected::Oversize { cost });
                    }
                    Some(Err(error)) => {
                        return self.refuse(Rejected::StoreUnavailable(error));
                    }
                    None => {
                        // A remote store is answering; the future carries on from here.
                        let queued = self.queued(request, entry, cost, now, Some(attempt));
                        return ResponseFuture::queued(queued, now);
                    }
                }
            }
            // Others wait already: this one's turn comes after theirs.
            None => limiter.peek(&entry, cost, now),
            Some(until) => {
                let paused = Duration::from_nanos(until - limiter.nanos(now));
                paused.max(limiter.peek(&entry, cost, now))
            }
        };
        self.wait_or_refuse(request, entry, cost, now, head_wait)
    }
}

impl<S, X, St> RateLimit<S, X, St>
where
    X: KeyExtractor,
    St: RateStore,
    St::Future: Unpin,
{
    /// Gives back what readying the wrapped service took or is waiting for (a
    /// `ConcurrencyLimit` permit, its place in the semaphore's line, a `Buffer` slot): it is
    /// replaced by a fresh clone, which the next request readies again. For a service that
    /// readied this limiter and then sends a request through another one made over a clone of
    /// the same service (a per-route limiter), whose request would otherwise wait for a permit
    /// this one holds, or that a released permit hands to this one's place in line, which
    /// nobody polls.
    pub fn release_readiness(&mut self)
    where
        S: Clone,
    {
        // `poll_ready` answers ready whatever the service below said, so whether it is
        // waiting for a permit is not known here: it is let go in any case.
        self.inner_ready = false;
        drop(self.take_inner());
    }

    /// The wrapped service as it is (readied, or with its readiness under way), leaving a
    /// fresh clone in its place.
    fn take_inner(&mut self) -> S
    where
        S: Clone,
    {
        let fresh = self.inner.clone();
        std::mem::replace(&mut self.inner, fresh)
    }

    fn refuse<ReqBody>(&self, rejected: Rejected) -> ResponseFuture<S, ReqBody, X::Key, St>
    where
        S: Service<Request<ReqBody>>,
    {
        self.limiter.counters.count_refusal(&rejected);
        ResponseFuture::rejected(rejected)
    }

    fn queued<ReqBody>(
        &mut self,
        request: Request<ReqBody>,
        entry: Held<KeyEntry<St>>,
        cost: u32,
        now: Instant,
        attempt: Option<St::Future>,
    ) -> Queued<S, ReqBody, X::Key, St>
    where
        S: Clone,
    {
        // A waiting request holds nothing of the service below: the readied one is dropped
        // and the request takes a clone it readies when admitted.
        self.release_readiness();
        let mut queued = Queued::new(
            self.inner.clone(),
            request,
            Arc::clone(&self.limiter),
            entry,
            cost,
            now,
            attempt,
        );
        // A layer above that admitted the request (a circuit breaker) is asked again when
        // its turn comes.
        queued.readmission = hold_back();
        queued
    }

    fn wait_or_refuse<ReqBody>(
        &mut self,
        request: Request<ReqBody>,
        entry: Held<KeyEntry<St>>,
        cost: u32,
        now: Instant,
        head_wait: Duration,
    ) -> ResponseFuture<S, ReqBody, X::Key, St>
    where
        S: Service<Request<ReqBody>> + Clone,
    {
        // Only an empty store's answer says "oversize" on the direct path; a request that
        // would wait is checked here, so that one no quota can ever admit is refused at once
        // rather than at the head of the queue (or with a wait that a caller would obey).
        if self.limiter.oversize(&entry, cost) {
            return self.refuse(Rejected::Oversize { cost });
        }
        match self
            .limiter
            .join(&entry, Some(&request), cost, now, head_wait)
        {
            Err(rejected) => self.refuse(rejected),
            Ok((place, slot)) => {
                let mut queued = self.queued(request, entry, cost, now, None);
                queued.place = Some(place);
                queued.joined = true;
                ResponseFuture::queued(queued, slot)
            }
        }
    }
}
