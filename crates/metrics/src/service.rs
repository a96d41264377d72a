//! The [`Metrics`] service.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use seawall_core::Classify;
use tower::Service;

use crate::body::{InFlight, MetricsBody};
use crate::future::ResponseFuture;
use crate::labels::method_index;
use crate::recorder::RecorderRefs;

/// Records every request through it. See the [crate docs](crate).
#[derive(Debug, Clone)]
pub struct Metrics<S, C> {
    inner: S,
    classifier: C,
    refs: Arc<RecorderRefs>,
}

impl<S, C> Metrics<S, C> {
    pub(crate) fn new(inner: S, classifier: C, refs: Arc<RecorderRefs>) -> Self {
        Self {
            inner,
            classifier,
            refs,
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
}

impl<S, C, ReqBody, ResBody> Service<Request<ReqBody>> for Metrics<S, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    C: Classify<Response<ResBody>, S::Error> + Clone,
{
    type Response = Response<MetricsBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let method = method_index(request.method());
        let span = crate::trace::request_span(&mut request, method);
        // The clock starts before the layers below do their part of the call (and the
        // request leaves the in-flight gauge even if that part panics).
        let in_flight = InFlight::start(&self.refs);
        // What the layers below do in `call` (a first attempt, its events) is inside the span.
        let inner = {
            let _entered = span.enter();
            // An attempt called inside this call starts when the request does.
            let _lent = in_flight.recorder().clock.lend_start(in_flight.started);
            self.inner.call(request)
        };
        ResponseFuture::new(inner, in_flight, method, self.classifier.clone(), span)
    }
}
