//! A `Client` presenting a client certificate, through a whole rustls configuration given to
//! its builder, to a TLS server on 127.0.0.1 that requires one (mutual TLS). The authority,
//! the server's certificate and the client's are made by the test.

#![cfg(feature = "rustls")]
#![allow(
    clippy::unwrap_used,
    reason = "a test reports a broken fixture by panicking"
)]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use seawall::rustls;
use seawall::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// An authority, and a certificate it issued with its key.
struct Pki {
    authority: CertificateDer<'static>,
    authority_pem: String,
    server: (CertificateDer<'static>, PrivateKeyDer<'static>),
    client: (CertificateDer<'static>, PrivateKeyDer<'static>),
}

fn pki() -> Pki {
    let mut authority = CertificateParams::new(Vec::<String>::new()).unwrap();
    authority.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    authority
        .distinguished_name
        .push(DnType::CommonName, "seawall test authority");
    let authority_key = KeyPair::generate().unwrap();
    let authority_certificate = authority.self_signed(&authority_key).unwrap();
    let issuer = Issuer::new(authority, authority_key);
    let issue = |names: Vec<String>, purpose: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "seawall test");
        params.extended_key_usages = vec![purpose];
        let certificate = params.signed_by(&key, &issuer).unwrap();
        (
            certificate.der().clone(),
            PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
    };
    Pki {
        authority: authority_certificate.der().clone(),
        authority_pem: authority_certificate.pem(),
        server: issue(
            vec!["localhost".to_owned()],
            ExtendedKeyUsagePurpose::ServerAuth,
        ),
        client: issue(Vec::new(), ExtendedKeyUsagePurpose::ClientAuth),
    }
}

/// A server that requires a client certificate from `pki`'s authority; returns its port and
/// how many requests it answered.
async fn serve(pki: &Pki) -> (u16, Arc<AtomicUsize>) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.authority.clone()).unwrap();
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![pki.server.0.clone()], pki.server.1.clone_key())
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let answered = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&answered);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                // A client without a certificate is refused in the handshake.
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |_request: Request<Incoming>| {
                    count.fetch_add(1, Ordering::SeqCst);
                    async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (port, answered)
}

fn stack() -> seawall::Stack {
    seawall::stack()
        .retry(|retry| retry.max_attempts(1))
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_client_certificate_in_the_tls_config_is_presented_and_accepted() {
    let pki = pki();
    let (port, answered) = serve(&pki).await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.authority.clone()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![pki.client.0.clone()], pki.client.1.clone_key())
        .unwrap();
    let api = stack()
        .client_builder(&format!("https://localhost:{port}/v1"))
        .tls_config(tls)
        .build()
        .unwrap();

    let response = api.get("items").send().await.unwrap();

    assert_eq!(response.status(), 200);
    // The configuration came without ALPN; the client offered HTTP/2 all the same.
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(answered.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn without_a_client_certificate_the_server_answers_nothing() {
    let pki = pki();
    let (port, answered) = serve(&pki).await;
    let api = stack()
        .client_builder(&format!("https://localhost:{port}/v1"))
        .add_root_certificate(&pki.authority_pem)
        .build()
        .unwrap();

    let error = api.get("items").send().await.unwrap_err();

    assert!(error.stack_error().is_some(), "{error:?}");
    assert!(!error.is_rejected() && !error.is_timeout(), "{error:?}");
    assert_eq!(answered.load(Ordering::SeqCst), 0);
}
