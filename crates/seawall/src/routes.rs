//! Per-route quotas: [`RouteLimit`] sends each request to the rate limiter of the longest
//! route (path prefix) it falls under, or to the stack's own limiter.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use seawall_core::{Figure, FigureSource, KeyExtractor, KeyLabel, Labelled};
use seawall_rate_limit::{RateLimit, RateLimitError, RateLimitHandle, RateLimitLayer, RateStore};
use tower::{Layer, Service};

/// Whether `path` falls under the route `prefix`: equal to it, or below it at a segment
/// boundary (`/search` covers `/search` and `/search/7`, not `/searching`).
fn covers(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

/// A route's prefix and its rate limiter.
pub(crate) type RouteLayer<K, St> = (Arc<str>, RateLimitLayer<K, St>);

/// The rate limiters of a stack: its own, and one per route with quotas of its own.
pub struct RouteLimitLayer<K: KeyExtractor, St: RateStore> {
    default: RateLimitLayer<K, St>,
    /// Longest prefix first, so that the first that covers a path is the most specific.
    routes: Arc<[RouteLayer<K, St>]>,
}

impl<K: KeyExtractor + Clone, St: RateStore> Clone for RouteLimitLayer<K, St> {
    fn clone(&self) -> Self {
        Self {
            default: self.default.clone(),
            routes: Arc::clone(&self.routes),
        }
    }
}

impl<K: KeyExtractor + fmt::Debug, St: RateStore> fmt::Debug for RouteLimitLayer<K, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteLimitLayer")
            .field("default", &self.default)
            .field(
                "routes",
                &self.routes.iter().map(|(p, _)| p).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl<K: KeyExtractor, St: RateStore> RouteLimitLayer<K, St> {
    pub(crate) fn new(default: RateLimitLayer<K, St>, mut routes: Vec<RouteLayer<K, St>>) -> Self {
        routes.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Self {
            default,
            routes: routes.into(),
        }
    }

    /// The limiter of requests under no route.
    pub fn default_limit(&self) -> &RateLimitLayer<K, St> {
        &self.default
    }

    /// The limiter of the route `prefix`, as given to the builder.
    pub fn route(&self, prefix: &str) -> Option<&RateLimitLayer<K, St>> {
        self.routes
            .iter()
            .find(|(route, _)| &**route == prefix)
            .map(|(_, layer)| layer)
    }

    /// The limiter a request for `path` meets.
    pub fn for_path(&self, path: &str) -> &RateLimitLayer<K, St> {
        self.routes
            .iter()
            .find(|(prefix, _)| covers(prefix, path))
            .map_or(&self.default, |(_, layer)| layer)
    }

    /// The handle of the limiter of requests under no route.
    pub fn handle(&self) -> RateLimitHandle<K::Key, St> {
        self.default.handle()
    }

    /// Every limiter's figures, for the stack's metrics: the default limiter's as they are,
    /// each route's with a `route` label.
    pub(crate) fn figures(&self) -> RouteFigures<K::Key, St> {
        RouteFigures {
            default: self.default.handle(),
            routes: self
                .routes
                .iter()
                .map(|(prefix, layer)| Labelled::new("route", Arc::clone(prefix), layer.handle()))
                .collect(),
        }
    }
}

/// The figures of a stack's rate limiters: the default limiter's as they are, then each
/// route's with a `route` label (its prefix).
pub(crate) struct RouteFigures<Key, St: RateStore> {
    default: RateLimitHandle<Key, St>,
    /// Each route's limiter, its figures labelled `route` with its prefix.
    routes: Vec<Labelled<RateLimitHandle<Key, St>>>,
}

impl<Key, St> FigureSource for RouteFigures<Key, St>
where
    Key: Clone + Eq + std::hash::Hash + fmt::Debug + KeyLabel + Send + Sync + 'static,
    St: RateStore,
{
    fn figures(&self, visit: &mut dyn FnMut(Figure<'_>)) {
        self.default.figures(visit);
        for route in &self.routes {
            route.figures(visit);
        }
    }
}

impl<S: Clone, K: KeyExtractor + Clone, St: RateStore> Layer<S> for RouteLimitLayer<K, St> {
    type Service = RouteLimit<S, K, St>;

    fn layer(&self, inner: S) -> Self::Service {
        RouteLimit {
            default: self.default.layer(inner),
            routes: (!self.routes.is_empty()).then(|| Arc::clone(&self.routes)),
        }
    }
}

/// Sends each request to the rate limiter of the longest route (path prefix) that covers
/// it, or to the default one. Without routes it is the default limiter and one `None`
/// check; a routed request goes through its route's limiter over a clone of the service
/// below (readied by that limiter once admitted).
pub struct RouteLimit<S, K: KeyExtractor, St: RateStore> {
    default: RateLimit<S, K, St>,
    routes: Option<Arc<[RouteLayer<K, St>]>>,
}

impl<S: Clone, K: KeyExtractor + Clone, St: RateStore> Clone for RouteLimit<S, K, St> {
    fn clone(&self) -> Self {
        Self {
            default: self.default.clone(),
            routes: self.routes.clone(),
        }
    }
}

impl<S: fmt::Debug, K: KeyExtractor, St: RateStore> fmt::Debug for RouteLimit<S, K, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteLimit")
            .field("default", &self.default)
            .field(
                "routes",
                &self.routes.as_ref().map_or(0, |routes| routes.len()),
            )
            .finish()
    }
}

impl<S, K, St, ReqBody, ResBody> Service<Request<ReqBody>> for RouteLimit<S, K, St>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    K: KeyExtractor + Clone,
    St: RateStore,
    St::Future: Unpin,
{
    type Response = Response<ResBody>;
    type Error = RateLimitError<S::Error>;
    type Future = <RateLimit<S, K, St> as Service<Request<ReqBody>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.default.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let route = self.routes.as_ref().and_then(|routes| {
            let path = request.uri().path();
            routes
                .iter()
                .find(|(prefix, _)| covers(prefix, path))
                .map(|(_, route)| route)
        });
        // One call site for the limiter, so that the default path compiles as a plain
        // limiter's `call` would.
        let mut routed = None;
        let limiter = match route {
            Some(route) => {
                // `poll_ready` readied the default limiter's service; the route's limiter
                // readies a clone of its own, which must not wait for that one's permit.
                self.default.release_readiness();
                routed.insert(route.layer(self.default.get_ref().clone()))
            }
            None => &mut self.default,
        };
        limiter.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::covers;

    #[test]
    fn a_route_covers_its_path_and_those_below_it_only() {
        assert!(covers("/search", "/search"));
        assert!(covers("/search", "/search/7"));
        assert!(!covers("/search", "/searching"));
        assert!(!covers("/search", "/"));
        assert!(covers("/api/", "/api/items"));
        assert!(covers("/", "/anything"));
    }
}
