//! The call's timeout also bounds the reading of the body, on paused time, against a raw TCP
//! server on 127.0.0.1 that sends a head and one byte of a ten-byte body, then nothing.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::time::Duration;

use seawall::ClientErrorKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// A server whose answers stall after the head and one byte of the body.
async fn stalling_server() -> String {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request).await.unwrap();
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{")
                    .await
                    .unwrap();
                std::future::pending::<()>().await;
            });
        }
    });
    url
}

#[tokio::test(start_paused = true)]
async fn the_calls_timeout_also_ends_a_body_that_stalls() {
    let url = stalling_server().await;
    // The attempt timeout (30 s) would end it much later.
    let api = seawall::stack().build().unwrap().client(&url).unwrap();
    let start = Instant::now();

    let response = api
        .get("/items")
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let error = response.bytes().await.unwrap_err();

    assert_eq!(start.elapsed(), Duration::from_secs(3));
    assert!(
        matches!(error.kind(), ClientErrorKind::Body(_)),
        "{error:?}"
    );
    assert!(error.is_timeout(), "{error:?}");
}

#[tokio::test(start_paused = true)]
async fn without_a_call_timeout_a_stalled_body_ends_at_the_attempt_timeout() {
    let url = stalling_server().await;
    let api = seawall::stack()
        .attempt_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .client(&url)
        .unwrap();
    let start = Instant::now();

    let error = api
        .get("/items")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap_err();

    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert_eq!(
        error.failure_kind(),
        Some(seawall::core::FailureKind::Timeout)
    );
}
