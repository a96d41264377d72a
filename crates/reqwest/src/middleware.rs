//! [`SeawallMiddleware`]: a tower stack over the [`Bridge`], as reqwest-middleware middleware.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::Extensions;
use reqwest::ResponseBuilderExt;
use reqwest_middleware::{Middleware, Next};
use seawall::core::KeyExtractor;
use seawall::rate_limit::RateStore;
use seawall::rate_limit::{Cost, Priority};
use seawall::{Stack, StandardService};
use tokio::sync::{mpsc, oneshot};
use tower::{Layer, Service, ServiceExt};

use crate::bridge::{Answer, AttemptSender, Bridge};

/// reqwest-middleware middleware that sends each request through a tower stack built over the
/// [`Bridge`]: every attempt the stack makes goes on down the middleware chain.
///
/// Built with [`new`](Self::new) from a [`seawall::Stack`], it shares the stack's limits,
/// breakers, retry budget and figures with every tower client built from the same stack; built
/// with [`from_layer`](Self::from_layer), it runs any tower layer (one seawall layer, or a
/// `ServiceBuilder` of several).
#[derive(Clone)]
pub struct SeawallMiddleware<S = StandardService<Bridge>> {
    service: S,
    /// Reads the stack's figures, for [`report`](Self::report).
    report: Option<Arc<dyn Fn() -> seawall::Report + Send + Sync>>,
}

impl<S> fmt::Debug for SeawallMiddleware<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeawallMiddleware").finish_non_exhaustive()
    }
}

impl<K, St, C> SeawallMiddleware<StandardService<Bridge, K, St, C>>
where
    K: KeyExtractor + Clone,
    St: RateStore,
    C: Clone + Send + Sync + 'static,
{
    /// The standard stack: metrics, retry, circuit breaker, rate limiter, attempt timeout;
    /// with whatever store, key and classifier the stack was built with.
    pub fn new(stack: &Stack<K, St, C>) -> Self {
        let metrics = stack.metrics().clone();
        Self {
            service: stack.service(Bridge),
            report: Some(Arc::new(move || metrics.report())),
        }
    }
}

impl<S> SeawallMiddleware<S> {
    /// Any tower layer over the bridge, for example one seawall layer on its own.
    pub fn from_layer<L: Layer<Bridge, Service = S>>(layer: L) -> Self {
        Self {
            service: layer.layer(Bridge),
            report: None,
        }
    }

    /// Every layer's figures now (the same as the stack's
    /// [`report`](seawall::Stack::report)); `None` for a middleware made
    /// [`from_layer`](Self::from_layer).
    pub fn report(&self) -> Option<seawall::Report> {
        self.report.as_ref().map(|report| report())
    }
}

/// One attempt on its way down the chain, and where its answer goes.
type InFlight<'a> = (
    Pin<Box<dyn Future<Output = (Answer, Extensions)> + Send + 'a>>,
    oneshot::Sender<Answer>,
);

#[async_trait::async_trait]
impl<S, B> Middleware for SeawallMiddleware<S>
where
    S: Service<http::Request<reqwest::Body>, Response = http::Response<B>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send,
    S::Error: std::error::Error + Send + Sync + 'static,
    B: http_body::Body + Send + Sync + 'static,
    B::Data: Into<Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    async fn handle(
        &self,
        request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let mut request = http::Request::<reqwest::Body>::try_from(request)?;
        copy_layer_extensions(extensions, request.extensions_mut());
        let (sender, mut attempts) = mpsc::unbounded_channel();
        request
            .extensions_mut()
            .insert(AttemptSender(sender.clone()));
        // Held to the end, so that the channel stays open (and its branch enabled) while the
        // stack works after its last attempt (a layer reading the body, say).
        let _open = sender;
        // Every attempt starts from what the caller gave; the last answered one's is kept.
        let original = extensions.clone();
        let call = self.service.clone().oneshot(request);
        tokio::pin!(call);
        let mut in_flight: Option<InFlight<'_>> = None;
        loop {
            tokio::select! {
                biased;
                outcome = &mut call => {
                    return match outcome {
                        Ok(response) => Ok(reqwest::Response::from(
                            response.map(reqwest::Body::wrap),
                        )),
                        Err(error) => Err(reqwest_middleware::Error::middleware(error)),
                    };
                }
                answered = answer(&mut in_flight), if in_flight.is_some() => {
                    let Some((_, reply)) = in_flight.take() else { continue };
                    if let Some((answer, attempt_extensions)) = answered {
                        // The last answered attempt's extensions are what later middleware
                        // wrote for this request.
                        *extensions = attempt_extensions;
                        let _ = reply.send(answer);
                    }
                }
                Some((attempt, reply)) = attempts.recv(), if in_flight.is_none() => {
                    if reply.is_closed() {
                        // The stack gave up on it before it started (its timeout fired).
                        continue;
                    }
                    let next = next.clone();
                    let mut attempt_extensions = original.clone();
                    let future = async move {
                        let answer = match reqwest::Request::try_from(attempt) {
                            Ok(attempt) => next
                                .run(attempt, &mut attempt_extensions)
                                .await
                                .map(with_url),
                            Err(error) => Err(error.into()),
                        };
                        (answer, attempt_extensions)
                    };
                    in_flight = Some((Box::pin(future), reply));
                }
            }
        }
    }
}

/// Copies the values the layers read from a request's extensions (the limiter's [`Priority`]
/// and [`Cost`]) from reqwest-middleware's extensions, where `with_extension` puts them, into
/// the request the stack sees. Idempotency needs no copy: the retry layer reads the
/// `Idempotency-Key` header, which travels with the request.
fn copy_layer_extensions(from: &Extensions, to: &mut Extensions) {
    if let Some(priority) = from.get::<Priority>() {
        to.insert(*priority);
    }
    if let Some(cost) = from.get::<Cost>() {
        to.insert(*cost);
    }
}

/// Drives the attempt in flight until it is answered (`Some`) or the stack gave up waiting for
/// it (`None`: its attempt timeout fired, or the request was dropped), whichever is first.
async fn answer(in_flight: &mut Option<InFlight<'_>>) -> Option<(Answer, Extensions)> {
    let (future, reply) = in_flight.as_mut()?;
    tokio::select! {
        answered = future => Some(answered),
        () = reply.closed() => None,
    }
}

/// A reqwest response as an `http` one, keeping its URL so that the response the caller gets
/// back says where it came from.
fn with_url(response: reqwest::Response) -> http::Response<reqwest::Body> {
    let url = response.url().clone();
    let (mut parts, body) = http::Response::<reqwest::Body>::from(response).into_parts();
    if let Ok(marker) = http::Response::builder().url(url).body(()) {
        parts.extensions.extend(marker.into_parts().0.extensions);
    }
    http::Response::from_parts(parts, body)
}
