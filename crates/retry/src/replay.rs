//! Request bodies that can be sent more than once.
//!
//! A body that is complete the moment the request is made (`Full<Bytes>`, `Bytes`, `String`,
//! an empty body) is captured as one `Bytes` and every attempt gets a reference-counted copy:
//! nothing is copied or allocated. Any other body is streamed to the first attempt while its
//! chunks are kept in a buffer shared by every copy; a later attempt replays the buffer and
//! then goes on reading the original body where the first attempt stopped. When the body
//! grows past the cap the buffer is dropped and the request stops being retryable: it is sent
//! once, never failed because of its size.
//!
//! Bodies must be `Unpin`, as hyper-util's client requires of them anyway; a body that is
//! not can be pinned in a `Box` first.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

/// The error type of a [`ReplayBody`]: the original body's error, or [`NotReplayable`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A copy of a body was read after the body had outgrown the replay cap.
///
/// The retry layer never sends such a copy; this error only appears if a copy is sent by
/// other means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotReplayable;

impl fmt::Display for NotReplayable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "the request body outgrew the retry layer's replay buffer and cannot be sent again",
        )
    }
}

impl std::error::Error for NotReplayable {}

/// A request body that every retry attempt can send again: complete bodies are copied for
/// free, streamed bodies are replayed from a buffer of at most the replay cap.
///
/// Cloning gives a reader that starts from the beginning of the body.
pub struct ReplayBody<B> {
    kind: Kind<B>,
}

enum Kind<B> {
    /// The whole body, known up front; `sent` once this reader has yielded it.
    Whole { data: Bytes, sent: bool },
    /// A streamed body shared by every copy; `position` counts the data frames this reader
    /// has yielded.
    Streamed {
        shared: Arc<Mutex<Streamed<B>>>,
        position: usize,
        trailers_sent: bool,
        hint: SizeHint,
    },
}

struct Streamed<B> {
    body: B,
    /// Every data frame read so far, while they fit in the cap.
    chunks: Vec<Bytes>,
    buffered: usize,
    cap: usize,
    /// Data frames read from the body so far, kept or not.
    frames_read: usize,
    /// The chunks were dropped because the body outgrew the cap.
    overflowed: bool,
    ended: bool,
    trailers: Option<HeaderMap>,
    /// The body failed; its error was given to the reader that saw it.
    failed: bool,
    /// An error met while peeking at the body, not yet given to a reader.
    pending_error: Option<BoxError>,
    /// The first chunk, read while peeking, when it alone outgrew the cap: the first reader
    /// still needs it.
    peeked: Option<Bytes>,
    /// Readers that found nothing new and polled the body in vain. A body keeps only the
    /// waker of its latest poll, so when one reader is woken and reads on, it wakes these
    /// (two attempts reading at once: a first whose connection still pulls the body while
    /// the retry sends it again).
    waiting: Vec<Waker>,
}

impl<B> Streamed<B> {
    /// Wakes the other readers waiting at the body's end, after `reader` read on from it.
    fn wake_others(&mut self, reader: &Waker) {
        for waker in self.waiting.drain(..) {
            if !waker.will_wake(reader) {
                waker.wake();
            }
        }
    }
}

impl<B> ReplayBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    /// Wraps `body`, keeping at most `cap` bytes for replays.
    ///
    /// The body is polled once, with a waker that does nothing, to find out whether it is
    /// already complete; a body that is not is polled again, with a real waker, by whoever
    /// sends it, as the `Body` contract allows.
    pub fn new(mut body: B, cap: usize) -> Self {
        if body.is_end_stream() {
            return Self::whole(Bytes::new());
        }
        let hint = body.size_hint();
        // A body announced as larger than the cap is never buffered, unless it turns out to
        // be complete already (a large `Full`): that one is in memory anyway, and is kept
        // whole at no cost, as the cap bounds only what streaming would add.
        let overflowed = hint.lower() > cap as u64;
        // Peeked before the shared state is made, which a complete body never needs. A body
        // that is not complete keeps its first frame for the first reader.
        let mut peeked = Peeked::Nothing;
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Pending => {}
            Poll::Ready(None) => return Self::whole(Bytes::new()),
            Poll::Ready(Some(Err(error))) => peeked = Peeked::Error(error.into()),
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(mut data) => {
                    let bytes = data.copy_to_bytes(data.remaining());
                    if body.is_end_stream() {
                        return Self::whole(bytes);
                    }
                    peeked = Peeked::Data(bytes);
                }
                Err(frame) => peeked = Peeked::Trailers(frame.into_trailers().ok()),
            },
        }
        let mut state = Streamed {
            body,
            chunks: Vec::new(),
            buffered: 0,
            cap,
            frames_read: 0,
            overflowed,
            ended: false,
            trailers: None,
            failed: false,
            pending_error: None,
            waiting: Vec::new(),
            peeked: None,
        };
        match peeked {
            Peeked::Nothing => {}
            Peeked::Error(error) => state.pending_error = Some(error),
            Peeked::Data(bytes) => {
                state.record(&bytes);
                if state.overflowed {
                    state.peeked = Some(bytes);
                }
            }
            Peeked::Trailers(trailers) => {
                state.trailers = trailers;
                state.ended = true;
            }
        }
        Self {
            kind: Kind::Streamed {
                shared: Arc::new(Mutex::new(state)),
                position: 0,
                trailers_sent: false,
                hint,
            },
        }
    }
}

/// What [`ReplayBody::new`] found when it polled a body once.
enum Peeked {
    Nothing,
    Data(Bytes),
    Trailers(Option<HeaderMap>),
    Error(BoxError),
}

impl<B> ReplayBody<B> {
    /// A body whose whole content is `data`.
    fn whole(data: Bytes) -> Self {
        Self {
            kind: Kind::Whole { data, sent: false },
        }
    }

    /// Whether a copy of this body can still be sent in full: `false` once the body outgrew
    /// the cap or failed.
    pub fn is_replayable(&self) -> bool {
        match &self.kind {
            Kind::Whole { .. } => true,
            Kind::Streamed { shared, .. } => {
                let state = lock(shared);
                !state.overflowed && !state.failed && state.pending_error.is_none()
            }
        }
    }

    /// Whether the whole body was known up front, so that copies cost nothing.
    pub fn is_whole(&self) -> bool {
        matches!(self.kind, Kind::Whole { .. })
    }
}

impl<B> Streamed<B> {
    /// Counts a data frame read from the body, and keeps it while the buffer has room.
    fn record(&mut self, chunk: &Bytes) {
        self.frames_read += 1;
        if self.overflowed {
            return;
        }
        self.buffered += chunk.len();
        if self.buffered > self.cap {
            self.overflowed = true;
            self.chunks = Vec::new();
        } else {
            self.chunks.push(chunk.clone());
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while the lock was held leaves the buffer as consistent as it was
    // before the panicking poll; the body can still be read.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<B> Clone for ReplayBody<B> {
    fn clone(&self) -> Self {
        match &self.kind {
            Kind::Whole { data, .. } => Self::whole(data.clone()),
            Kind::Streamed { shared, hint, .. } => Self {
                kind: Kind::Streamed {
                    shared: Arc::clone(shared),
                    position: 0,
                    trailers_sent: false,
                    hint: *hint,
                },
            },
        }
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Whole { data, sent } => f
                .debug_struct("ReplayBody::Whole")
                .field("len", &data.len())
                .field("sent", sent)
                .finish(),
            Kind::Streamed { position, .. } => f
                .debug_struct("ReplayBody::Streamed")
                .field("position", position)
                .field("replayable", &self.is_replayable())
                .finish(),
        }
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().kind {
            Kind::Whole { data, sent } => {
                if *sent || data.is_empty() {
                    *sent = true;
                    return Poll::Ready(None);
                }
                *sent = true;
                Poll::Ready(Some(Ok(Frame::data(data.clone()))))
            }
            Kind::Streamed {
                shared,
                position,
                trailers_sent,
                ..
            } => {
                let mut state = lock(shared);
                if *position == 0
                    && let Some(chunk) = state.peeked.take()
                {
                    *position += 1;
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                if *position < state.frames_read {
                    if state.overflowed {
                        return Poll::Ready(Some(Err(NotReplayable.into())));
                    }
                    let chunk = state.chunks[*position].clone();
                    *position += 1;
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                if let Some(error) = state.pending_error.take() {
                    state.failed = true;
                    return Poll::Ready(Some(Err(error)));
                }
                if state.failed {
                    return Poll::Ready(Some(Err(NotReplayable.into())));
                }
                if state.ended {
                    if !*trailers_sent {
                        *trailers_sent = true;
                        if let Some(trailers) = &state.trailers {
                            return Poll::Ready(Some(Ok(Frame::trailers(trailers.clone()))));
                        }
                    }
                    return Poll::Ready(None);
                }
                let polled = Pin::new(&mut state.body).poll_frame(cx);
                if polled.is_pending() {
                    if !state
                        .waiting
                        .iter()
                        .any(|waker| waker.will_wake(cx.waker()))
                    {
                        state.waiting.push(cx.waker().clone());
                    }
                } else {
                    state.wake_others(cx.waker());
                }
                match polled {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(None) => {
                        state.ended = true;
                        *trailers_sent = true;
                        Poll::Ready(None)
                    }
                    Poll::Ready(Some(Err(error))) => {
                        state.failed = true;
                        Poll::Ready(Some(Err(error.into())))
                    }
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(mut data) => {
                            let chunk = data.copy_to_bytes(data.remaining());
                            state.record(&chunk);
                            *position += 1;
                            Poll::Ready(Some(Ok(Frame::data(chunk))))
                        }
                        Err(frame) => {
                            state.ended = true;
                            *trailers_sent = true;
                            match frame.into_trailers() {
                                Ok(trailers) => {
                                    state.trailers = Some(trailers.clone());
                                    Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                                }
                                // A frame kind this version of http-body does not know.
                                Err(_) => Poll::Ready(None),
                            }
                        }
                    },
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Whole { data, sent } => *sent || data.is_empty(),
            Kind::Streamed {
                shared,
                position,
                trailers_sent,
                ..
            } => match shared.try_lock() {
                Ok(state) => {
                    *position == state.frames_read
                        && state.ended
                        && (*trailers_sent || state.trailers.is_none())
                        && state.pending_error.is_none()
                        && !state.failed
                }
                Err(_) => false,
            },
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Whole { data, sent } => {
                SizeHint::with_exact(if *sent { 0 } else { data.len() as u64 })
            }
            // The original's hint holds for a reader that has not started.
            Kind::Streamed {
                position: 0,
                trailers_sent: false,
                hint,
                ..
            } => *hint,
            Kind::Streamed { .. } => SizeHint::default(),
        }
    }
}
