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
use http::Response;
use http_body_util::Full;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use seawall::rustls;
use seawall::rustls::pki_types::{CertificateDer, PrivateKeyDer};

mod support;
use support::{offer_h2, provider, serve_tls, single_attempt_stack};

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
    offer_h2(&mut config);
    let answered = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&answered);
    let server = serve_tls(config, move |_request| {
        count.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}")))) }
    })
    .await;
    (server.port, answered)
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
    let api = single_attempt_stack()
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
    let api = single_attempt_stack()
        .client_builder(&format!("https://localhost:{port}/v1"))
        .add_root_certificate(&pki.authority_pem)
        .build()
        .unwrap();

    let error = api.get("items").send().await.unwrap_err();

    assert!(error.stack_error().is_some(), "{error:?}");
    assert!(!error.is_rejected() && !error.is_timeout(), "{error:?}");
    assert_eq!(answered.load(Ordering::SeqCst), 0);
}
