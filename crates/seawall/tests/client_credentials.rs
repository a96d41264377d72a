//! A `Client` whose base URL carries credentials: they go as Basic authentication, never in a
//! request's URI, and no `Debug` rendering or error shows them.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const SECRET: &str = "s3cret-pw";

fn stack() -> seawall::Stack {
    seawall::stack()
        .retry(|retry| retry.max_attempts(1))
        .build()
        .unwrap()
}

fn assert_redacted(what: &str, text: &str) {
    assert!(!text.contains(SECRET), "{what} shows the password: {text}");
    assert!(
        !text.contains("alice"),
        "{what} shows the user name: {text}"
    );
}

/// What the server saw of one request: its target and its `Authorization` header.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A server on a free port that answers `{}` and keeps what it saw.
async fn serve() -> (u16, Seen) {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let authorization = request
                        .headers()
                        .get(http::header::AUTHORIZATION)
                        .map(|value| value.to_str().unwrap().to_owned());
                    log.lock()
                        .unwrap()
                        .push((request.uri().to_string(), authorization));
                    async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (port, seen)
}

#[test]
fn a_client_and_its_config_errors_never_show_the_base_urls_credentials() {
    let client = stack()
        .client(&format!("http://alice:{SECRET}@127.0.0.1:8080/v1"))
        .unwrap();
    let shown = format!("{client:?}");
    assert_redacted("the client's Debug", &shown);
    assert!(shown.contains("http://127.0.0.1:8080/v1"), "{shown}");
    for base in [
        format!("http://alice:{SECRET}@127.0.0.1/v1?page=1"),
        format!("ftp://alice:{SECRET}@127.0.0.1/v1"),
        format!("alice:{SECRET}@127.0.0.1"),
        format!("http://alice:{SECRET}@/v1"),
    ] {
        let error = stack().client(&base).unwrap_err();
        assert_eq!(error.field(), "base_url");
        assert_redacted("the error", &format!("{error} {error:?}"));
    }
}

#[tokio::test]
async fn credentials_in_the_base_url_go_as_basic_auth_and_never_in_the_uri() {
    let (port, seen) = serve().await;
    let client = stack()
        .client(&format!("http://alice:{SECRET}@127.0.0.1:{port}/v1"))
        .unwrap();
    let _: serde_json::Value = client.get_json("items").await.unwrap();
    let seen = seen.lock().unwrap().clone();
    // `alice:s3cret-pw` in base64.
    assert_eq!(
        seen,
        [(
            "/v1/items".to_owned(),
            Some("Basic YWxpY2U6czNjcmV0LXB3".to_owned())
        )]
    );
}

#[tokio::test]
async fn errors_calling_through_a_base_url_with_credentials_never_show_them() {
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = stack()
        .client(&format!("http://alice:{SECRET}@127.0.0.1:{port}/v1"))
        .unwrap();
    let error = client
        .get_json::<serde_json::Value>("items")
        .await
        .unwrap_err();
    let mut text = format!("{error} {error:?}");
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(&format!(" / {cause} {cause:?}"));
        source = cause.source();
    }
    assert_redacted("the error", &text);
}

/// Without the `rustls` feature an `https://` base URL is refused by name, not sent in clear.
#[cfg(not(feature = "rustls"))]
#[test]
fn without_tls_an_https_base_url_is_refused_by_name() {
    let error = stack().client("https://api.example.com/v1").unwrap_err();
    assert_eq!(error.field(), "base_url");
    assert!(error.expected().contains("rustls"), "{error}");
}
