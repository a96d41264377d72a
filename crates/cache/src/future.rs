//! The response future of [`Cache`](crate::Cache).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{HeaderName, HeaderValue, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower::Service;
use tower::util::Oneshot;

use crate::body::CacheBody;
use crate::status::CacheStatus;

/// A boxed fetch from the upstream: a miss, a revalidation, or a remote store's lookup.
pub(crate) type Fetch<B, E> =
    Pin<Box<dyn Future<Output = Result<Response<CacheBody<B>>, E>> + Send + 'static>>;

pin_project! {
    /// The future of [`Cache`](crate::Cache)'s answers.
    ///
    /// A fresh hit from an in-process store is ready at once; a request the cache does not
    /// handle goes through a named future; a fetch from the upstream (a miss, a
    /// revalidation) is one boxed future, its cost small beside the network call.
    pub struct ResponseFuture<S, R, B>
    where
        S: Service<R>,
        B: Body,
    {
        #[pin]
        kind: Kind<S, R, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, R, B>
    where
        S: Service<R>,
        B: Body,
    {
        Ready { response: Option<Response<CacheBody<B>>> },
        Bypass {
            #[pin]
            call: Oneshot<S, R>,
            header: Option<HeaderName>,
        },
        Fetch { future: Fetch<B, S::Error> },
    }
}

impl<S, R, B> ResponseFuture<S, R, B>
where
    S: Service<R>,
    B: Body,
{
    pub(crate) fn ready(response: Response<CacheBody<B>>) -> Self {
        ResponseFuture {
            kind: Kind::Ready {
                response: Some(response),
            },
        }
    }

    pub(crate) fn bypass(call: Oneshot<S, R>, header: Option<HeaderName>) -> Self {
        ResponseFuture {
            kind: Kind::Bypass { call, header },
        }
    }

    pub(crate) fn fetch(future: Fetch<B, S::Error>) -> Self {
        ResponseFuture {
            kind: Kind::Fetch { future },
        }
    }
}

impl<S, R, B> Future for ResponseFuture<S, R, B>
where
    S: Service<R, Response = Response<B>>,
    B: Body,
{
    type Output = Result<Response<CacheBody<B>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Ready { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                // Polled after it completed.
                None => Poll::Pending,
            },
            KindProj::Bypass { call, header } => {
                let response = ready!(call.poll(cx))?;
                Poll::Ready(Ok(mark(
                    response.map(CacheBody::upstream),
                    CacheStatus::Bypass,
                    header.as_ref(),
                )))
            }
            KindProj::Fetch { future } => future.as_mut().poll(cx),
        }
    }
}

/// Marks an answer with how the cache gave it.
pub(crate) fn mark<B>(
    mut response: Response<B>,
    status: CacheStatus,
    header: Option<&HeaderName>,
) -> Response<B> {
    if let Some(name) = header {
        response
            .headers_mut()
            .insert(name.clone(), HeaderValue::from_static(status.as_str()));
    }
    response.extensions_mut().insert(status);
    response
}

impl<S, R, B> std::fmt::Debug for ResponseFuture<S, R, B>
where
    S: Service<R>,
    B: Body,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.kind {
            Kind::Ready { .. } => "ready",
            Kind::Bypass { .. } => "bypass",
            Kind::Fetch { .. } => "fetch",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
