//! The stack over HTTPS with rustls, against a TLS server on 127.0.0.1 whose certificate is
//! made for the test. Run with `cargo test -p seawall --features rustls`.

#![cfg(feature = "rustls")]
#![allow(
    clippy::unwrap_used,
    reason = "a test reports a broken fixture by panicking"
)]

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use seawall::core::{ClassifyError, FailureKind};
use seawall::rustls;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// A TLS server for `localhost` on a free port (HTTP/1.1 and, with `h2`, HTTP/2 by ALPN), and
/// the certificate a client must trust.
async fn serve_tls() -> (u16, rustls::pki_types::CertificateDer<'static>) {
    serve_tls_offering(false).await
}

async fn serve_tls_offering(h2: bool) -> (u16, rustls::pki_types::CertificateDer<'static>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let certificate = certified.cert.der().clone();
    let key =
        rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![certificate.clone()], key)
    .unwrap();
    if h2 {
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake; not our failure.
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(|_request: Request<Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"sealed"))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (port, certificate)
}

fn get(url: &str) -> Request<Empty<Bytes>> {
    Request::get(url).body(Empty::new()).unwrap()
}

#[tokio::test]
async fn a_client_trusting_the_servers_authority_gets_its_answer() {
    let (port, certificate) = serve_tls().await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certificate).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
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
    let stack = seawall::stack()
        .retry(|retry| retry.max_attempts(1))
        .build()
        .unwrap();
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
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certificate).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
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
