//! The facade's `Client`: a base URL and typed JSON calls through the standard stack, against
//! a hyper server on 127.0.0.1, on tokio's paused clock.

#![allow(
    clippy::unwrap_used,
    reason = "a test reports a broken fixture by panicking"
)]

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use seawall::ClientErrorKind;
use seawall_examples::Upstream;
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Item {
    id: u32,
    name: String,
}

/// What the server saw of one request.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    method: String,
    path: String,
    content_type: Option<String>,
    idempotency_key: Option<String>,
    body: Bytes,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// A server that logs each request and answers with `answer(n, body)` for the n-th (from 0).
async fn server(answer: fn(usize, &Bytes) -> (u16, Bytes)) -> (Upstream, Log) {
    let log: Log = Arc::default();
    let seen = Arc::clone(&log);
    let upstream = Upstream::start(move |request: Request<Incoming>| {
        let seen = Arc::clone(&seen);
        async move {
            let (head, body) = request.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let header = |name: &str| {
                head.headers
                    .get(name)
                    .map(|value| value.to_str().unwrap().to_owned())
            };
            let n = {
                let mut seen = seen.lock().unwrap();
                seen.push(Seen {
                    method: head.method.to_string(),
                    path: head.uri.path().to_owned(),
                    content_type: header("content-type"),
                    idempotency_key: header("idempotency-key"),
                    body: body.clone(),
                });
                seen.len() - 1
            };
            let (status, reply) = answer(n, &body);
            let mut response = Response::new(Full::new(reply));
            *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
            response
        }
    })
    .await
    .unwrap();
    (upstream, log)
}

#[tokio::test(start_paused = true)]
async fn get_json_joins_the_base_url_and_decodes_the_answer() {
    let (upstream, log) =
        server(|_, _| (200, Bytes::from_static(br#"{"id":7,"name":"anchor"}"#))).await;
    let stack = seawall::stack().build().unwrap();
    let client = stack.client(&upstream.url("/v1/")).unwrap();

    let item: Item = client.get_json("items/7").await.unwrap();

    assert_eq!(
        item,
        Item {
            id: 7,
            name: "anchor".to_owned()
        }
    );
    let seen = log.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("GET", "/v1/items/7")
    );
    assert_eq!(stack.metrics().snapshot().total, 1);
}

#[tokio::test(start_paused = true)]
async fn post_json_sends_json_and_reads_json_back() {
    let (upstream, log) = server(|_, body| (201, body.clone())).await;
    let stack = seawall::stack().build().unwrap();
    let client = stack.client(&upstream.url("/v1")).unwrap();
    let item = Item {
        id: 8,
        name: "buoy".to_owned(),
    };

    let echoed: Item = client.post_json("/items", &item).await.unwrap();

    assert_eq!(echoed, item);
    let seen = log.lock().unwrap();
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].content_type.as_deref(), Some("application/json"));
    assert_eq!(seen[0].body, serde_json::to_vec(&item).unwrap());
}

#[tokio::test(start_paused = true)]
async fn an_idempotent_post_is_retried_with_the_same_body() {
    let (upstream, log) = server(|n, body| {
        if n == 0 {
            (503, Bytes::new())
        } else {
            (201, body.clone())
        }
    })
    .await;
    let stack = seawall::stack().build().unwrap();
    let client = stack.client(&upstream.url("")).unwrap();
    let item = Item {
        id: 9,
        name: "chain".to_owned(),
    };

    let echoed: Item = client
        .post_json_idempotent("/items", &item, "item-9")
        .await
        .unwrap();

    assert_eq!(echoed, item);
    let seen = log.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[1].idempotency_key.as_deref(), Some("item-9"));
}

#[tokio::test(start_paused = true)]
async fn a_failed_status_and_bad_json_are_typed_errors() {
    let (upstream, _log) = server(|n, _| match n {
        0 => (404, Bytes::from_static(b"no such item")),
        _ => (200, Bytes::from_static(b"{\"id\": \"seven\"}")),
    })
    .await;
    let stack = seawall::stack().build().unwrap();
    let client = stack.client(&upstream.url("")).unwrap();

    match client
        .get_json::<Item>("/items/7")
        .await
        .map_err(|error| error.into_kind())
    {
        Err(ClientErrorKind::Status { status, body }) => {
            assert_eq!(status, 404);
            assert_eq!(body, "no such item");
        }
        other => panic!("expected the 404, got {other:?}"),
    }
    match client
        .get_json::<Item>("/items/7")
        .await
        .map_err(|error| error.into_kind())
    {
        Err(ClientErrorKind::Decode(error)) => assert!(error.is_data(), "{error}"),
        other => panic!("expected a decoding error, got {other:?}"),
    }
}

#[test]
fn a_base_url_that_is_not_absolute_http_is_refused_by_name() {
    let stack = seawall::stack().build().unwrap();
    for bad in [
        "",
        "/v1",
        "api.example.com",
        "ftp://example.com",
        "http://",
        "http://api.example.com/v1?key=1",
        "http://api.example.com/v1#top",
    ] {
        let error = stack.client(bad).unwrap_err();
        assert_eq!(error.field(), "base_url", "{bad}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_query_only_path_joins_without_a_slash() {
    let (upstream, log) = server(|_, _| (200, Bytes::from_static(b"[]"))).await;
    let stack = seawall::stack().build().unwrap();
    let client = stack.client(&upstream.url("/v1/items")).unwrap();

    let items: Vec<Item> = client.get_json("?page=2").await.unwrap();

    assert!(items.is_empty());
    assert_eq!(log.lock().unwrap()[0].path, "/v1/items");
}

#[tokio::test(start_paused = true)]
async fn a_body_that_stalls_ends_in_an_error_at_the_attempt_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A server that sends the head and one byte of a ten-byte body, then nothing.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut request = [0u8; 1024];
        let _ = stream.read(&mut request).await.unwrap();
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{")
            .await
            .unwrap();
        std::future::pending::<()>().await;
    });
    let stack = seawall::stack()
        .attempt_timeout(std::time::Duration::from_secs(5))
        .build()
        .unwrap();
    let client = stack.client(&url).unwrap();
    let start = tokio::time::Instant::now();

    let outcome = client.get_json::<Item>("/items/1").await;

    let error = outcome.unwrap_err();
    assert!(
        matches!(error.kind(), ClientErrorKind::Body(_)),
        "{error:?}"
    );
    assert!(error.is_timeout(), "{error:?}");
    assert_eq!(start.elapsed(), std::time::Duration::from_secs(5));
}
