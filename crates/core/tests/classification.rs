//! Classification by the default rules of DESIGN section 3, for statuses and for real errors
//! from hyper-util, tower's timeout and std::io, bare and boxed.

use std::error::Error;
use std::fmt;
use std::future::pending;
use std::io;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use seawall_core::{Classify, FailureKind, HttpClassifier, Outcome, classify_error};
use seawall_examples::fault::FaultAfterSend;
use tokio::net::TcpListener;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

fn response(status: u16, retry_after: bool) -> Response<()> {
    let mut builder = Response::builder().status(status);
    if retry_after {
        builder = builder.header("retry-after", "1");
    }
    builder.body(()).expect("valid response")
}

#[test]
fn statuses_follow_the_default_rules() {
    use FailureKind::*;
    let table = [
        (100, false, Outcome::Success),
        (200, false, Outcome::Success),
        (204, false, Outcome::Success),
        (301, false, Outcome::Success),
        (304, false, Outcome::Success),
        (400, false, Outcome::Success),
        (401, false, Outcome::Success),
        (404, false, Outcome::Success),
        (409, false, Outcome::Success),
        (429, false, Outcome::Failure(Throttled)),
        (429, true, Outcome::Failure(Throttled)),
        (500, false, Outcome::Failure(ServerError)),
        (502, false, Outcome::Failure(ServerError)),
        (503, false, Outcome::Failure(ServerError)),
        (503, true, Outcome::Failure(Throttled)),
        (504, false, Outcome::Failure(ServerError)),
        (599, false, Outcome::Failure(ServerError)),
    ];
    for (status, retry_after, expected) in table {
        let result: Result<_, io::Error> = Ok(response(status, retry_after));
        assert_eq!(
            HttpClassifier.classify(&result),
            expected,
            "{status} retry-after={retry_after}"
        );
    }
}

#[test]
fn io_error_kinds() {
    use FailureKind::*;
    let table = [
        (io::ErrorKind::ConnectionRefused, Connect),
        (io::ErrorKind::AddrNotAvailable, Connect),
        (io::ErrorKind::HostUnreachable, Connect),
        (io::ErrorKind::NetworkUnreachable, Connect),
        (io::ErrorKind::TimedOut, Timeout),
        (io::ErrorKind::ConnectionReset, Transport),
        (io::ErrorKind::ConnectionAborted, Transport),
        (io::ErrorKind::BrokenPipe, Transport),
        (io::ErrorKind::UnexpectedEof, Transport),
    ];
    for (kind, expected) in table {
        assert_eq!(classify_error(&io::Error::from(kind)), expected, "{kind:?}");
        let boxed: BoxError = Box::new(io::Error::from(kind));
        assert_eq!(classify_error(&boxed), expected, "boxed {kind:?}");
    }
}

/// A user's own error type that wraps a cause, as an application's client wrapper might.
#[derive(Debug)]
struct Wrapped(BoxError);

impl fmt::Display for Wrapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("wrapped")
    }
}

impl seawall_core::ClassifyError for Wrapped {
    fn failure_kind(&self) -> FailureKind {
        seawall_core::classify_error_chain(self)
    }
}

impl Error for Wrapped {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(self.0.as_ref())
    }
}

#[test]
fn chains_are_walked() {
    let timeout_in_io: BoxError = Box::new(io::Error::other(tower::timeout::error::Elapsed::new()));
    assert_eq!(classify_error(&timeout_in_io), FailureKind::Timeout);

    let wrapped: BoxError = Box::new(Wrapped(Box::new(io::Error::from(
        io::ErrorKind::ConnectionReset,
    ))));
    assert_eq!(classify_error(&wrapped), FailureKind::Transport);
    // A user's own error type, classified through its one-line `ClassifyError` impl.
    let own = Wrapped(Box::new(tower::timeout::error::Elapsed::new()));
    assert_eq!(
        HttpClassifier.classify(&Err::<Response<()>, _>(own)),
        Outcome::Failure(FailureKind::Timeout)
    );

    // A chain with nothing known in it is `Other`.
    let text: BoxError = "something odd".into();
    assert_eq!(classify_error(&text), FailureKind::Other);
    let odd: BoxError = Box::new(Wrapped("odd".into()));
    assert_eq!(classify_error(&odd), FailureKind::Other);
}

fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

#[tokio::test]
async fn real_connect_error_to_a_closed_port() {
    // Bind then drop, so the port is free and nothing listens on it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let uri: http::Uri = format!("http://{closed}/").parse().expect("uri");

    let result = client().get(uri.clone()).await;
    let error = result.as_ref().expect_err("nothing listens there");
    assert!(error.is_connect());
    assert_eq!(
        HttpClassifier.classify(&result),
        Outcome::Failure(FailureKind::Connect)
    );
    assert!(FailureKind::Connect.never_sent());

    // The same error after a tower layer boxed it.
    let mut service = ServiceBuilder::new()
        .map_err(BoxError::from)
        .service(client());
    let boxed = service
        .ready()
        .await
        .expect("ready")
        .call(http::Request::get(uri).body(Empty::new()).expect("request"))
        .await;
    assert_eq!(
        HttpClassifier.classify(&boxed),
        Outcome::Failure(FailureKind::Connect)
    );
}

#[tokio::test]
async fn real_reset_is_a_transport_failure() {
    // An upstream that accepts the connection and closes it without answering.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        if let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    let result = client()
        .get(format!("http://{addr}/").parse().expect("uri"))
        .await;
    let error = result.as_ref().expect_err("the upstream hung up");
    assert!(!error.is_connect());
    assert_eq!(
        HttpClassifier.classify(&result),
        Outcome::Failure(FailureKind::Transport)
    );
    server.await.expect("server task");
}

#[tokio::test(start_paused = true)]
async fn real_attempt_timeout() {
    // An upstream that accepts and never answers.
    let upstream = seawall_examples::Upstream::start(|_req| pending())
        .await
        .expect("upstream");
    let mut service = ServiceBuilder::new()
        .timeout(Duration::from_secs(30))
        .service(client());
    let started = tokio::time::Instant::now();
    let result = service
        .ready()
        .await
        .expect("ready")
        .call(
            http::Request::get(upstream.url("/"))
                .body(Empty::new())
                .expect("request"),
        )
        .await;
    assert_eq!(started.elapsed(), Duration::from_secs(30));
    assert_eq!(
        HttpClassifier.classify(&result),
        Outcome::Failure(FailureKind::Timeout)
    );
}

#[test]
fn closures_classify_too() {
    let only_404_fails = |result: &Result<Response<()>, io::Error>| match result {
        Ok(r) if r.status() == StatusCode::NOT_FOUND => Outcome::Failure(FailureKind::Other),
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Ignored,
    };
    assert_eq!(
        only_404_fails.classify(&Ok(response(404, false))),
        Outcome::Failure(FailureKind::Other)
    );
    assert_eq!(
        only_404_fails.classify(&Ok(response(500, false))),
        Outcome::Success
    );
}

#[test]
#[cfg(feature = "tower-http")]
fn tower_http_classifier_adapter() {
    use seawall_core::TowerHttpClassifier;
    use tower_http::classify::ServerErrorsAsFailures;
    let classifier = TowerHttpClassifier(ServerErrorsAsFailures::new());
    let ok: Result<_, io::Error> = Ok(response(404, false));
    assert_eq!(classifier.classify(&ok), Outcome::Success);
    let failed: Result<_, io::Error> = Ok(response(502, false));
    assert_eq!(
        classifier.classify(&failed),
        Outcome::Failure(FailureKind::ServerError)
    );
    let throttled: Result<_, io::Error> = Ok(response(503, true));
    assert_eq!(
        classifier.classify(&throttled),
        Outcome::Failure(FailureKind::Throttled)
    );
    let error: Result<Response<()>, io::Error> = Err(io::ErrorKind::TimedOut.into());
    assert_eq!(
        classifier.classify(&error),
        Outcome::Failure(FailureKind::Timeout)
    );
    // tower-http treats 429 as fine; seawall's adapter follows the plugged-in classifier.
    let too_many: Result<_, io::Error> = Ok(response(429, false));
    assert_eq!(classifier.classify(&too_many), Outcome::Success);
}

/// hyper-util's client over connections that fail with `fault` once the request is sent.
fn client_failing_after_send(
    fault: io::ErrorKind,
) -> Client<
    impl hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
    Empty<Bytes>,
> {
    Client::builder(TokioExecutor::new()).build(FaultAfterSend::connector(fault))
}

#[tokio::test]
async fn io_kinds_that_read_as_connect_are_transport_once_the_request_was_sent() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    let received = Arc::new(AtomicU32::new(0));
    let upstream = seawall_examples::Upstream::start({
        let received = Arc::clone(&received);
        move |_req| {
            received.fetch_add(1, Ordering::SeqCst);
            async { seawall_examples::respond(200, &[], "done") }
        }
    })
    .await
    .expect("upstream");

    for (n, fault) in [
        io::ErrorKind::HostUnreachable,
        io::ErrorKind::NotConnected,
        io::ErrorKind::NetworkUnreachable,
        io::ErrorKind::ConnectionRefused,
        io::ErrorKind::AddrNotAvailable,
    ]
    .into_iter()
    .enumerate()
    {
        let result = client_failing_after_send(fault)
            .get(upstream.url("/").parse().expect("uri"))
            .await;
        let error = result.as_ref().expect_err("the connection failed");
        assert!(!error.is_connect(), "{fault:?}: {error:?}");
        // The server did read the request: it was sent.
        assert_eq!(received.load(Ordering::SeqCst), n as u32 + 1, "{fault:?}");
        assert_eq!(
            HttpClassifier.classify(&result),
            Outcome::Failure(FailureKind::Transport),
            "{fault:?}: {error:?}"
        );
        // The same error after a tower layer boxed it.
        let boxed: Result<Response<hyper::body::Incoming>, BoxError> =
            result.map_err(BoxError::from);
        assert_eq!(
            HttpClassifier.classify(&boxed),
            Outcome::Failure(FailureKind::Transport),
            "boxed {fault:?}"
        );
    }
}

#[tokio::test]
async fn io_kinds_that_read_as_connect_are_transport_under_a_hyper_connection_error() {
    // hyper's own connection API: a hyper::Error is raised only on an established connection.
    let upstream = seawall_examples::Upstream::start(|_req| async {
        seawall_examples::respond(200, &[], "done")
    })
    .await
    .expect("upstream");
    let stream = tokio::net::TcpStream::connect(upstream.addr())
        .await
        .expect("connect");
    let io = hyper_util::rt::TokioIo::new(FaultAfterSend::new(stream, io::ErrorKind::NotConnected));
    let (mut sender, connection) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(io)
        .await
        .expect("handshake");
    let driver = tokio::spawn(connection);
    let result = sender
        .send_request(
            http::Request::get("/")
                .header("host", "127.0.0.1")
                .body(Empty::new())
                .expect("request"),
        )
        .await;
    let error = result.as_ref().expect_err("the connection failed");
    assert_eq!(
        error
            .source()
            .and_then(|s| s.downcast_ref::<io::Error>())
            .map(io::Error::kind),
        Some(io::ErrorKind::NotConnected),
        "{error:?}"
    );
    assert_eq!(
        HttpClassifier.classify(&result),
        Outcome::Failure(FailureKind::Transport),
        "{error:?}"
    );
    let _ = driver.await;
}
