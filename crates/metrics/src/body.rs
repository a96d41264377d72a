//! [`MetricsBody`]: the response body, holding its request's place in the in-flight gauge.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};

use crate::recorder::{Recorder, RecorderRef, RecorderRefs};

/// Holds one in-flight request until its response body ends or is dropped.
#[derive(Debug)]
pub(crate) struct InFlight {
    /// Keeps the recorder alive (this thread's reference to it).
    held: Arc<RecorderRef>,
    /// When the request started, on the recorder's clock.
    pub(crate) started: u64,
}

impl InFlight {
    /// Counts a request in flight from now.
    #[inline]
    pub(crate) fn start(refs: &RecorderRefs) -> Self {
        let held = refs.get();
        Self {
            started: held.recorder.started(),
            held,
        }
    }

    /// The recorder the request is recorded in.
    #[inline]
    pub(crate) fn recorder(&self) -> &Recorder {
        &self.held.recorder
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.recorder().finished();
    }
}

pin_project_lite::pin_project! {
    /// A response body that counts its request as in flight until the body has been read to
    /// the end or dropped, and (when enabled) records the time to its end.
    #[derive(Debug)]
    pub struct MetricsBody<B> {
        #[pin]
        inner: B,
        in_flight: Option<InFlight>,
    }
}

impl<B> MetricsBody<B> {
    pub(crate) fn new(inner: B, in_flight: InFlight) -> Self {
        Self {
            inner,
            in_flight: Some(in_flight),
        }
    }

    /// A body that holds no request in flight.
    pub(crate) fn unmetered(inner: B) -> Self {
        Self {
            inner,
            in_flight: None,
        }
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// The wrapped body, by value; the request stops counting as in flight.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B: Body> Body for MetricsBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        let ended = match &frame {
            None | Some(Err(_)) => true,
            Some(Ok(_)) => false,
        };
        if ended && let Some(in_flight) = this.in_flight.take() {
            in_flight.recorder().record_body_end(in_flight.started);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
