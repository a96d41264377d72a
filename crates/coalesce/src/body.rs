//! The response body of a coalescing service.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// The body of a response from a [`Coalesce`](crate::Coalesce) service: the upstream's
    /// own body, or an answer buffered once and shared by every request that waited for it.
    ///
    /// Its data is [`Bytes`] and its error the upstream body's error, so that it fits where
    /// the upstream body did.
    pub struct CoalesceBody<B: Body> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B: Body> {
        // The upstream's body, untouched: a request that shared nothing.
        Inner { #[pin] body: B },
        // A buffered answer.
        Shared { data: Option<Bytes>, trailers: Option<HeaderMap> },
        // What the leader had read of a body it meant to share before sharing failed (the
        // body outgrew its declared size, or failed), then the rest of the body or its error.
        Replay {
            read: VecDeque<Frame<Bytes>>,
            rest: Option<Pin<Box<B>>>,
            error: Option<B::Error>,
        },
    }
}

impl<B: Body> CoalesceBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    pub(crate) fn shared(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        Self {
            kind: Kind::Shared {
                data: (!data.is_empty()).then_some(data),
                trailers,
            },
        }
    }

    pub(crate) fn replay(
        read: VecDeque<Frame<Bytes>>,
        rest: Result<Pin<Box<B>>, B::Error>,
    ) -> Self {
        let (rest, error) = match rest {
            Ok(body) => (Some(body), None),
            Err(error) => (None, Some(error)),
        };
        Self {
            kind: Kind::Replay { read, rest, error },
        }
    }

    /// Whether the body is an answer shared with identical requests (rather than this
    /// request's own upstream body).
    pub fn is_shared(&self) -> bool {
        matches!(self.kind, Kind::Shared { .. })
    }
}

impl<B: Body> std::fmt::Debug for CoalesceBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            Kind::Inner { .. } => "Inner",
            Kind::Shared { .. } => "Shared",
            Kind::Replay { .. } => "Replay",
        };
        f.debug_struct("CoalesceBody").field("kind", &kind).finish()
    }
}

impl<B> Body for CoalesceBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Shared { data, trailers } => {
                if let Some(data) = data.take() {
                    Poll::Ready(Some(Ok(Frame::data(data))))
                } else {
                    Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
                }
            }
            KindProj::Replay { read, rest, error } => {
                if let Some(frame) = read.pop_front() {
                    return Poll::Ready(Some(Ok(frame)));
                }
                if let Some(error) = error.take() {
                    return Poll::Ready(Some(Err(error)));
                }
                match rest {
                    Some(body) => body.as_mut().poll_frame(cx),
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Shared { data, trailers } => data.is_none() && trailers.is_none(),
            Kind::Replay { read, rest, error } => {
                read.is_empty()
                    && error.is_none()
                    && rest.as_ref().is_none_or(|body| body.is_end_stream())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Shared { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Replay { read, rest, .. } => {
                let buffered: u64 = read
                    .iter()
                    .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
                    .sum();
                let rest = rest
                    .as_ref()
                    .map_or_else(|| SizeHint::with_exact(0), |body| body.size_hint());
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower().saturating_add(buffered));
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper.saturating_add(buffered));
                }
                hint
            }
        }
    }
}
