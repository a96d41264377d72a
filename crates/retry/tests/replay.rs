//! Replayable request bodies: complete bodies, streamed bodies, the cap, trailers, errors.

use std::io;

use bytes::Bytes;
use futures::FutureExt;
use futures::channel::mpsc;
use http::HeaderMap;
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full, StreamBody};
use seawall_retry::ReplayBody;

type Chunk = Result<Frame<Bytes>, io::Error>;

fn channel_body() -> (
    mpsc::UnboundedSender<Chunk>,
    StreamBody<mpsc::UnboundedReceiver<Chunk>>,
) {
    let (tx, rx) = mpsc::unbounded();
    (tx, StreamBody::new(rx))
}

fn data(bytes: &'static [u8]) -> Chunk {
    Ok(Frame::data(Bytes::from_static(bytes)))
}

async fn read_all<B: Body<Data = Bytes>>(body: B) -> Result<(Bytes, Option<HeaderMap>), B::Error> {
    let collected = body.collect().await?;
    let trailers = collected.trailers().cloned();
    Ok((collected.to_bytes(), trailers))
}

/// Two readers wait at the end of a streamed body (a first attempt whose connection still
/// pulls it while the retry sends it again): the body wakes only its latest poller, so the
/// reader that reads on wakes the other, which finds the new chunk in the buffer.
#[test]
fn two_readers_waiting_at_the_body_s_end_are_both_woken() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll, Wake, Waker};

    struct Counting(AtomicUsize);
    impl Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let (tx, stream) = channel_body();
    let mut first = ReplayBody::new(stream, 1024);
    let mut second = first.clone();
    let (w1, w2) = (
        Arc::new(Counting(AtomicUsize::new(0))),
        Arc::new(Counting(AtomicUsize::new(0))),
    );
    let (waker1, waker2) = (Waker::from(Arc::clone(&w1)), Waker::from(Arc::clone(&w2)));
    let poll = |body: &mut ReplayBody<_>, waker: &Waker| {
        std::pin::Pin::new(body)
            .poll_frame(&mut Context::from_waker(waker))
            .map(|frame| frame.map(|frame| frame.unwrap().into_data().unwrap()))
    };
    assert!(poll(&mut first, &waker1).is_pending());
    assert!(poll(&mut second, &waker2).is_pending());
    tx.unbounded_send(data(b"chunk")).unwrap();
    // The body woke its latest poller only.
    assert_eq!(
        (w1.0.load(Ordering::SeqCst), w2.0.load(Ordering::SeqCst)),
        (0, 1)
    );
    assert_eq!(
        poll(&mut second, &waker2),
        Poll::Ready(Some(Bytes::from_static(b"chunk")))
    );
    assert_eq!(
        w1.0.load(Ordering::SeqCst),
        1,
        "the first reader is woken too"
    );
    assert_eq!(
        poll(&mut first, &waker1),
        Poll::Ready(Some(Bytes::from_static(b"chunk")))
    );
}

#[tokio::test]
async fn a_complete_body_is_captured_whole_and_copied_for_free() {
    let body = ReplayBody::new(Full::new(Bytes::from_static(b"hello")), 64);
    assert!(body.is_whole());
    assert!(body.is_replayable());
    assert_eq!(body.size_hint().exact(), Some(5));
    let copy = body.clone();
    assert_eq!(read_all(body).await.unwrap().0, "hello");
    assert_eq!(read_all(copy).await.unwrap().0, "hello");
}

#[tokio::test]
async fn a_streamed_body_is_replayed_from_its_buffer() {
    let (tx, stream) = channel_body();
    let body = ReplayBody::new(stream, 1024);
    assert!(!body.is_whole());
    let copy = body.clone();
    let mut first = body;
    // Nothing has arrived yet.
    assert!(first.frame().now_or_never().is_none());
    tx.unbounded_send(data(b"one ")).unwrap();
    let frame = first.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "one ");
    // A copy started now catches up from the buffer, then reads on from the source.
    let mut middle = copy.clone();
    assert_eq!(
        middle.frame().await.unwrap().unwrap().into_data().unwrap(),
        "one "
    );
    tx.unbounded_send(data(b"two ")).unwrap();
    tx.unbounded_send(data(b"three")).unwrap();
    drop(tx);
    assert_eq!(read_all(middle).await.unwrap().0, "two three");
    // The first reader goes on where it was.
    assert_eq!(read_all(first).await.unwrap().0, "two three");
    assert!(copy.is_replayable());
    assert_eq!(read_all(copy).await.unwrap().0, "one two three");
}

#[tokio::test]
async fn trailers_are_replayed_too() {
    let (tx, stream) = channel_body();
    let body = ReplayBody::new(stream, 1024);
    let copy = body.clone();
    let mut trailers = HeaderMap::new();
    trailers.insert("checksum", "abc".parse().unwrap());
    tx.unbounded_send(data(b"payload")).unwrap();
    tx.unbounded_send(Ok(Frame::trailers(trailers.clone())))
        .unwrap();
    drop(tx);
    assert_eq!(
        read_all(body).await.unwrap(),
        (Bytes::from_static(b"payload"), Some(trailers.clone()))
    );
    assert_eq!(
        read_all(copy).await.unwrap(),
        (Bytes::from_static(b"payload"), Some(trailers))
    );
}

#[tokio::test]
async fn a_body_that_outgrows_the_cap_is_sent_whole_once_and_never_replayed() {
    let (tx, stream) = channel_body();
    let body = ReplayBody::new(stream, 8);
    let copy = body.clone();
    tx.unbounded_send(data(b"12345")).unwrap();
    tx.unbounded_send(data(b"67890")).unwrap();
    drop(tx);
    assert_eq!(read_all(body).await.unwrap().0, "1234567890");
    assert!(!copy.is_replayable());
    let error = read_all(copy).await.unwrap_err();
    assert!(error.is::<seawall_retry::NotReplayable>(), "{error}");
}

#[tokio::test]
async fn a_complete_body_larger_than_the_cap_is_still_whole() {
    // The cap bounds what streaming would keep; a body already in memory costs nothing more.
    let body = ReplayBody::new(Full::new(Bytes::from(vec![7u8; 100])), 10);
    assert!(body.is_whole() && body.is_replayable());
    assert_eq!(body.size_hint().exact(), Some(100));
    let copy = body.clone();
    assert_eq!(read_all(body).await.unwrap().0, vec![7u8; 100]);
    assert_eq!(read_all(copy).await.unwrap().0, vec![7u8; 100]);
}

/// A streamed body that announces its length, as one read from a file of known size does.
struct Announced<B> {
    inner: B,
    length: u64,
}

impl<B: Body + Unpin> Body for Announced<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.length)
    }
}

/// A streamed body announced at 100 bytes, over a cap of 10, whose first 60 bytes are there
/// when the request is made if `chunk_ready` (the peek takes them) or come after: either way
/// it is not whole and not kept, and its first reader gets all of it.
async fn announced_over_the_cap(chunk_ready: bool) {
    let (tx, stream) = channel_body();
    if chunk_ready {
        tx.unbounded_send(data(&[7u8; 60]))
            .expect("the body is still open");
    }
    let body = ReplayBody::new(
        Announced {
            inner: stream,
            length: 100,
        },
        10,
    );
    assert!(!body.is_whole() && !body.is_replayable());
    assert_eq!(body.size_hint().exact(), Some(100));
    if !chunk_ready {
        tx.unbounded_send(data(&[7u8; 60]))
            .expect("the body is still open");
    }
    tx.unbounded_send(data(&[7u8; 40]))
        .expect("the body is still open");
    drop(tx);
    assert_eq!(
        read_all(body).await.expect("the body is read").0,
        vec![7u8; 100]
    );
}

#[tokio::test]
async fn a_streamed_body_announced_larger_than_the_cap_is_not_buffered() {
    announced_over_the_cap(false).await;
}

#[tokio::test]
async fn a_streamed_body_announced_larger_than_the_cap_with_a_chunk_ready_is_not_buffered() {
    announced_over_the_cap(true).await;
}

#[tokio::test]
async fn a_first_chunk_larger_than_the_cap_still_reaches_the_first_reader() {
    // A stream that is ready at once with a chunk over the cap, and more to come.
    let stream = futures::stream::iter([data(b"0123456789abcdef"), data(b"!")]);
    let body = ReplayBody::new(StreamBody::new(stream), 4);
    assert!(!body.is_replayable());
    assert_eq!(read_all(body).await.unwrap().0, "0123456789abcdef!");
}

#[tokio::test]
async fn a_failing_body_gives_its_error_to_the_reader_and_is_not_replayable() {
    let (tx, stream) = channel_body();
    let body = ReplayBody::new(stream, 1024);
    let copy = body.clone();
    tx.unbounded_send(data(b"part")).unwrap();
    tx.unbounded_send(Err(io::Error::other("disk gone")))
        .unwrap();
    let error = read_all(body).await.unwrap_err();
    assert_eq!(error.to_string(), "disk gone");
    assert!(!copy.is_replayable());
    // A copy read anyway fails rather than sending a truncated body.
    let error = read_all(copy).await.unwrap_err();
    assert!(error.is::<seawall_retry::NotReplayable>(), "{error}");
    drop(tx);
}

#[tokio::test]
async fn an_empty_body_is_whole_and_empty() {
    let body = ReplayBody::new(http_body_util::Empty::<Bytes>::new(), 0);
    assert!(body.is_whole() && body.is_end_stream());
    assert_eq!(read_all(body).await.unwrap().0, "");
}
