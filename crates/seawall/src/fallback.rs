//! A fallback answer when the stack refuses or fails a request (Polly's and Resilience4j's
//! fallback): [`FallbackLayer`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::request::Parts;
use http::{Request, Response};
use http_body_util::Either;
use pin_project_lite::pin_project;
use seawall_circuit_breaker::{BreakerError, CircuitOpen};
use seawall_rate_limit::{RateLimitError, Rejected};
use seawall_retry::RetryError;
use tower::{Layer, Service};

use crate::RunError;

/// Answers a request the service below refused or failed with what `fallback` makes of the
/// request's head and the error: a canned or cached answer while a breaker is open, a
/// default when the quota is spent. The function can decline by handing the error back.
///
/// Per route: the function sees the request's head (`parts.uri.path()`), so one function can
/// answer each route as it should, and decline for the rest.
///
/// The answer's body is the service's own or the fallback's ([`Either`]), so that neither is
/// boxed. The request's head (method, URI, version, headers, extensions) is copied before the
/// call for the function to see; that copy is this layer's only cost.
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::Full;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let failing = service_fn(|_req: Request<()>| async {
///     Err::<Response<Full<Bytes>>, _>(std::io::Error::other("down"))
/// });
/// let fallback = seawall::FallbackLayer::new(|parts: &http::request::Parts, error| {
///     if parts.uri.path().starts_with("/prices") {
///         Ok(Response::new(Full::new(Bytes::from_static(b"[]"))))
///     } else {
///         Err(error)
///     }
/// });
/// let client = fallback.layer(failing);
/// let response = client.clone().oneshot(Request::get("/prices").body(())?).await?;
/// assert_eq!(response.status(), 200);
/// assert!(client.oneshot(Request::get("/orders").body(())?).await.is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct FallbackLayer<F> {
    fallback: F,
}

impl<F> FallbackLayer<F> {
    /// A layer answering failed requests with `fallback(&parts, error)`: `Ok` is the answer,
    /// `Err` the error passed on.
    pub fn new(fallback: F) -> Self {
        Self { fallback }
    }
}

impl<F> fmt::Debug for FallbackLayer<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackLayer").finish_non_exhaustive()
    }
}

impl<S, F: Clone> Layer<S> for FallbackLayer<F> {
    type Service = Fallback<S, F>;

    fn layer(&self, inner: S) -> Self::Service {
        Fallback {
            inner,
            fallback: self.fallback.clone(),
        }
    }
}

/// The service of a [`FallbackLayer`].
#[derive(Clone)]
pub struct Fallback<S, F> {
    inner: S,
    fallback: F,
}

impl<S: fmt::Debug, F> fmt::Debug for Fallback<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fallback")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// A copy of a request's head, for the fallback to see after the request has gone.
fn head_of<B>(request: &Request<B>) -> Parts {
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = request.method().clone();
    parts.uri = request.uri().clone();
    parts.version = request.version();
    parts.headers = request.headers().clone();
    parts.extensions = request.extensions().clone();
    parts
}

impl<S, F, ReqBody, ResBody, FallbackBody> Service<Request<ReqBody>> for Fallback<S, F>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    F: Fn(&Parts, S::Error) -> Result<Response<FallbackBody>, S::Error> + Clone,
{
    type Response = Response<Either<ResBody, FallbackBody>>;
    type Error = S::Error;
    type Future = FallbackFuture<S::Future, F>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let head = head_of(&request);
        FallbackFuture {
            inner: self.inner.call(request),
            head: Some(head),
            fallback: self.fallback.clone(),
        }
    }
}

pin_project! {
    /// The response future of [`Fallback`].
    pub struct FallbackFuture<Fut, F> {
        #[pin]
        inner: Fut,
        head: Option<Parts>,
        fallback: F,
    }
}

impl<Fut, F> fmt::Debug for FallbackFuture<Fut, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackFuture").finish_non_exhaustive()
    }
}

impl<Fut, F, ResBody, FallbackBody, E> Future for FallbackFuture<Fut, F>
where
    Fut: Future<Output = Result<Response<ResBody>, E>>,
    F: Fn(&Parts, E) -> Result<Response<FallbackBody>, E>,
{
    type Output = Result<Response<Either<ResBody, FallbackBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        Poll::Ready(match ready!(this.inner.poll(cx)) {
            Ok(response) => Ok(response.map(Either::Left)),
            Err(error) => match this.head.take() {
                Some(head) => (this.fallback)(&head, error).map(|r| r.map(Either::Right)),
                None => Err(error),
            },
        })
    }
}

/// A refusal by one of the stack's layers: the request (or operation) was not sent.
#[derive(Debug, Clone, Copy)]
pub enum Refusal<'a> {
    /// The circuit breaker refused it.
    CircuitOpen(&'a CircuitOpen),
    /// The rate limiter refused it.
    RateLimited(&'a Rejected),
}

/// Finds the stack's refusal in its error, for a fallback or a handler to tell "not sent"
/// from "failed upstream". Implemented for the errors of [`StandardService`](crate::StandardService)
/// and of [`Stack::run`](crate::Stack::run).
pub trait Refused {
    /// The refusal, if a layer refused the request rather than the upstream failing it.
    fn refusal(&self) -> Option<Refusal<'_>>;
}

impl<E> Refused for RetryError<BreakerError<RateLimitError<E>>> {
    fn refusal(&self) -> Option<Refusal<'_>> {
        match self.inner() {
            BreakerError::Open(open) => Some(Refusal::CircuitOpen(open)),
            BreakerError::Inner(RateLimitError::Rejected(Rejected::Withdrawn(_))) => None,
            BreakerError::Inner(RateLimitError::Rejected(rejected)) => {
                Some(Refusal::RateLimited(rejected))
            }
            BreakerError::Inner(RateLimitError::Inner(_)) => None,
        }
    }
}

impl<E> Refused for RetryError<RunError<E>> {
    fn refusal(&self) -> Option<Refusal<'_>> {
        match self.inner() {
            RunError::CircuitOpen(open) => Some(Refusal::CircuitOpen(open)),
            RunError::RateLimited(rejected) => Some(Refusal::RateLimited(rejected)),
            RunError::Failed(_) => None,
        }
    }
}
