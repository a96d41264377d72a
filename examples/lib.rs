//! Support for the seawall examples: an upstream served by hyper on loopback, a seeded chaos
//! upstream that injects faults, the demo's flaky upstream (over HTTP or HTTPS), a connection
//! that fails once the request is sent, and the pieces of a server-side limiter for axum.
//!
//! The examples and the cross-crate tests use it to stand up real servers on 127.0.0.1.

pub mod chaos;
pub mod fault;
pub mod flaky;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A hyper server on a free loopback port, stopped when dropped.
#[derive(Debug)]
pub struct Upstream {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Upstream {
    /// Serves `handler` over HTTP/1 on `127.0.0.1` at a free port.
    pub async fn start<F, Fut>(handler: F) -> std::io::Result<Self>
    where
        F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let handler = handler.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let response = handler(request);
                        async move { Ok::<_, Infallible>(response.await) }
                    });
                    // A client that hangs up mid-exchange is not the server's failure.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { addr, task })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A response with `status`, the given headers and a text body.
pub fn respond(status: u16, headers: &[(&str, &str)], body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::try_from(*name),
            http::HeaderValue::try_from(*value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

/// A request's `x-api-key` header as a rate-limit key, so that each caller has its own quota
/// (callers without one share the empty key).
pub fn api_key(head: &seawall_core::RequestHead<'_>) -> Vec<u8> {
    head.headers
        .get("x-api-key")
        .map(|key| key.as_bytes().to_vec())
        .unwrap_or_default()
}

/// A server-side limiter's refusal as the answer a well-behaved client obeys (`429` with
/// `Retry-After` and `RateLimit`), for axum's `HandleErrorLayer`.
pub async fn refuse(
    error: seawall_rate_limit::RateLimitError<Infallible>,
) -> Response<axum::body::Body> {
    match error {
        seawall_rate_limit::RateLimitError::Rejected(rejected) => {
            rejected.to_response(axum::body::Body::empty())
        }
        seawall_rate_limit::RateLimitError::Inner(never) => match never {},
    }
}
