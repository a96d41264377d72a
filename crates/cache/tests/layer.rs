//! The layer's contract with the stack: readiness, bodies, marks and figures.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "a failed setup is a failed test"
)]

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures::poll;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use seawall_cache::{CacheLayer, CacheStatus};
use seawall_core::FigureSource;
use tower::{Layer, Service, ServiceExt, service_fn};

/// An upstream that is ready only when told, and counts its calls.
#[derive(Clone, Default)]
struct Gate {
    open: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
    waiting: Arc<std::sync::Mutex<Option<Waker>>>,
}

impl Gate {
    fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
        if let Some(waker) = self.waiting.lock().unwrap().take() {
            waker.wake();
        }
    }
}

impl Service<Request<()>> for Gate {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.open.load(Ordering::SeqCst) {
            Poll::Ready(Ok(()))
        } else {
            *self.waiting.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    fn call(&mut self, _request: Request<()>) -> Self::Future {
        // tower's contract: called only after poll_ready said ready.
        assert!(self.open.load(Ordering::SeqCst), "called while not ready");
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {
            Ok(Response::builder()
                .header("cache-control", "max-age=60")
                .body(Full::new(Bytes::from_static(b"answer")))
                .unwrap())
        })
    }
}

fn get(path: &str) -> Request<()> {
    Request::get(format!("https://api.example.com{path}"))
        .body(())
        .unwrap()
}

#[tokio::test]
async fn a_fresh_hit_answers_while_the_upstream_is_not_ready() {
    let gate = Gate::default();
    gate.open();
    let layer = CacheLayer::builder().build().unwrap();
    let mut cache = layer.layer(gate.clone());
    let first = cache.clone().oneshot(get("/a")).await.unwrap();
    assert_eq!(
        first.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Miss)
    );

    gate.open.store(false, Ordering::SeqCst);
    // The cache is ready although its upstream is not, and a hit completes at once.
    assert!(matches!(
        poll!(std::future::poll_fn(|cx| cache.poll_ready(cx))),
        Poll::Ready(Ok(()))
    ));
    let mut hit = cache.call(get("/a"));
    let Poll::Ready(Ok(response)) = poll!(&mut hit) else {
        panic!("a fresh hit must answer on its first poll")
    };
    assert_eq!(
        response.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Hit)
    );

    // A miss waits for the upstream's readiness inside its future, and is answered once
    // the upstream is ready.
    let mut miss = cache.call(get("/b"));
    assert!(poll!(&mut miss).is_pending());
    assert!(poll!(&mut miss).is_pending());
    gate.open();
    let response = miss.await.unwrap();
    assert_eq!(
        response.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Miss)
    );
    assert_eq!(gate.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_streamed_body_within_the_bound_is_stored_and_one_beyond_streams_through() {
    let chunks = |n: usize| {
        let frames: Vec<Result<Frame<Bytes>, Infallible>> = (0..n)
            .map(|i| Ok(Frame::data(Bytes::from(format!("chunk{i};")))))
            .collect();
        StreamBody::new(futures::stream::iter(frames))
    };
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let upstream = service_fn(move |request: Request<()>| {
        counted.fetch_add(1, Ordering::SeqCst);
        let n = if request.uri().path() == "/small" {
            3
        } else {
            100
        };
        async move {
            Ok::<_, Infallible>(
                Response::builder()
                    .header("cache-control", "max-age=60")
                    .body(chunks(n))
                    .unwrap(),
            )
        }
    });
    let layer = CacheLayer::builder().max_body_bytes(64).build().unwrap();
    let cache = layer.layer(upstream);

    let expected_small = "chunk0;chunk1;chunk2;";
    for status in [CacheStatus::Miss, CacheStatus::Hit] {
        let response = cache.clone().oneshot(get("/small")).await.unwrap();
        assert_eq!(response.extensions().get::<CacheStatus>(), Some(&status));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, expected_small);
    }
    let expected_large: String = (0..100).map(|i| format!("chunk{i};")).collect();
    for _ in 0..2 {
        let response = cache.clone().oneshot(get("/large")).await.unwrap();
        assert_eq!(
            response.extensions().get::<CacheStatus>(),
            Some(&CacheStatus::Miss)
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, expected_large.as_bytes());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn figures_count_each_kind_of_answer() {
    let answers = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&answers);
    let upstream = service_fn(move |_request: Request<()>| {
        let n = counted.fetch_add(1, Ordering::SeqCst);
        async move {
            let response = match n {
                0 => Response::builder()
                    .header("cache-control", "max-age=10, stale-if-error=100")
                    .header("etag", "\"1\"")
                    .body(Full::new(Bytes::from_static(b"one"))),
                1 => Response::builder()
                    .status(304)
                    .header("etag", "\"1\"")
                    .body(Full::new(Bytes::new())),
                _ => Response::builder()
                    .status(500)
                    .body(Full::new(Bytes::new())),
            };
            Ok::<_, Infallible>(response.unwrap())
        }
    });
    let layer = CacheLayer::builder().build().unwrap();
    let handle = layer.handle();
    let cache = layer.layer(upstream);
    let mut seen = Vec::new();
    for wait in [0, 1, 20, 1, 30] {
        tokio::time::advance(std::time::Duration::from_secs(wait)).await;
        let response = cache.clone().oneshot(get("/x")).await.unwrap();
        seen.push(*response.extensions().get::<CacheStatus>().unwrap());
    }
    let post = Request::post("https://api.example.com/x").body(()).unwrap();
    let response = cache.clone().oneshot(post).await.unwrap();
    seen.push(*response.extensions().get::<CacheStatus>().unwrap());
    use CacheStatus::*;
    assert_eq!(seen, [Miss, Hit, Revalidated, Hit, Stale, Bypass]);

    let stats = handle.stats();
    assert_eq!(
        (
            stats.hits,
            stats.misses,
            stats.revalidations,
            stats.stale_served,
            stats.bypassed
        ),
        (2, 1, 1, 1, 1)
    );
    assert_eq!(stats.stored, 2);
    assert!(stats.bytes_held.unwrap() > 0);

    let mut names = Vec::new();
    handle.figures(&mut |figure| names.push((figure.name, figure.value)));
    assert!(names.contains(&("seawall_cache_hits", 2.0)));
    assert!(names.contains(&("seawall_cache_revalidations", 1.0)));
    assert!(names.contains(&("seawall_cache_stale_served", 1.0)));
    assert!(names.iter().any(|(name, _)| *name == "seawall_cache_bytes"));
}

#[tokio::test]
async fn a_request_dropped_while_its_body_is_buffered_stores_nothing_and_holds_nothing() {
    // The first answer's body gives one chunk and then never ends; the token it holds shows
    // whether it was released.
    let token = Arc::new(());
    let calls = Arc::new(AtomicUsize::new(0));
    let (counted, held) = (Arc::clone(&calls), Arc::clone(&token));
    let upstream = service_fn(move |_request: Request<()>| {
        let call = counted.fetch_add(1, Ordering::SeqCst);
        let held = Arc::clone(&held);
        async move {
            let first = futures::stream::iter([Ok::<_, Infallible>(Frame::data(
                Bytes::from_static(b"part"),
            ))]);
            let body = if call == 0 {
                let hang = futures::stream::once(async move {
                    let _held = held;
                    std::future::pending::<Result<Frame<Bytes>, Infallible>>().await
                });
                http_body_util::combinators::UnsyncBoxBody::new(StreamBody::new(
                    futures::StreamExt::chain(first, hang),
                ))
            } else {
                drop(held);
                http_body_util::combinators::UnsyncBoxBody::new(StreamBody::new(first))
            };
            Ok::<_, Infallible>(
                Response::builder()
                    .header("cache-control", "max-age=60")
                    .body(body)
                    .unwrap(),
            )
        }
    });
    let layer = CacheLayer::builder().build().unwrap();
    let handle = layer.handle();
    let mut cache = layer.layer(upstream);

    // The token is held here and by the upstream's closure until a call's body takes one.
    let at_rest = Arc::strong_count(&token);
    let mut first = Box::pin(cache.call(get("/slow")));
    assert!(poll!(&mut first).is_pending());
    assert_eq!(
        Arc::strong_count(&token),
        at_rest + 1,
        "the body is being buffered"
    );
    drop(first);
    assert_eq!(
        Arc::strong_count(&token),
        at_rest,
        "the dropped request released its body"
    );

    let response = cache.clone().oneshot(get("/slow")).await.unwrap();
    assert_eq!(
        response.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Miss)
    );
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "part"
    );
    let response = cache.oneshot(get("/slow")).await.unwrap();
    assert_eq!(
        response.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Hit)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(handle.stats().stored, 1);
}
