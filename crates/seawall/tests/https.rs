//! The stack over HTTPS with rustls, against a TLS server on 127.0.0.1 whose certificate is
//! made for the test. Run with `cargo test -p seawall --features rustls`.

#![cfg(feature = "rustls")]
#![allow(
    clippy::unwrap_used,
    reason = "a test reports a broken fixture by panicking"
)]

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use seawall::core::{ClassifyError, FailureKind};
use seawall::rustls;
use tower::ServiceExt;

mod support;
use support::{SelfSigned, client_config_trusting, offer_h2, single_attempt_stack};

/// A TLS server for `localhost` on a free port (HTTP/1.1 and, with `h2`, HTTP/2 by ALPN), and
/// the certificate a client must trust.
async fn serve_tls() -> (u16, rustls::pki_types::CertificateDer<'static>) {
    serve_tls_offering(false).await
}

async fn serve_tls_offering(h2: bool) -> (u16, rustls::pki_types::CertificateDer<'static>) {
    let certified = SelfSigned::localhost();
    let mut config = certified.server_config();
    if h2 {
        offer_h2(&mut config);
    }
    let server = support::serve_tls(config, |_request| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"sealed"))))
    })
    .await;
    (server.port, certified.certificate)
}

fn get(url: &str) -> Request<Empty<Bytes>> {
    Request::get(url).body(Empty::new()).unwrap()
}

#[tokio::test]
async fn a_client_trusting_the_servers_authority_gets_its_answer() {
    let (port, certificate) = serve_tls().await;
    let mut tls = client_config_trusting(certificate);
    // A configuration made for another client may carry ALPN; it is replaced, not refused.
    tls.alpn_protocols = vec![b"spdy/3".to_vec()];
    let stack = seawall::stack().build().unwrap();
    let client = stack.https_client_with_tls::<Empty<Bytes>>(tls);

    let response = client
        .oneshot(get(&format!("https://localhost:{port}/")))
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "sealed"
    );
    assert_eq!(stack.metrics().snapshot().total, 1);
}

#[tokio::test]
async fn the_default_roots_refuse_a_self_signed_certificate_with_a_typed_error() {
    let (port, _certificate) = serve_tls().await;
    let stack = single_attempt_stack();
    let client = stack.https_client::<Empty<Bytes>>().unwrap();

    let error = client
        .oneshot(get(&format!("https://localhost:{port}/")))
        .await
        .unwrap_err();

    // The handshake failed while connecting: nothing was sent.
    assert_eq!(error.failure_kind(), FailureKind::Connect, "{error}");
    assert_eq!(error.attempts(), 1);
}

#[tokio::test]
async fn the_https_client_speaks_http2_when_the_server_offers_it() {
    let (port, certificate) = serve_tls_offering(true).await;
    let tls = client_config_trusting(certificate);
    let stack = seawall::stack().build().unwrap();
    let client = stack.https_client_with_tls::<Empty<Bytes>>(tls);

    let response = client
        .oneshot(get(&format!("https://localhost:{port}/")))
        .await
        .unwrap();

    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "sealed"
    );
}
