//! Admissions outside HTTP: [`RateLimitLayer::acquire`] paces any operation (an SDK call, a
//! database query) in the same fair queue as the requests of the layer's services.

use std::convert::Infallible;
use std::fmt;
use std::future::{Future, Ready, ready};
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::{Request, Response};
use pin_project_lite::pin_project;
use seawall_core::{KeyExtractor, QueueWait};
use tower::Service;

use crate::error::{RateLimitError, Rejected};
use crate::extensions::Cost;
use crate::future::ResponseFuture;
use crate::layer::RateLimitLayer;
use crate::service::RateLimit;
use crate::store::RateStore;

/// The service an admission "calls" once the limiter admits it: it answers at once, so an
/// admission runs through exactly the queue, bounds and figures a request does.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Admit;

impl Service<Request<()>> for Admit {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = Ready<Result<Response<()>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: Request<()>) -> Self::Future {
        ready(Ok(Response::new(())))
    }
}

/// The limiter's admission of one operation. The tokens are taken when it is given; there is
/// nothing to give back, so dropping it is free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "an admission is meant to be followed by the operation it admits"]
pub struct Permit {
    waited: Duration,
}

impl Permit {
    /// How long the operation waited in the queue (zero if admitted at once).
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

pin_project! {
    /// The future of [`RateLimitLayer::acquire`]: a [`Permit`] once admitted, or the
    /// [`Rejected`] refusal a request would meet (queue full, predicted wait over
    /// `max_wait`, fail-fast, oversize, store unavailable). Dropping it while it waits leaves
    /// the queue at once and hands its turn to the next.
    pub struct Acquire<K, St>
    where
        St: RateStore,
    {
        #[pin]
        inner: ResponseFuture<Admit, (), K, St>,
    }
}

impl<K, St: RateStore> fmt::Debug for Acquire<K, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acquire").finish_non_exhaustive()
    }
}

impl<K, St> Future for Acquire<K, St>
where
    K: Clone + Eq + Hash + fmt::Debug + Send + Sync + 'static,
    St: RateStore,
    St::Future: Unpin,
{
    type Output = Result<Permit, Rejected>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().inner.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(response)) => Poll::Ready(Ok(Permit {
                waited: QueueWait::of(&response),
            })),
            Poll::Ready(Err(RateLimitError::Rejected(rejected))) => Poll::Ready(Err(rejected)),
            Poll::Ready(Err(RateLimitError::Inner(never))) => match never {},
        }
    }
}

impl<X, St> RateLimitLayer<X, St>
where
    X: KeyExtractor + Clone,
    St: RateStore,
    St::Future: Unpin,
{
    /// Waits for `key`'s turn to spend `cost` tokens (0 counts as 1), in the same queue as
    /// the requests of this layer's services (first come, first served; the same
    /// `max_waiting`, `max_wait` and fail-fast rules; the same figures). A single-key limiter
    /// ignores `key`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use seawall_rate_limit::RateLimitLayer;
    /// use tokio::time::Instant;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let limit = RateLimitLayer::builder().per_second(10).burst(1).build()?;
    /// let start = Instant::now();
    /// for _ in 0..3 {
    ///     let _permit = limit.acquire(&(), 1).await?;
    ///     // ... the operation ...
    /// }
    /// assert_eq!(start.elapsed(), Duration::from_millis(200));
    /// # Ok(())
    /// # }
    /// ```
    pub fn acquire(&self, key: &X::Key, cost: u32) -> Acquire<X::Key, St> {
        let (now, _call_time) = self.limiter.call_time();
        let entry = self.limiter.entry(key, now);
        let mut service = RateLimit::new(Admit, self.extractor.clone(), Arc::clone(&self.limiter));
        // `Admit` is always ready; readying it first lets an admission at once take the
        // direct path.
        let _ = service.poll_ready(&mut Context::from_waker(Waker::noop()));
        Acquire {
            // A cost of 0 takes one token, as the `Cost` extension's does.
            inner: service.call_entry(Request::new(()), entry, Cost(cost).tokens(), now),
        }
    }
}

/// Where one key stands against a limiter's quotas, for `RateLimit` response headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaState {
    /// Tokens that could be taken back to back now (at most the largest burst).
    pub remaining: u32,
    /// How long until the key has its smallest quota's whole burst again.
    pub reset: Duration,
}

impl<X, St> RateLimitLayer<X, St>
where
    X: KeyExtractor,
    St: RateStore,
{
    /// The limiter's own quotas (a key on a tier has its tier's instead).
    pub fn quotas(&self) -> &[crate::Quota] {
        self.limiter.own_quotas()
    }

    /// Where `key` stands now, if the store can tell without a round trip (the in-process
    /// store can; a remote one cannot). Looks, takes nothing.
    pub fn quota_state(&self, key: &X::Key) -> Option<QuotaState>
    where
        X::Key: Clone + Eq + Hash + fmt::Debug + Send + Sync + 'static,
    {
        let limiter = &self.limiter;
        let now = limiter.now();
        let entry = limiter.entry(key, now);
        let quotas = limiter.quotas_of(&entry);
        let smallest = quotas.iter().map(crate::Quota::burst_size).min()?;
        let reset = limiter.store.peek(&entry.slot, quotas, smallest, now)?;
        let available = limiter.store.available(&entry.slot, quotas, now)?;
        Some(QuotaState {
            remaining: u32::try_from(available).unwrap_or(u32::MAX),
            reset,
        })
    }
}

impl<X: KeyExtractor, St: RateStore> RateLimitLayer<X, St> {
    /// The key extractor the layer's services key requests by.
    pub fn key_extractor(&self) -> &X {
        &self.extractor
    }
}
