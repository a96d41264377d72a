//! The [`ResponseFuture`] of the metrics service.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use seawall_core::Classify;

use crate::body::{InFlight, MetricsBody};
use crate::labels::{CANCELLED, NO_STATUS, OUTCOMES, outcome_index, status_index};

/// The part of a call that must be recorded even if the future is dropped.
#[derive(Debug)]
struct Pending {
    in_flight: Option<InFlight>,
    method: usize,
    span: tracing::Span,
}

impl Drop for Pending {
    fn drop(&mut self) {
        // Still here: the request was cancelled before its response arrived.
        if let Some(in_flight) = &self.in_flight {
            let recorder = in_flight.recorder();
            let ended = recorder.clock.now();
            recorder.record(self.method, NO_STATUS, CANCELLED, in_flight.started, ended);
            crate::trace::record_end(&self.span, None, OUTCOMES[CANCELLED]);
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of a [`Metrics`](crate::Metrics) call.
    pub struct ResponseFuture<F, C> {
        #[pin]
        inner: F,
        pending: Pending,
        classifier: C,
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn new(
        inner: F,
        in_flight: InFlight,
        method: usize,
        classifier: C,
        span: tracing::Span,
    ) -> Self {
        Self {
            inner,
            pending: Pending {
                in_flight: Some(in_flight),
                method,
                span,
            },
            classifier,
        }
    }
}

impl<F, C, B, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<Response<B>, E>>,
    C: Classify<Response<B>, E>,
{
    type Output = Result<Response<MetricsBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // An attempt that ends in this poll lends the request its end reading.
        let listener =
            (this.pending.in_flight.as_ref()).map(|f| f.recorder().clock.listen_for_end());
        let result = {
            let _entered = this.pending.span.enter();
            ready!(this.inner.poll(cx))
        };
        let (Some(in_flight), Some(listener)) = (this.pending.in_flight.take(), listener) else {
            // Polled again after completion: the inner future decides what that means.
            return Poll::Ready(result.map(|r| r.map(|b| MetricsBody::unmetered(b))));
        };
        let outcome = outcome_index(this.classifier.classify(&result));
        let status = result
            .as_ref()
            .map_or(NO_STATUS, |response| status_index(response.status()));
        crate::trace::record_end(
            &this.pending.span,
            result.as_ref().ok().map(Response::status),
            OUTCOMES[outcome],
        );
        let recorder = in_flight.recorder();
        let ended = listener.end_or_now(&recorder.clock);
        recorder.record(
            this.pending.method,
            status,
            outcome,
            in_flight.started,
            ended,
        );
        match &result {
            Ok(response) => recorder.record_response(
                seawall_core::QueueWait::of(response),
                seawall_core::Attempts::of(response),
            ),
            // An error that does not say took one attempt (no retry layer below).
            Err(error) => {
                recorder.record_attempts(this.classifier.error_attempts(error).unwrap_or(1));
            }
        }
        // An error ends the request here (dropping `in_flight`); a response keeps it in
        // flight until its body is done.
        Poll::Ready(result.map(|response| response.map(|body| MetricsBody::new(body, in_flight))))
    }
}
