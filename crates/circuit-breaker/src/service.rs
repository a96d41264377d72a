//! The [`CircuitBreaker`] service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use seawall_core::admission::AdmissionScope;
use seawall_core::{
    CallKey, CallTime, Classify, Held, KeyExtractor, KeyRef, KeyedMap, RequestHead, SingleState,
};
use tokio::time::Instant;
use tower::Service;

use crate::breaker::{Admission, Breaker, Totals};
use crate::config::Config;
use crate::error::{BreakerError, CircuitOpen};
use crate::event::State;
use crate::future::{CallGuard, ResponseFuture};
use crate::sync::{AtomicU64, Ordering};

/// The breakers of one layer: a single one, or one per key.
pub(crate) enum Breakers<K: Send + Sync + 'static> {
    Single(SingleState<Breaker<K>>),
    Keyed {
        map: KeyedMap<K, Breaker<K>>,
        config: Arc<Config>,
        seed: AtomicU64,
        /// The counts of the breakers dropped from `map`.
        retired: Arc<Totals>,
        /// The aggregate counts last reported (see `CircuitBreakerHandle::series`).
        reported: Totals,
    },
}

impl<K: fmt::Debug + std::hash::Hash + Eq + Clone + Send + Sync + 'static> fmt::Debug
    for Breakers<K>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Breakers::Single(breaker) => f.debug_tuple("Single").field(breaker).finish(),
            Breakers::Keyed { map, .. } => f.debug_struct("Keyed").field("map", map).finish(),
        }
    }
}

impl<K: fmt::Debug + std::hash::Hash + Eq + Clone + Send + Sync + 'static> Breakers<K> {
    /// The breaker for `key`, created if new.
    pub(crate) fn breaker(&self, key: &K) -> KeyRef<Breaker<K>> {
        self.keyed_breaker(|map, make, keep| {
            map.get_or_insert_by(key, || key.clone(), Instant::now(), make, keep)
        })
    }

    /// The single breaker, or the keyed one `lookup` finds in the map with the given ways to
    /// make a new breaker and to keep an idle one.
    fn keyed_breaker(
        &self,
        lookup: impl FnOnce(
            &KeyedMap<K, Breaker<K>>,
            &dyn Fn(&K) -> Breaker<K>,
            &dyn Fn(&Breaker<K>) -> bool,
        ) -> KeyRef<Breaker<K>>,
    ) -> KeyRef<Breaker<K>> {
        match self {
            Breakers::Single(breaker) => KeyRef::clone(breaker),
            Breakers::Keyed {
                map,
                config,
                seed,
                retired,
                ..
            } => lookup(
                map,
                &|key| {
                    let seed = seed.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
                    Breaker::new(key.clone(), Arc::clone(config), seed)
                        .retiring_into(Arc::clone(retired))
                },
                // An idle breaker that is not closed (open, forced, disabled) remembers
                // something a fresh one would not.
                &|breaker| breaker.state() != State::Closed,
            ),
        }
    }

    /// Whether admitting a call needs the time: a key's breaker is looked up by it, and a
    /// breaker that times calls needs their start.
    fn needs_clock(&self) -> bool {
        match self {
            Breakers::Single(breaker) => breaker.needs_time(),
            Breakers::Keyed { .. } => true,
        }
    }

    /// Admits a call for the request's key, or refuses it without touching the inner service.
    fn acquire<X, B>(
        &self,
        extractor: &X,
        request: &Request<B>,
        now: Option<Instant>,
    ) -> Result<(Held<Breaker<K>>, Admission), CircuitOpen>
    where
        X: KeyExtractor<Key = K>,
    {
        match self {
            // The single breaker is checked before a handle is taken, so a refusal costs
            // one atomic load.
            Breakers::Single(breaker) => {
                let admission = breaker.try_acquire()?;
                Ok((breaker.hold(), admission))
            }
            Breakers::Keyed { .. } => {
                let breaker = self.keyed_breaker(|map, make, keep| {
                    let now = now.unwrap_or_else(Instant::now);
                    extractor.entry(&RequestHead::of(request), map, now, make, keep)
                });
                let admission = breaker.try_acquire()?;
                Ok((Held::new(breaker), admission))
            }
        }
    }
}

/// A service that stops calling an upstream that is failing. See the [crate docs](crate).
pub struct CircuitBreaker<S, C, X: KeyExtractor> {
    inner: S,
    /// Whether `inner` said it was ready; when it did not, this service says it is anyway
    /// (a refusal must not wait for the service it spares), and an admitted call readies
    /// `inner` in its response future.
    inner_ready: bool,
    classifier: C,
    extractor: X,
    breakers: Arc<Breakers<X::Key>>,
}

impl<S: fmt::Debug, C, X: KeyExtractor> fmt::Debug for CircuitBreaker<S, C, X> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("breakers", &self.breakers)
            .finish_non_exhaustive()
    }
}

impl<S: Clone, C: Clone, X: KeyExtractor + Clone> Clone for CircuitBreaker<S, C, X> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            inner_ready: false,
            classifier: self.classifier.clone(),
            extractor: self.extractor.clone(),
            breakers: Arc::clone(&self.breakers),
        }
    }
}

impl<S, C, X: KeyExtractor> CircuitBreaker<S, C, X> {
    pub(crate) fn new(
        inner: S,
        classifier: C,
        extractor: X,
        breakers: Arc<Breakers<X::Key>>,
    ) -> Self {
        Self {
            inner,
            inner_ready: false,
            classifier,
            extractor,
            breakers,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// A handle on this service's breakers.
    pub fn handle(&self) -> crate::CircuitBreakerHandle<X::Key> {
        crate::CircuitBreakerHandle::new(Arc::clone(&self.breakers))
    }
}

impl<S, C, X, ReqBody, ResBody> Service<Request<ReqBody>> for CircuitBreaker<S, C, X>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    C: Classify<Response<ResBody>, S::Error> + Clone,
    X: KeyExtractor,
{
    type Response = Response<ResBody>;
    type Error = BreakerError<S::Error>;
    type Future = ResponseFuture<S, ReqBody, C, X::Key>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => self.inner_ready = true,
            Poll::Ready(Err(error)) => return Poll::Ready(Err(BreakerError::Inner(error))),
            // Which breaker a request meets is known only from the request: ready now, so
            // that a call an open breaker refuses is refused at once, never after waiting
            // for (and holding) a permit of the service below.
            Poll::Pending => self.inner_ready = false,
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // Held until the layers below have been called, so that they share this reading. A
        // single breaker that times nothing reads no clock.
        let call_time = self.breakers.needs_clock().then(CallTime::enter);
        // Held as long: the layers below keyed by host find the key this one finds (a single
        // breaker finds none, and leaves the scope to the layers below).
        let _call_key = matches!(*self.breakers, Breakers::Keyed { .. }).then(CallKey::enter);
        let now = call_time.as_ref().map(|(now, _)| *now);
        match self.breakers.acquire(&self.extractor, &request, now) {
            Err(open) => ResponseFuture::rejected(open),
            Ok((breaker, admission)) => {
                let started = breaker
                    .needs_time()
                    .then(|| now.unwrap_or_else(Instant::now));
                let mut guard =
                    CallGuard::new(breaker, admission, started, self.classifier.clone());
                if !std::mem::take(&mut self.inner_ready) {
                    // The service below was not ready: the future readies it (the one that
                    // was polled, with whatever progress it made) before calling it.
                    let fresh = self.inner.clone();
                    let service = std::mem::replace(&mut self.inner, fresh);
                    return ResponseFuture::readying(service, request, guard);
                }
                // A layer below that holds the call back (a rate limiter's queue) asks for
                // this breaker's verdict again when the call's turn comes.
                let scope = AdmissionScope::open();
                let future = self.inner.call(request);
                if let Some(held) = scope.close() {
                    guard.hold(held);
                }
                ResponseFuture::called(future, guard)
            }
        }
    }
}
