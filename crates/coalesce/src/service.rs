//! The [`Coalesce`] service.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderName, Request, Response};
use http_body::Body;
use seawall_core::is_idempotent_method;
use tower::Service;

use crate::body::CoalesceBody;
use crate::error::{BoxError, CoalesceError};
use crate::flight::{Flights, Role, enter};
use crate::future::{ResponseFuture, follower};
use crate::key::FlightKey;
use crate::stats::Counters;

/// What every clone of one service shares: the layer's settings and figures, and the calls
/// in flight.
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) vary: Arc<[HeaderName]>,
    pub(crate) max_body_bytes: u64,
    pub(crate) counters: Arc<Counters>,
    pub(crate) flights: Flights,
}

/// Lets identical in-flight requests share one call to the service it wraps; built by a
/// [`CoalesceLayer`](crate::CoalesceLayer).
///
/// Clones share their calls in flight: an identical request through any clone joins them.
#[derive(Debug)]
pub struct Coalesce<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S: Clone> Clone for Coalesce<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
        }
    }
}

impl<S> Coalesce<S> {
    pub(crate) fn new(inner: S, config: Config) -> Self {
        Self {
            inner,
            config: Arc::new(config),
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

    /// Keys with a call in flight through this service and its clones now.
    pub fn in_flight(&self) -> usize {
        self.config.flights.len()
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// Whether `request` may share a call: an idempotent method (RFC 9110; seawall-core's rules)
/// and no body, since the key does not cover one.
fn coalescible<B: Body>(request: &Request<B>) -> bool {
    is_idempotent_method(request.method())
        && (request.body().is_end_stream() || request.body().size_hint().exact() == Some(0))
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Coalesce<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    ReqB: Body + Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Send,
{
    type Response = Response<CoalesceBody<ResB>>;
    type Error = CoalesceError<S::Error>;
    type Future = ResponseFuture<S::Future, ResB, S::Error>;

    /// The readiness of the wrapped service: a request that leads its call (or passes
    /// through) calls it. A follower does not, and leaves the readiness for the next call; if
    /// it must call after all, it does so through a clone it readies itself.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(CoalesceError::Upstream)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        if !coalescible(&request) {
            return ResponseFuture::pass(self.inner.call(request));
        }
        let config = &self.config;
        let key = FlightKey::new(&request, &config.vary, &config.flights.hasher);
        match enter(config, key) {
            Role::Leader(guard) => {
                ResponseFuture::lead(self.inner.call(request), guard, config.max_body_bytes)
            }
            Role::Follower(guard) => {
                follower(self.inner.clone(), request, guard, Arc::clone(config))
            }
        }
    }
}
