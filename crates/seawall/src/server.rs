//! The rate limiter in front of a server (an axum app, any tower HTTP service), limiting its
//! own callers: [`ServerRateLimitLayer`] answers refusals itself (`429` with `Retry-After`,
//! `RateLimit` and `RateLimit-Policy`; no `HandleErrorLayer`), puts `RateLimit` and
//! `RateLimit-Policy` on admitted responses too, and never obeys the app's own 429s. Callers
//! are told apart by [`ClientIp`]: the peer's address, or the forwarding headers' when the
//! peer is a trusted proxy.
//!
//! `RateLimit` on an admitted answer says how many requests the caller could send back to
//! back now (`r`) and in how many seconds its whole burst is back (`t`); it needs a store that
//! can tell without a round trip (the in-process one), and is left out otherwise.
//! `RateLimit-Policy` names each quota as its burst (`q`) over the seconds that burst takes
//! to refill (`w`).
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use seawall::server::{ClientIp, ServerRateLimitLayer};
//! use seawall::RateLimitLayer;
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let limit = ServerRateLimitLayer::new(
//!     RateLimitLayer::builder()
//!         .per_second(2)
//!         .burst(2)
//!         .fail_fast()
//!         .key_by(ClientIp::new()),
//! )?;
//! let app = limit.layer(service_fn(|_req: Request<String>| async {
//!     Ok::<_, Infallible>(Response::new(String::from("hello")))
//! }));
//! let peer: std::net::SocketAddr = "192.0.2.7:50000".parse()?;
//! let request = || {
//!     let mut request = Request::new(String::new());
//!     request.extensions_mut().insert(peer);
//!     request
//! };
//! let first = app.clone().oneshot(request()).await?;
//! assert_eq!(first.headers()["ratelimit"], "\"default\";r=1;t=1");
//! assert_eq!(first.headers()["ratelimit-policy"], "\"default\";q=2;w=1");
//! app.clone().oneshot(request()).await?;
//! let refused = app.oneshot(request()).await?;
//! assert_eq!(refused.status(), 429);
//! assert_eq!(refused.headers()["retry-after"], "1");
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use seawall_core::{ConfigError, KeyExtractor, RequestHead};
use seawall_rate_limit::{
    InMemoryStore, RateLimit, RateLimitBuilder, RateLimitError, RateLimitLayer, RateStore, Rejected,
};
use tower::{Layer, Service};

/// Whole seconds, rounded up: a caller that obeys never comes back early.
fn seconds_up(duration: Duration) -> u64 {
    duration
        .as_secs()
        .saturating_add(u64::from(duration.subsec_nanos() > 0))
}

/// The `RateLimit-Policy` value for `limit`'s quotas: each as the burst it admits back to
/// back (`q`) over the time that burst takes to refill (`w`, seconds).
fn policy_of<X: KeyExtractor, St: RateStore>(limit: &RateLimitLayer<X, St>) -> HeaderValue {
    let quotas = limit.quotas();
    let items: Vec<String> = quotas
        .iter()
        .enumerate()
        .map(|(n, quota)| {
            let name = if quotas.len() == 1 {
                String::from("default")
            } else {
                format!("q{}", n + 1)
            };
            let window = quota.interval().saturating_mul(quota.burst_size());
            format!(
                "\"{name}\";q={};w={}",
                quota.burst_size(),
                seconds_up(window).max(1)
            )
        })
        .collect();
    HeaderValue::try_from(items.join(", ")).unwrap_or(HeaderValue::from_static("\"default\""))
}

/// Makes the response a refused caller gets. The default, [`TooManyRequests`], is
/// [`Rejected::to_response`]: `429` with `Retry-After` and `RateLimit` (`503` when the queue
/// is full); the layer adds `RateLimit-Policy`.
pub trait Refuse<B> {
    /// The response for `rejected`.
    fn refuse(&self, rejected: &Rejected) -> Response<B>;
}

impl<F, B> Refuse<B> for F
where
    F: Fn(&Rejected) -> Response<B>,
{
    fn refuse(&self, rejected: &Rejected) -> Response<B> {
        self(rejected)
    }
}

/// The default refusal: [`Rejected::to_response`] with an empty body.
#[derive(Debug, Clone, Copy, Default)]
pub struct TooManyRequests;

impl<B: Default> Refuse<B> for TooManyRequests {
    fn refuse(&self, rejected: &Rejected) -> Response<B> {
        rejected.to_response(B::default())
    }
}

/// A rate limiter in front of a server. See the [module docs](self).
pub struct ServerRateLimitLayer<X: KeyExtractor, St: RateStore = InMemoryStore, H = TooManyRequests>
{
    limit: RateLimitLayer<X, St>,
    policy: HeaderValue,
    refuse: H,
}

impl<X: KeyExtractor + Clone, St: RateStore, H: Clone> Clone for ServerRateLimitLayer<X, St, H> {
    fn clone(&self) -> Self {
        Self {
            limit: self.limit.clone(),
            policy: self.policy.clone(),
            refuse: self.refuse.clone(),
        }
    }
}

impl<X: KeyExtractor + fmt::Debug, St: RateStore, H> fmt::Debug for ServerRateLimitLayer<X, St, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerRateLimitLayer")
            .field("limit", &self.limit)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl<X: KeyExtractor> ServerRateLimitLayer<X> {
    /// Builds the limiter `builder` describes for a server: the app's own answers (its 429s
    /// and `RateLimit` headers) are never obeyed as a client's limiter would. A server
    /// usually wants `fail_fast()`, so that callers over their quota are answered at once.
    pub fn new(builder: RateLimitBuilder<X>) -> Result<Self, ConfigError> {
        Ok(Self::from_layer(builder.obey_server(None).build()?))
    }
}

impl<X: KeyExtractor, St: RateStore> ServerRateLimitLayer<X, St> {
    /// As [`new`](ServerRateLimitLayer::new), with a layer built already (with
    /// `obey_server(None)`, or the app's 429s would pause its callers' keys): one on a
    /// shared store, say.
    pub fn from_layer(limit: RateLimitLayer<X, St>) -> Self {
        Self {
            policy: policy_of(&limit),
            limit,
            refuse: TooManyRequests,
        }
    }
}

impl<X: KeyExtractor, St: RateStore, H> ServerRateLimitLayer<X, St, H> {
    /// Answers refused callers with `refuse` (a function from the refusal to a response);
    /// the layer adds `RateLimit-Policy` to what it returns.
    pub fn refuse_with<H2>(self, refuse: H2) -> ServerRateLimitLayer<X, St, H2> {
        ServerRateLimitLayer {
            limit: self.limit,
            policy: self.policy,
            refuse,
        }
    }

    /// The limiter, for its figures.
    pub fn limit(&self) -> &RateLimitLayer<X, St> {
        &self.limit
    }
}

impl<S, X, St, H> Layer<S> for ServerRateLimitLayer<X, St, H>
where
    X: KeyExtractor + Clone,
    St: RateStore,
    H: Clone,
{
    type Service = ServerRateLimit<S, X, St, H>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerRateLimit {
            inner: self.limit.layer(inner),
            shared: Arc::new(Shared {
                limit: self.limit.clone(),
                policy: self.policy.clone(),
                refuse: self.refuse.clone(),
            }),
        }
    }
}

struct Shared<X: KeyExtractor, St: RateStore, H> {
    limit: RateLimitLayer<X, St>,
    policy: HeaderValue,
    refuse: H,
}

/// The service of a [`ServerRateLimitLayer`].
pub struct ServerRateLimit<S, X: KeyExtractor, St: RateStore, H> {
    inner: RateLimit<S, X, St>,
    shared: Arc<Shared<X, St, H>>,
}

impl<S: Clone, X: KeyExtractor + Clone, St: RateStore, H> Clone for ServerRateLimit<S, X, St, H> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, X: KeyExtractor, St: RateStore, H> fmt::Debug for ServerRateLimit<S, X, St, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerRateLimit")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, X, St, H, ReqBody, ResBody> Service<Request<ReqBody>> for ServerRateLimit<S, X, St, H>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    X: KeyExtractor + Clone,
    St: RateStore,
    St::Future: Unpin,
    H: Refuse<ResBody>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ServerFuture<S, ReqBody, X, St, H>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx).map_err(|error| match error {
            RateLimitError::Inner(error) => error,
            // A rate limiter's readiness only passes on the service's own.
            RateLimitError::Rejected(_) => unreachable!("readiness never refuses"),
        })
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The key again, for the headers of the answer (the limiter keeps its own to itself).
        let key = self.shared.limit_key(&request);
        ServerFuture {
            inner: self.inner.call(request),
            shared: Arc::clone(&self.shared),
            key: Some(key),
        }
    }
}

impl<X: KeyExtractor + Clone, St: RateStore, H> Shared<X, St, H> {
    fn limit_key<B>(&self, request: &Request<B>) -> X::Key {
        self.limit
            .key_extractor()
            .extract(&RequestHead::of(request))
    }
}

pin_project! {
    /// The response future of [`ServerRateLimit`].
    pub struct ServerFuture<S, B, X, St, H>
    where
        S: Service<Request<B>>,
        X: KeyExtractor,
        St: RateStore,
    {
        #[pin]
        inner: seawall_rate_limit::ResponseFuture<S, B, X::Key, St>,
        shared: Arc<Shared<X, St, H>>,
        key: Option<X::Key>,
    }
}

impl<S, B, X, St, H> fmt::Debug for ServerFuture<S, B, X, St, H>
where
    S: Service<Request<B>>,
    X: KeyExtractor,
    St: RateStore,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerFuture").finish_non_exhaustive()
    }
}

impl<S, B, X, St, H, ResBody> Future for ServerFuture<S, B, X, St, H>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    X: KeyExtractor,
    St: RateStore,
    St::Future: Unpin,
    H: Refuse<ResBody>,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let shared = &**this.shared;
        Poll::Ready(match result {
            Ok(mut response) => {
                if let Some(state) = this
                    .key
                    .take()
                    .and_then(|key| shared.limit.quota_state(&key))
                    && let Ok(value) = HeaderValue::try_from(format!(
                        "\"default\";r={};t={}",
                        state.remaining,
                        seconds_up(state.reset)
                    ))
                {
                    response.headers_mut().insert("ratelimit", value);
                }
                add_policy(response.headers_mut(), &shared.policy);
                Ok(response)
            }
            Err(RateLimitError::Rejected(rejected)) => {
                let mut response = shared.refuse.refuse(&rejected);
                add_policy(response.headers_mut(), &shared.policy);
                Ok(response)
            }
            Err(RateLimitError::Inner(error)) => Err(error),
        })
    }
}

fn add_policy(headers: &mut HeaderMap, policy: &HeaderValue) {
    headers.insert("ratelimit-policy", policy.clone());
}

/// A caller's IP address as a rate-limit key: the peer's, or, when the peer is one of the
/// trusted proxies, the client address the forwarding headers name (`Forwarded`'s `for=`,
/// else `X-Forwarded-For`), read from the right past the trusted proxies. A forwarding header
/// from any other peer is ignored: a caller cannot choose its own key by sending one.
///
/// The peer's address is read from the request's extensions: axum's
/// `ConnectInfo<SocketAddr>` (with the `axum` feature; serve the app with
/// `into_make_service_with_connect_info::<SocketAddr>()`), or a [`SocketAddr`] a server put
/// there. A request without either shares the unspecified address `0.0.0.0` with the others
/// like it.
#[derive(Debug, Clone, Default)]
pub struct ClientIp {
    trusted: Arc<[IpAddr]>,
}

impl ClientIp {
    /// Keys by the peer's address; forwarding headers are never read.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the forwarding headers of requests from these proxies' addresses.
    pub fn trusting(proxies: impl IntoIterator<Item = IpAddr>) -> Self {
        Self {
            trusted: proxies.into_iter().collect(),
        }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.contains(&ip)
    }

    /// The peer's address of a request, if a server put it in the extensions.
    fn peer(head: &RequestHead<'_>) -> Option<IpAddr> {
        #[cfg(feature = "axum")]
        if let Some(axum::extract::ConnectInfo(addr)) = head
            .extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
        {
            return Some(addr.ip());
        }
        head.extensions.get::<SocketAddr>().map(SocketAddr::ip)
    }

    /// The first untrusted address from the right of `hops` (nearest proxy last), or the
    /// leftmost if every one is trusted.
    fn client_of(&self, hops: &[IpAddr]) -> Option<IpAddr> {
        hops.iter()
            .rev()
            .find(|ip| !self.is_trusted(**ip))
            .or(hops.first())
            .copied()
    }
}

/// The addresses of `Forwarded` headers' `for=` parameters, in order (RFC 7239): quoted or
/// not, IPv6 in brackets, with or without a port. `None` if any is not an address (an
/// obfuscated identifier or `unknown`): the chain cannot be followed past it.
fn forwarded_for(headers: &HeaderMap) -> Option<Vec<IpAddr>> {
    let mut hops = Vec::new();
    for value in headers.get_all(http::header::FORWARDED) {
        for element in value.to_str().ok()?.split(',') {
            for pair in element.split(';') {
                let Some((name, value)) = pair.trim().split_once('=') else {
                    continue;
                };
                if name.trim().eq_ignore_ascii_case("for") {
                    hops.push(parse_node(value.trim().trim_matches('"'))?);
                }
            }
        }
    }
    (!hops.is_empty()).then_some(hops)
}

/// The addresses of `X-Forwarded-For` headers, in order; `None` if any is not an address.
fn x_forwarded_for(headers: &HeaderMap) -> Option<Vec<IpAddr>> {
    let mut hops = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        for item in value.to_str().ok()?.split(',') {
            hops.push(parse_node(item.trim())?);
        }
    }
    (!hops.is_empty()).then_some(hops)
}

/// An address with or without a port: `192.0.2.1`, `192.0.2.1:80`, `[2001:db8::1]:80`,
/// `2001:db8::1`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    node.strip_prefix('[')?.split_once(']')?.0.parse().ok()
}

impl KeyExtractor for ClientIp {
    type Key = IpAddr;

    fn extract(&self, head: &RequestHead<'_>) -> IpAddr {
        let unknown = IpAddr::from([0, 0, 0, 0]);
        let Some(peer) = Self::peer(head) else {
            return unknown;
        };
        if !self.is_trusted(peer) {
            return peer;
        }
        forwarded_for(head.headers)
            .or_else(|| x_forwarded_for(head.headers))
            .and_then(|hops| self.client_of(&hops))
            .unwrap_or(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_from(peer: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut request = Request::new(());
        request.extensions_mut().insert(
            peer.parse::<SocketAddr>()
                .unwrap_or(SocketAddr::from(([0; 4], 0))),
        );
        for (name, value) in headers {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::try_from(*name),
                HeaderValue::try_from(*value),
            ) {
                request.headers_mut().append(name, value);
            }
        }
        request
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or(IpAddr::from([255; 4]))
    }

    #[test]
    fn forwarding_headers_count_only_from_trusted_proxies() {
        let keys = ClientIp::trusting([ip("10.0.0.1"), ip("10.0.0.2")]);
        let key = |peer, headers: &[(&str, &str)]| keys.extract_from(&head_from(peer, headers));
        // From a trusted proxy: the first untrusted hop from the right.
        let xff = [("x-forwarded-for", "203.0.113.9, 198.51.100.4, 10.0.0.2")];
        assert_eq!(key("10.0.0.1:4000", &xff), ip("198.51.100.4"));
        let forwarded = [(
            "forwarded",
            "for=\"[2001:db8::7]:4711\";proto=https, for=10.0.0.2",
        )];
        assert_eq!(key("10.0.0.1:4000", &forwarded), ip("2001:db8::7"));
        // From anyone else: the peer, whatever the headers say.
        assert_eq!(key("192.0.2.50:4000", &xff), ip("192.0.2.50"));
        // A trusted proxy without a header, or with one that cannot be followed: the proxy.
        assert_eq!(key("10.0.0.1:4000", &[]), ip("10.0.0.1"));
        let unknown = [("forwarded", "for=unknown")];
        assert_eq!(key("10.0.0.1:4000", &unknown), ip("10.0.0.1"));
    }
}
