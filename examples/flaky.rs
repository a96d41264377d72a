//! The demo's embedded upstream: a flaky API on loopback, over plain HTTP or HTTPS.
//!
//! Its own quota of 50 requests/s (burst 10) is answered with 429 and `Retry-After` beyond
//! it; of the requests within it, 10 % are answered 503, 2 % after `slow_for`, 1 % have their
//! connection dropped before an answer. The draws are seeded: every run is the same.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use seawall::rustls;
use seawall_rate_limit::Quota;
use seawall_rate_limit::gcra::GcraCells;
use tokio::net::TcpListener;

/// The embedded flaky upstream, and how many 429s it has sent.
#[derive(Debug)]
pub struct Flaky {
    /// `http://127.0.0.1:PORT/items`, or `https://` when served over TLS.
    pub url: String,
    /// The 429s sent so far.
    pub throttled: Arc<AtomicU64>,
    /// The requests it has received so far, answered or not.
    pub requests: Arc<AtomicU64>,
}

/// A seeded draw in `0..100` for the `n`-th request (SplitMix64): the same run every time.
///
/// Kept as its own sequence rather than `seawall::retry::Rng`: CI's check that the stack
/// recovers every request was measured against this one.
fn percent(n: u64) -> u64 {
    let mut z = n.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) % 100
}

/// Why the upstream dropped a connection: the answer it never sent.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by the flaky upstream")
    }
}

impl std::error::Error for Dropped {}

/// A TLS configuration for a server on loopback: a certificate made now for `localhost` and
/// `127.0.0.1`, HTTP/1.1 by ALPN. Returns the configuration and the certificate in PEM, for a
/// client to trust.
pub fn self_signed_tls() -> Result<(Arc<rustls::ServerConfig>, String), Box<dyn std::error::Error>>
{
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    let certificate = certified.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der())?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(vec![certificate], key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(config), certified.cert.pem()))
}

/// Starts the flaky upstream on a free loopback port; its slow answers take `slow_for`. With
/// `tls`, it speaks HTTPS only.
pub async fn start(
    slow_for: Duration,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<Flaky> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}/items", listener.local_addr()?);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let quota = Quota::per_second(50)
        .and_then(|q| q.burst(10))
        .map_err(std::io::Error::other)?;
    let cells = Arc::new(GcraCells::new(1));
    let sequence = Arc::new(AtomicU64::new(0));
    let sequence_read = Arc::clone(&sequence);
    let throttled = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let counter = Arc::clone(&throttled);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (cells, sequence, counter) = (
                Arc::clone(&cells),
                Arc::clone(&sequence),
                Arc::clone(&counter),
            );
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_request: Request<Incoming>| {
                    let n = sequence.fetch_add(1, Ordering::Relaxed);
                    let now = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    let admitted = cells.try_take(&[quota], 1, now).is_ok();
                    if !admitted {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    async move {
                        let answer = |status: u16, headers: &[(&'static str, &'static str)]| {
                            let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
                            *response.status_mut() =
                                StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                            for (name, value) in headers {
                                response
                                    .headers_mut()
                                    .insert(*name, http::HeaderValue::from_static(value));
                            }
                            Ok::<_, Dropped>(response)
                        };
                        if !admitted {
                            return answer(
                                429,
                                &[("retry-after", "1"), ("ratelimit", "\"default\";r=0;t=1")],
                            );
                        }
                        match percent(n) {
                            0..10 => answer(503, &[]),
                            10..12 => {
                                tokio::time::sleep(slow_for).await;
                                answer(200, &[])
                            }
                            // Returning an error makes hyper close the connection unanswered.
                            12 => Err(Dropped),
                            // Its answers may be kept a minute: a cache in front of it spares
                            // it (and the quota) every repeat within that time.
                            _ => answer(200, &[("cache-control", "max-age=60")]),
                        }
                    }
                });
                let http = hyper::server::conn::http1::Builder::new();
                match acceptor {
                    None => {
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                    Some(acceptor) => {
                        // A client that refuses the certificate ends the handshake.
                        let Ok(stream) = acceptor.accept(stream).await else {
                            return;
                        };
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                }
            });
        }
    });
    Ok(Flaky {
        url,
        throttled,
        requests: sequence_read,
    })
}
