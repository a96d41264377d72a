//! [`Bridge`]: the innermost tower service of a [`SeawallMiddleware`](crate::SeawallMiddleware).
//!
//! reqwest-middleware hands each middleware the rest of the chain only for the duration of one
//! call (`Next<'_>` borrows the client), while a tower stack is built once and must own its
//! inner service. So the stack is built over this bridge, and each attempt it makes is passed
//! back, over a channel carried in the request's extensions, to the middleware call that owns
//! the rest of the chain.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use seawall_core::{ClassifyError, FailureKind, classify_error_chain};
use tokio::sync::{mpsc, oneshot};
use tower::Service;

/// One attempt's answer: the response with its URL kept, or what the rest of the chain said.
pub(crate) type Answer = Result<http::Response<reqwest::Body>, reqwest_middleware::Error>;

/// One attempt, sent by the bridge to the middleware call that made the request.
pub(crate) type Attempt = (http::Request<reqwest::Body>, oneshot::Sender<Answer>);

/// Where the bridge sends the attempts of one request; in the request's extensions.
#[derive(Clone)]
pub(crate) struct AttemptSender(pub(crate) mpsc::UnboundedSender<Attempt>);

/// The tower service at the bottom of a [`SeawallMiddleware`](crate::SeawallMiddleware)'s
/// stack: it sends each attempt on down the reqwest-middleware chain.
///
/// Only a request sent through a `SeawallMiddleware` can be answered; called any other way it
/// fails with [`BridgeError::OutsideMiddleware`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Bridge;

impl<B> Service<http::Request<B>> for Bridge
where
    B: http_body::Body + Send + Sync + 'static,
    B::Data: Into<Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<reqwest::Body>;
    type Error = BridgeError;
    type Future = BridgeFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BridgeError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<B>) -> BridgeFuture {
        // Taken out, so that the channel does not travel on down the chain with the attempt.
        let Some(sender) = request.extensions_mut().remove::<AttemptSender>() else {
            return BridgeFuture::failed(BridgeError::OutsideMiddleware);
        };
        let (reply, answer) = oneshot::channel();
        let request = request.map(body_for_reqwest);
        match sender.0.send((request, reply)) {
            Ok(()) => BridgeFuture {
                answer: Some(answer),
                error: None,
            },
            Err(_) => BridgeFuture::failed(BridgeError::Abandoned),
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An attempt's body for reqwest: whole when it is complete at once (the retry layer's copy
/// of a body it holds whole, as a JSON or form body is), so that reqwest can send it again
/// after a 307 or 308 as it does with its own bodies (a wrapped stream cannot be copied,
/// and reqwest then hands the redirect to the caller); otherwise streamed from where it is.
/// An empty body is wrapped as it is: its exact size of 0 lets the redirect copy it.
fn body_for_reqwest<B>(body: B) -> reqwest::Body
where
    B: http_body::Body + Send + Sync + 'static,
    B::Data: Into<Bytes>,
    B::Error: Into<BoxError>,
{
    if body.is_end_stream() {
        return reqwest::Body::wrap(body);
    }
    let mut rest = Box::pin(body);
    let first = match rest
        .as_mut()
        .poll_frame(&mut Context::from_waker(std::task::Waker::noop()))
    {
        Poll::Pending => None,
        Poll::Ready(None) => return reqwest::Body::from(Bytes::new()),
        Poll::Ready(Some(Err(error))) => Some(Err(error.into())),
        Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
            Ok(data) if rest.is_end_stream() => return reqwest::Body::from(data.into()),
            Ok(data) => Some(Ok(http_body::Frame::data(data.into()))),
            Err(frame) => Some(Ok(frame.map_data(Into::into))),
        },
    };
    reqwest::Body::wrap(Resumed { first, rest })
}

/// A body whose first frame was read to see whether it was whole, then the rest of it.
struct Resumed<B> {
    first: Option<Result<http_body::Frame<Bytes>, BoxError>>,
    rest: Pin<Box<B>>,
}

impl<B> http_body::Body for Resumed<B>
where
    B: http_body::Body,
    B::Data: Into<Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(first));
        }
        self.rest.as_mut().poll_frame(cx).map(|frame| {
            frame.map(|frame| {
                frame
                    .map(|frame| frame.map_data(Into::into))
                    .map_err(Into::into)
            })
        })
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let mut hint = self.rest.size_hint();
        if let Some(Ok(first)) = &self.first
            && let Some(data) = first.data_ref()
        {
            let len = data.len() as u64;
            hint.set_lower(hint.lower().saturating_add(len));
            if let Some(upper) = hint.upper() {
                hint.set_upper(upper.saturating_add(len));
            }
        }
        hint
    }
}

/// The answer to one attempt sent through the [`Bridge`].
#[derive(Debug)]
pub struct BridgeFuture {
    answer: Option<oneshot::Receiver<Answer>>,
    error: Option<BridgeError>,
}

impl BridgeFuture {
    fn failed(error: BridgeError) -> Self {
        Self {
            answer: None,
            error: Some(error),
        }
    }
}

impl Future for BridgeFuture {
    type Output = Result<http::Response<reqwest::Body>, BridgeError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(answer) = self.answer.as_mut() else {
            return Poll::Ready(Err(self.error.take().unwrap_or(BridgeError::Abandoned)));
        };
        Pin::new(answer).poll(cx).map(|answer| match answer {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => Err(BridgeError::from_chain(error)),
            Err(_) => Err(BridgeError::Abandoned),
        })
    }
}

/// Why an attempt sent through the [`Bridge`] did not get a response.
#[derive(Debug)]
pub enum BridgeError {
    /// The rest of the reqwest-middleware chain (the reqwest client, or a middleware after
    /// seawall's) failed.
    Chain(reqwest_middleware::Error),
    /// reqwest's own timeout fired. The `io::Error` (of kind `TimedOut`) wraps reqwest's error,
    /// so that the stack, which sees errors through their source chain, knows it for a timeout
    /// (reqwest's own timeout type is private).
    TimedOut(std::io::Error),
    /// The request did not come through a `SeawallMiddleware`, so there is no chain to send
    /// it on.
    OutsideMiddleware,
    /// The middleware call that made the request ended before the attempt was answered.
    Abandoned,
}

impl BridgeError {
    fn from_chain(error: reqwest_middleware::Error) -> Self {
        match &error {
            reqwest_middleware::Error::Reqwest(reqwest) if reqwest.is_timeout() => {
                BridgeError::TimedOut(std::io::Error::new(std::io::ErrorKind::TimedOut, error))
            }
            _ => BridgeError::Chain(error),
        }
    }
}

impl fmt::Display for BridgeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The cause is the source, not repeated here, so error reports print it once.
        f.write_str(match self {
            BridgeError::Chain(_) => "the rest of the middleware chain failed",
            BridgeError::TimedOut(_) => "reqwest's timeout fired",
            BridgeError::OutsideMiddleware => {
                "the request was not sent through a SeawallMiddleware"
            }
            BridgeError::Abandoned => "the middleware call ended before the attempt",
        })
    }
}

impl std::error::Error for BridgeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // reqwest-middleware's error is transparent over what it wraps: its own `source`
            // skips that error and gives the one beneath, so the chain starts at the wrapped
            // error itself (a middleware's `io::Error` that timed out, say).
            BridgeError::Chain(reqwest_middleware::Error::Middleware(error)) => {
                Some(error.as_ref())
            }
            BridgeError::Chain(reqwest_middleware::Error::Reqwest(error)) => Some(error),
            BridgeError::TimedOut(error) => Some(error),
            BridgeError::OutsideMiddleware | BridgeError::Abandoned => None,
        }
    }
}

impl ClassifyError for BridgeError {
    fn failure_kind(&self) -> FailureKind {
        match self {
            BridgeError::Chain(reqwest_middleware::Error::Reqwest(error)) => reqwest_kind(error),
            BridgeError::Chain(reqwest_middleware::Error::Middleware(error)) => {
                classify_error_chain(error.as_ref())
            }
            BridgeError::TimedOut(_) => FailureKind::Timeout,
            BridgeError::OutsideMiddleware | BridgeError::Abandoned => FailureKind::Other,
        }
    }
}

/// reqwest says what went wrong in its own terms; anything it does not name, the error chain
/// (hyper and I/O errors underneath) does.
pub(crate) fn reqwest_kind(error: &reqwest::Error) -> FailureKind {
    if error.is_timeout() {
        FailureKind::Timeout
    } else if error.is_connect() {
        FailureKind::Connect
    } else {
        match classify_error_chain(error) {
            FailureKind::Other if error.is_request() || error.is_body() => FailureKind::Transport,
            kind => kind,
        }
    }
}
