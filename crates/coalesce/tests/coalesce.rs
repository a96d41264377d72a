//! Coalescing end to end: a real hyper server on 127.0.0.1 counting its calls, reached
//! through hyper-util's client under the layer.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use seawall_coalesce::{Coalesce, CoalesceError, CoalesceLayer, CoalesceStats};
use seawall_examples::Upstream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tower::{Layer, Service, ServiceExt, service_fn};

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A server answering every call with its number (`x-call`) and `body`, after telling the
/// test it arrived.
async fn counting_server(body: &'static str) -> (Upstream, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let upstream = Upstream::start(move |_request| {
        let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            Response::builder()
                .header("x-call", n.to_string())
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .expect("a valid response")
        }
    })
    .await
    .expect("a server");
    (upstream, calls)
}

fn get(url: &str) -> Request<Empty<Bytes>> {
    Request::get(url)
        .body(Empty::new())
        .expect("a valid request")
}

async fn text<B>(response: Response<B>) -> String
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("a whole body")
        .to_bytes();
    String::from_utf8(bytes.to_vec()).expect("utf-8")
}

#[tokio::test]
async fn a_thousand_identical_gets_make_one_upstream_call() {
    let (upstream, calls) = counting_server("the same answer").await;
    let layer = CoalesceLayer::builder().build().expect("valid config");
    let handle = layer.handle();
    let mut client = layer.layer(http_client());

    // Every request is in flight before the first is polled: 1 leader, 999 followers.
    let mut answers = JoinSet::new();
    for _ in 0..1_000 {
        let future = client
            .ready()
            .await
            .expect("ready")
            .call(get(&upstream.url("/items/7")));
        answers.spawn(async move {
            let response = future.await.expect("an answer");
            let status = response.status();
            let call = response.headers()["x-call"].clone();
            (status, call, text(response).await)
        });
    }
    let answers = answers.join_all().await;

    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(answers.len(), 1_000);
    for (status, call, body) in &answers {
        assert_eq!(*status, StatusCode::OK);
        assert_eq!(call, "1");
        assert_eq!(body, "the same answer");
    }
    assert_eq!(
        handle.stats(),
        CoalesceStats {
            leaders: 1,
            coalesced: 999,
            not_shared: 0,
            takeovers: 0,
            in_flight: 0,
        }
    );
    assert_eq!(client.in_flight(), 0);
}

/// Two users, `a` and `b`, telling themselves apart by `header` with the default settings:
/// each user's requests share a call, the two users never do.
async fn users_told_apart_by(header: &'static str, a: &'static str, b: &'static str) {
    let (upstream, calls) = counting_server("per user").await;
    let layer = CoalesceLayer::builder().build().expect("valid config");
    let mut client = layer.layer(http_client());
    let url = upstream.url("/me");
    let with_auth = |token: &str| {
        Request::get(&url)
            .header(header, token)
            .body(Empty::new())
            .expect("a valid request")
    };

    let a1 = client.ready().await.expect("ready").call(with_auth(a));
    let b = client.ready().await.expect("ready").call(with_auth(b));
    let a2 = client.ready().await.expect("ready").call(with_auth(a));
    let (a1, b, a2) = tokio::join!(a1, b, a2);
    let (a1, b, a2) = (a1.expect("a1"), b.expect("b"), a2.expect("a2"));

    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // The two requests of user a shared one call; user b had its own.
    assert_eq!(a1.headers()["x-call"], a2.headers()["x-call"]);
    assert_ne!(a1.headers()["x-call"], b.headers()["x-call"]);
    let stats = layer.handle().stats();
    assert_eq!((stats.leaders, stats.coalesced), (2, 1));
}

#[tokio::test]
async fn different_authorization_makes_separate_calls() {
    users_told_apart_by("authorization", "Bearer a", "Bearer b").await;
}

#[tokio::test]
async fn different_cookies_make_separate_calls() {
    // Signed in with a session cookie: one user's answer (its `Set-Cookie` too) must never
    // reach another.
    users_told_apart_by("cookie", "session=a", "session=b").await;
}

/// A request for a range, or with validators, or for another virtual host is answered for
/// itself (a `206` with part of the body, a `304` with none, another site): it shares a call
/// only with requests that send the same, never with a plain one.
#[tokio::test]
async fn a_range_a_conditional_or_another_host_shares_only_with_its_like() {
    for (header, value) in [
        ("range", "bytes=0-9"),
        ("if-range", "\"v1\""),
        ("if-none-match", "\"v1\""),
        ("if-modified-since", "Sat, 05 Dec 2026 10:00:00 GMT"),
        ("host", "other.example"),
    ] {
        let (upstream, calls) = counting_server("whole").await;
        let layer = CoalesceLayer::builder().build().expect("valid config");
        let mut client = layer.layer(http_client());
        let url = upstream.url("/file");
        let own = || {
            Request::get(&url)
                .header(header, value)
                .body(Empty::new())
                .expect("a valid request")
        };
        let own1 = client.ready().await.expect("ready").call(own());
        let plain = client.ready().await.expect("ready").call(get(&url));
        let own2 = client.ready().await.expect("ready").call(own());
        let (own1, plain, own2) = tokio::join!(own1, plain, own2);
        let (own1, plain, own2) = (
            own1.expect("own1"),
            plain.expect("plain"),
            own2.expect("own2"),
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2, "{header}");
        assert_eq!(
            own1.headers()["x-call"],
            own2.headers()["x-call"],
            "{header}"
        );
        assert_ne!(
            own1.headers()["x-call"],
            plain.headers()["x-call"],
            "{header}"
        );
    }
}

#[tokio::test]
async fn a_cancelled_leader_leaves_its_followers_answered() {
    // The first call never gets an answer; the second does.
    let calls = Arc::new(AtomicU32::new(0));
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let counted = Arc::clone(&calls);
    let upstream = Upstream::start(move |_request| {
        let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
        let _ = arrived_tx.send(n);
        async move {
            if n == 1 {
                std::future::pending::<()>().await;
            }
            Response::builder()
                .header("x-call", n.to_string())
                .body(Full::new(Bytes::from_static(b"fresh")))
                .expect("a valid response")
        }
    })
    .await
    .expect("a server");
    let layer = CoalesceLayer::builder().build().expect("valid config");
    let mut client = layer.layer(http_client());
    let url = upstream.url("/slow");

    let leader = client.ready().await.expect("ready").call(get(&url));
    // The followers join at once (in `call`), then wait in tasks of their own.
    let mut followers = Vec::new();
    for _ in 0..2 {
        let future = client.ready().await.expect("ready").call(get(&url));
        followers.push(tokio::spawn(future));
    }

    // The leader's caller goes away once its call has reached the server.
    tokio::select! {
        _ = leader => panic!("the first call is never answered"),
        n = arrived.recv() => assert_eq!(n, Some(1)),
    }

    for follower in followers {
        let response = follower.await.expect("no panic").expect("an answer");
        assert_eq!(response.headers()["x-call"], "2");
        assert_eq!(text(response).await, "fresh");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        layer.handle().stats(),
        CoalesceStats {
            leaders: 2,
            coalesced: 1,
            not_shared: 0,
            takeovers: 1,
            in_flight: 0,
        }
    );
    assert_eq!(client.in_flight(), 0);
}

/// Sets its flag when dropped: the upstream call's future was dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn when_every_caller_goes_away_the_upstream_call_is_dropped() {
    let calls = Arc::new(AtomicU32::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    let upstream = service_fn({
        let calls = Arc::clone(&calls);
        let dropped = Arc::clone(&dropped);
        move |_request: Request<Empty<Bytes>>| {
            calls.fetch_add(1, Ordering::SeqCst);
            let flag = DropFlag(Arc::clone(&dropped));
            async move {
                let _flag = flag;
                std::future::pending::<Result<Response<Full<Bytes>>, Infallible>>().await
            }
        }
    });
    let layer = CoalesceLayer::builder().build().expect("valid config");
    let mut client = layer.layer(upstream);
    let request = || get("http://api.example.com/items");

    let mut leader = Box::pin(client.ready().await.expect("ready").call(request()));
    let mut followers: Vec<_> = (0..3)
        .map(|_| Box::pin(client.clone().oneshot(request())))
        .collect();
    // Everyone is waiting.
    assert!(futures::poll!(&mut leader).is_pending());
    for follower in &mut followers {
        assert!(futures::poll!(follower).is_pending());
    }
    assert_eq!(client.in_flight(), 1);
    assert!(!dropped.load(Ordering::SeqCst));

    drop(followers);
    assert!(!dropped.load(Ordering::SeqCst), "the leader still waits");
    drop(leader);

    assert!(dropped.load(Ordering::SeqCst));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(client.in_flight(), 0);
    assert_eq!(layer.handle().stats().in_flight, 0);
}

#[tokio::test]
async fn followers_of_a_leader_that_went_away_are_not_left_waiting() {
    // The leader goes first: its call is dropped, and the followers, dropped before they
    // could take over, leave nothing behind either.
    let calls = Arc::new(AtomicU32::new(0));
    let upstream = service_fn({
        let calls = Arc::clone(&calls);
        move |_request: Request<Empty<Bytes>>| {
            calls.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<Result<Response<Full<Bytes>>, Infallible>>()
        }
    });
    let layer = CoalesceLayer::builder().build().expect("valid config");
    let mut client = layer.layer(upstream);
    let request = || get("http://api.example.com/items");
    let mut leader = Box::pin(client.ready().await.expect("ready").call(request()));
    let mut follower = Box::pin(client.clone().oneshot(request()));
    assert!(futures::poll!(&mut leader).is_pending());
    assert!(futures::poll!(&mut follower).is_pending());

    drop(leader);
    assert_eq!(client.in_flight(), 0);
    // The follower, polled again, leads a new call.
    assert!(futures::poll!(&mut follower).is_pending());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(client.in_flight(), 1);
    drop(follower);
    assert_eq!(client.in_flight(), 0);
    let stats = layer.handle().stats();
    assert_eq!((stats.leaders, stats.takeovers, stats.in_flight), (2, 1, 0));
}

#[tokio::test]
async fn an_answer_above_the_bound_is_not_shared() {
    static LARGE: [u8; 2048] = [b'x'; 2048];
    let calls = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let upstream = Upstream::start(move |_request| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Response::new(Full::new(Bytes::from_static(&LARGE))) }
    })
    .await
    .expect("a server");
    let layer = CoalesceLayer::builder()
        .max_body_bytes(1024)
        .build()
        .expect("valid config");
    let mut client = layer.layer(http_client());
    let url = upstream.url("/large");

    let mut answers = JoinSet::new();
    for _ in 0..3 {
        let future = client.ready().await.expect("ready").call(get(&url));
        answers.spawn(async move { text(future.await.expect("an answer")).await });
    }
    for body in answers.join_all().await {
        assert_eq!(body.len(), 2048);
    }
    // The leader's and one each for the two followers.
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let stats = layer.handle().stats();
    assert_eq!(
        (stats.leaders, stats.coalesced, stats.not_shared),
        (1, 0, 2)
    );
}

/// A body of two chunks that declares no size, as a streamed answer.
struct Streamed(u8);

impl Body for Streamed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.0 == 0 {
            return Poll::Ready(None);
        }
        self.0 -= 1;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"chunk")))))
    }
}

#[tokio::test]
async fn a_streamed_answer_goes_to_the_leader_and_followers_call() {
    let calls = Arc::new(AtomicU32::new(0));
    let upstream = service_fn({
        let calls = Arc::clone(&calls);
        move |_request: Request<Empty<Bytes>>| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(Response::new(Streamed(2))) }
        }
    });
    let layer = CoalesceLayer::builder().build().expect("valid config");
    let mut client = layer.layer(upstream);
    let request = || get("http://api.example.com/feed");
    let leader = client.ready().await.expect("ready").call(request());
    let follower = client.ready().await.expect("ready").call(request());
    let (leader, follower) = tokio::join!(leader, follower);
    let (leader, follower) = (leader.expect("leader"), follower.expect("follower"));
    assert!(!leader.body().is_shared());
    assert!(!follower.body().is_shared());
    assert_eq!(text(leader).await, "chunkchunk");
    assert_eq!(text(follower).await, "chunkchunk");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(layer.handle().stats().not_shared, 1);
}

#[tokio::test]
async fn post_passes_through() {
    let (upstream, calls) = counting_server("created").await;
    let layer = CoalesceLayer::builder().build().expect("valid config");
    let mut client = layer.layer(http_client());
    let url = upstream.url("/orders");
    let post = || {
        Request::post(&url)
            .body(Empty::new())
            .expect("a valid request")
    };

    let first = client.ready().await.expect("ready").call(post());
    let second = client.ready().await.expect("ready").call(post());
    let (first, second) = tokio::join!(first, second);
    assert_ne!(
        first.expect("first").headers()["x-call"],
        second.expect("second").headers()["x-call"]
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(layer.handle().stats(), CoalesceStats::default());
}

#[tokio::test]
async fn a_request_with_a_body_passes_through() {
    let calls = Arc::new(AtomicU32::new(0));
    let upstream = service_fn({
        let calls = Arc::clone(&calls);
        move |_request: Request<Full<Bytes>>| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok")))) }
        }
    });
    let mut client = CoalesceLayer::builder()
        .build()
        .expect("valid config")
        .layer(upstream);
    // A PUT is idempotent, but the key does not cover its body.
    let put = |body: &'static str| {
        Request::put("http://api.example.com/items/1")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .expect("a valid request")
    };
    let first = client.ready().await.expect("ready").call(put("a"));
    let second = client.ready().await.expect("ready").call(put("b"));
    let (first, second) = tokio::join!(first, second);
    first.expect("first");
    second.expect("second");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_upstream_error_is_shared() {
    let calls = Arc::new(AtomicU32::new(0));
    let upstream = service_fn({
        let calls = Arc::clone(&calls);
        move |_request: Request<Empty<Bytes>>| {
            calls.fetch_add(1, Ordering::SeqCst);
            async {
                tokio::task::yield_now().await;
                Err::<Response<Full<Bytes>>, _>(std::io::Error::other("refused"))
            }
        }
    });
    let mut client: Coalesce<_> = CoalesceLayer::builder()
        .build()
        .expect("valid config")
        .layer(upstream);
    let request = || get("http://api.example.com/items");
    let leader = client.ready().await.expect("ready").call(request());
    let follower = client.clone().oneshot(request());
    let (leader, follower) = tokio::join!(leader, follower);
    for error in [leader.expect_err("leader"), follower.expect_err("follower")] {
        let CoalesceError::Shared(source) = error else {
            panic!("expected the shared error, got {error:?}");
        };
        assert_eq!(source.to_string(), "refused");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_request_alone_gets_the_upstream_body_untouched() {
    let (upstream, calls) = counting_server("alone").await;
    let layer = CoalesceLayer::builder().build().expect("valid config");
    let mut client = layer.layer(http_client());
    let response = client
        .ready()
        .await
        .expect("ready")
        .call(get(&upstream.url("/one")))
        .await
        .expect("an answer");
    assert!(!response.body().is_shared());
    assert_eq!(text(response).await, "alone");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let stats = layer.handle().stats();
    assert_eq!((stats.leaders, stats.coalesced, stats.in_flight), (1, 0, 0));
    // And the next identical request makes a call of its own.
    let response = client
        .ready()
        .await
        .expect("ready")
        .call(get(&upstream.url("/one")))
        .await
        .expect("an answer");
    assert_eq!(response.headers()["x-call"], "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_requests_on_two_threads_all_end_and_leave_nothing_behind() {
    // Leaders land while others join, on two threads at once: every request must end, each
    // upstream call must be a leader's, and no key may stay in flight.
    let calls = Arc::new(AtomicU32::new(0));
    let upstream = service_fn({
        let calls = Arc::clone(&calls);
        move |_request: Request<Empty<Bytes>>| {
            calls.fetch_add(1, Ordering::SeqCst);
            async {
                tokio::task::yield_now().await;
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
            }
        }
    });
    let layer = CoalesceLayer::builder().build().expect("valid config");
    let client = layer.layer(upstream);
    let mut answers = JoinSet::new();
    for i in 0..4_000u32 {
        let client = client.clone();
        // Eight keys, so that flights of one key start and end many times.
        let url = format!("http://api.example.com/items/{}", i % 8);
        answers
            .spawn(async move { text(client.oneshot(get(&url)).await.expect("an answer")).await });
    }
    for body in answers.join_all().await {
        assert_eq!(body, "ok");
    }
    let stats = layer.handle().stats();
    assert_eq!(u64::from(calls.load(Ordering::SeqCst)), stats.leaders);
    assert_eq!(stats.leaders + stats.coalesced, 4_000);
    assert_eq!(
        (stats.not_shared, stats.takeovers, stats.in_flight),
        (0, 0, 0)
    );
    assert_eq!(client.in_flight(), 0);
}

/// A body that declares at most `declared` bytes, then sends `chunks`, then fails if asked.
struct Lying {
    declared: u64,
    chunks: std::collections::VecDeque<&'static str>,
    fail_at_end: bool,
}

impl Body for Lying {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if let Some(chunk) = self.chunks.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(chunk.as_bytes())))));
        }
        if std::mem::take(&mut self.fail_at_end) {
            return Poll::Ready(Some(Err(std::io::Error::other("connection reset"))));
        }
        Poll::Ready(None)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let mut hint = http_body::SizeHint::new();
        hint.set_upper(self.declared);
        hint
    }
}

/// A leader and one follower over an upstream answering `body()` to every call.
async fn leader_and_follower(
    body: impl Fn() -> Lying + Clone + Send + Sync + 'static,
) -> (Vec<Result<Bytes, String>>, u32, CoalesceStats) {
    let calls = Arc::new(AtomicU32::new(0));
    let upstream = service_fn({
        let calls = Arc::clone(&calls);
        move |_request: Request<Empty<Bytes>>| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            let body = body.clone();
            async move {
                // Only the leader's answer misbehaves; the follower's own call is clean.
                let response = if n == 0 {
                    body()
                } else {
                    Lying {
                        declared: 5,
                        chunks: ["clean"].into(),
                        fail_at_end: false,
                    }
                };
                Ok::<_, Infallible>(Response::new(response))
            }
        }
    });
    let layer = CoalesceLayer::builder()
        .max_body_bytes(8)
        .build()
        .expect("valid config");
    let mut client = layer.layer(upstream);
    let request = || get("http://api.example.com/items");
    let leader = client.ready().await.expect("ready").call(request());
    let follower = client.ready().await.expect("ready").call(request());
    let (leader, follower) = tokio::join!(leader, follower);
    let mut bodies = Vec::new();
    for response in [leader.expect("leader"), follower.expect("follower")] {
        bodies.push(
            response
                .into_body()
                .collect()
                .await
                .map(|collected| collected.to_bytes())
                .map_err(|error| error.to_string()),
        );
    }
    (bodies, calls.load(Ordering::SeqCst), layer.handle().stats())
}

#[tokio::test]
async fn a_body_longer_than_it_declared_reaches_the_leader_whole() {
    let (bodies, calls, stats) = leader_and_follower(|| Lying {
        declared: 4,
        chunks: ["12345", "67890"].into(),
        fail_at_end: false,
    })
    .await;
    // The leader read 10 bytes past the bound of 8; it still gets all of them, and the
    // follower makes its own call.
    assert_eq!(bodies[0], Ok(Bytes::from_static(b"1234567890")));
    assert_eq!(bodies[1], Ok(Bytes::from_static(b"clean")));
    assert_eq!(calls, 2);
    assert_eq!((stats.coalesced, stats.not_shared), (0, 1));
}

#[tokio::test]
async fn a_body_that_fails_while_read_gives_the_leader_its_error() {
    let (bodies, calls, stats) = leader_and_follower(|| Lying {
        declared: 8,
        chunks: ["1234"].into(),
        fail_at_end: true,
    })
    .await;
    assert_eq!(bodies[0], Err("connection reset".to_owned()));
    assert_eq!(bodies[1], Ok(Bytes::from_static(b"clean")));
    assert_eq!(calls, 2);
    assert_eq!((stats.coalesced, stats.not_shared), (0, 1));
}

#[tokio::test]
async fn the_handle_reports_its_figures_to_exporters() {
    use seawall_core::{FigureKind, FigureSource};
    let (upstream, _calls) = counting_server("x").await;
    let layer = CoalesceLayer::builder().build().expect("valid config");
    let mut client = layer.layer(http_client());
    let url = upstream.url("/f");
    let first = client.ready().await.expect("ready").call(get(&url));
    let second = client.ready().await.expect("ready").call(get(&url));
    let (first, second) = tokio::join!(first, second);
    first.expect("first");
    second.expect("second");

    let mut figures = Vec::new();
    layer.handle().figures(&mut |figure| {
        figures.push((figure.name, figure.kind, figure.value));
    });
    assert_eq!(
        figures,
        [
            ("seawall_coalesce_leaders", FigureKind::Counter, 1.0),
            ("seawall_coalesce_coalesced", FigureKind::Counter, 1.0),
            ("seawall_coalesce_not_shared", FigureKind::Counter, 0.0),
            ("seawall_coalesce_takeovers", FigureKind::Counter, 0.0),
            ("seawall_coalesce_in_flight", FigureKind::Gauge, 0.0),
        ]
    );
}
