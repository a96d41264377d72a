//! TLS test servers on 127.0.0.1: a certificate for `localhost` made by the test, a rustls
//! server configuration for it, and an accept loop that serves each TLS connection with hyper
//! (HTTP/1.1 and, when the configuration offers it by ALPN, HTTP/2).

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    reason = "test fixtures: each test file uses part of them, and a broken fixture must fail the test loudly"
)]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use seawall::rustls;
use seawall::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

/// The crypto provider every test configuration uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A self-signed certificate for `localhost`.
pub struct SelfSigned {
    pub certificate: CertificateDer<'static>,
    /// The certificate in PEM, as a client is told to trust it.
    pub pem: String,
    pub key: PrivateKeyDer<'static>,
}

impl SelfSigned {
    pub fn localhost() -> Self {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        Self {
            certificate: certified.cert.der().clone(),
            pem: certified.cert.pem(),
            key: PrivateKeyDer::try_from(certified.signing_key.serialize_der()).unwrap(),
        }
    }

    /// A server configuration presenting this certificate to any client (no client auth).
    pub fn server_config(&self) -> rustls::ServerConfig {
        rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![self.certificate.clone()], self.key.clone_key())
            .unwrap()
    }
}

/// Sets `config`'s ALPN to offer HTTP/2 and HTTP/1.1.
pub fn offer_h2(config: &mut rustls::ServerConfig) {
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
}

/// A client configuration that trusts `certificate` alone and presents no certificate.
pub fn client_config_trusting(certificate: CertificateDer<'static>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certificate).unwrap();
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// A TLS server running on a free loopback port.
pub struct TlsServer {
    pub port: u16,
    /// TCP connections accepted (counted before the handshake).
    pub connections: Arc<AtomicUsize>,
}

/// Serves every TLS connection accepted with `config` by a clone of `service`, on a free port
/// of 127.0.0.1. A handshake that fails (a client that refuses the certificate, or has none
/// to give) ends that connection only.
pub async fn serve_tls<S, Fut>(config: rustls::ServerConfig, service: S) -> TlsServer
where
    S: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::clone(&connections);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            accepted.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            let service = service.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), hyper::service::service_fn(service))
                    .await;
            });
        }
    });
    TlsServer { port, connections }
}

/// A stack that makes one attempt per call (no retries).
pub fn single_attempt_stack() -> seawall::Stack {
    seawall::stack()
        .retry(|retry| retry.max_attempts(1))
        .build()
        .unwrap()
}
