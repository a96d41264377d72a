//! The body of the cache layer's answers: the upstream's own, or stored bytes.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// The body of a response from [`Cache`](crate::Cache): the upstream's body passed
    /// through (an answer that was not stored), the stored bytes (a hit, or an answer that was
    /// buffered and stored), or, for an answer found too large while it was being buffered,
    /// the frames read so far followed by the rest of the upstream's body.
    pub struct CacheBody<B: Body> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B: Body> {
        Upstream { #[pin] body: B },
        Stored { data: Option<Bytes> },
        Resumed {
            frames: VecDeque<Frame<Bytes>>,
            #[pin]
            rest: B,
            // An error the upstream's body gave while it was being buffered, given after the
            // frames read before it.
            error: Option<B::Error>,
        },
    }
}

impl<B: Body> CacheBody<B> {
    pub(crate) fn upstream(body: B) -> Self {
        CacheBody {
            kind: Kind::Upstream { body },
        }
    }

    pub(crate) fn full(data: Bytes) -> Self {
        CacheBody {
            kind: Kind::Stored {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }

    pub(crate) fn resumed(
        frames: VecDeque<Frame<Bytes>>,
        rest: B,
        error: Option<B::Error>,
    ) -> Self {
        CacheBody {
            kind: Kind::Resumed {
                frames,
                rest,
                error,
            },
        }
    }

    /// Whether the body is stored bytes (not the upstream's stream).
    pub fn is_stored(&self) -> bool {
        matches!(self.kind, Kind::Stored { .. })
    }
}

impl<B> Body for CacheBody<B>
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
            KindProj::Upstream { body } => body.poll_frame(cx),
            KindProj::Stored { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            KindProj::Resumed {
                frames,
                rest,
                error,
            } => {
                if let Some(frame) = frames.pop_front() {
                    return Poll::Ready(Some(Ok(frame)));
                }
                if let Some(error) = error.take() {
                    return Poll::Ready(Some(Err(error)));
                }
                rest.poll_frame(cx)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream { body } => body.is_end_stream(),
            Kind::Stored { data } => data.is_none(),
            Kind::Resumed {
                frames,
                rest,
                error,
            } => frames.is_empty() && error.is_none() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream { body } => body.size_hint(),
            Kind::Stored { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Resumed { frames, rest, .. } => {
                let buffered: u64 = frames
                    .iter()
                    .filter_map(|f| f.data_ref())
                    .map(|d| d.len() as u64)
                    .sum();
                let rest = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + buffered);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + buffered);
                }
                hint
            }
        }
    }
}

impl<B: Body> std::fmt::Debug for CacheBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Upstream { .. } => "upstream",
            Kind::Stored { .. } => "stored",
            Kind::Resumed { .. } => "resumed",
        };
        f.debug_struct("CacheBody").field("kind", &kind).finish()
    }
}

/// What buffering an upstream body gave.
pub(crate) enum Buffered<B: Body> {
    /// The whole body, within the bound.
    Complete(Bytes),
    /// More than the bound, trailers, or an error: the body to pass on instead.
    Passed(CacheBody<B>),
}

/// Reads `body` to its end if it is at most `limit` bytes long.
pub(crate) async fn buffer<B>(body: B, limit: usize) -> Buffered<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    use http_body_util::BodyExt;

    if body.size_hint().lower() > limit as u64 {
        return Buffered::Passed(CacheBody::upstream(body));
    }
    let mut body = body;
    let mut frames = VecDeque::new();
    let mut length = 0usize;
    loop {
        match body.frame().await {
            None => break,
            Some(Ok(frame)) => {
                let is_data = frame.is_data();
                if let Some(data) = frame.data_ref() {
                    length = length.saturating_add(data.len());
                }
                frames.push_back(frame);
                if !is_data || length > limit {
                    return Buffered::Passed(CacheBody::resumed(frames, body, None));
                }
            }
            Some(Err(error)) => {
                return Buffered::Passed(CacheBody::resumed(frames, body, Some(error)));
            }
        }
    }
    let data = match frames.len() {
        0 => Bytes::new(),
        1 => frames
            .pop_front()
            .and_then(|f| f.into_data().ok())
            .unwrap_or_default(),
        _ => {
            let mut joined = bytes::BytesMut::with_capacity(length);
            for frame in frames {
                if let Ok(data) = frame.into_data() {
                    joined.extend_from_slice(&data);
                }
            }
            joined.freeze()
        }
    };
    Buffered::Complete(data)
}
