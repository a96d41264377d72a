//! [`CacheLayer`] and its builder.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::HeaderName;
use seawall_core::{ConfigError, check_range};
use tower::Layer;

use crate::clock::Clock;
use crate::config::{Config, TtlRules};
use crate::handle::{CacheHandle, Stats};
use crate::memory::MemoryStore;
use crate::service::{Cache, Shared};
use crate::store::CacheStore;

/// The longest duration the builder accepts for a TTL or an allowance: a year.
const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// A tower layer that puts a private HTTP cache in front of a client; see the
/// [crate docs](crate).
///
/// Every service it builds shares one store and one set of figures.
pub struct CacheLayer<St = MemoryStore> {
    shared: Arc<Shared<St>>,
}

impl<St> Clone for CacheLayer<St> {
    fn clone(&self) -> Self {
        CacheLayer {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<St> std::fmt::Debug for CacheLayer<St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheLayer")
            .field("config", &self.shared.config)
            .finish()
    }
}

impl CacheLayer {
    /// A builder, with an in-process store of [`MemoryStore::DEFAULT_MAX_BYTES`].
    pub fn builder() -> CacheLayerBuilder {
        CacheLayerBuilder {
            store: MemoryStore::default(),
            max_body_bytes: 1 << 20,
            ttl: None,
            routes: Vec::new(),
            stale_if_error: Duration::ZERO,
            revalidation_window: Duration::from_secs(600),
            key_headers: vec![http::header::AUTHORIZATION, http::header::COOKIE],
            status_header: None,
            origin: None,
        }
    }
}

impl<St: CacheStore> CacheLayer<St> {
    /// The handle to this layer's figures.
    pub fn handle(&self) -> CacheHandle {
        CacheHandle::new(Arc::clone(&self.shared))
    }

    /// The store.
    pub fn store(&self) -> &St {
        &self.shared.store
    }
}

impl<S, St> Layer<S> for CacheLayer<St> {
    type Service = Cache<S, St>;

    fn layer(&self, inner: S) -> Cache<S, St> {
        Cache::new(inner, Arc::clone(&self.shared))
    }
}

/// Builds a [`CacheLayer`]; [`build`](Self::build) checks every setting.
#[derive(Debug)]
pub struct CacheLayerBuilder<St = MemoryStore> {
    store: St,
    max_body_bytes: usize,
    ttl: Option<Duration>,
    routes: Vec<(String, Duration)>,
    stale_if_error: Duration,
    revalidation_window: Duration,
    key_headers: Vec<HeaderName>,
    status_header: Option<HeaderName>,
    origin: Option<SystemTime>,
}

impl<St> CacheLayerBuilder<St> {
    /// Where entries are kept: a [`MemoryStore`] of another bound, a `RedisStore`
    /// (feature `redis`), or any [`CacheStore`].
    pub fn store<T: CacheStore>(self, store: T) -> CacheLayerBuilder<T> {
        CacheLayerBuilder {
            store,
            max_body_bytes: self.max_body_bytes,
            ttl: self.ttl,
            routes: self.routes,
            stale_if_error: self.stale_if_error,
            revalidation_window: self.revalidation_window,
            key_headers: self.key_headers,
            status_header: self.status_header,
            origin: self.origin,
        }
    }

    /// The largest body stored (1 byte to 1 GiB; default 1 MiB). A larger answer, or one
    /// with trailers, passes through unstored, streamed as it comes.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// How long an answer that carries no freshness information (no `Expires`, no
    /// `Cache-Control` `max-age`, `no-cache`, `no-store` or `must-revalidate`) stays fresh,
    /// for every path without a [`route_ttl`](Self::route_ttl) (up to a year; default none:
    /// such answers get the RFC 9111 heuristic, 10 % of their `Last-Modified` age, or are
    /// not reused). Applies only to GET and HEAD answers with status 200, 203, 204, 300,
    /// 301 or 308.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// As [`ttl`](Self::ttl), for the request paths starting with `prefix` (which starts
    /// with `/`); the longest matching prefix wins. A zero TTL keeps a route's header-less
    /// answers from being stored.
    pub fn route_ttl(mut self, prefix: impl Into<String>, ttl: Duration) -> Self {
        self.routes.push((prefix.into(), ttl));
        self
    }

    /// How long past its freshness a stored answer may stand in for a failed upstream (an
    /// error, such as an open breaker's refusal, or a 5xx), when the answer has no
    /// `stale-if-error` directive of its own and no `must-revalidate` or `no-cache` (up to
    /// a year; default zero: only answers that say `stale-if-error` are served stale).
    pub fn stale_if_error(mut self, allowance: Duration) -> Self {
        self.stale_if_error = allowance;
        self
    }

    /// How long past its freshness an answer with a validator (`ETag`, `Last-Modified`)
    /// is kept for revalidation with a conditional request (up to a year; default 10 min).
    pub fn revalidation_window(mut self, window: Duration) -> Self {
        self.revalidation_window = window;
        self
    }

    /// Adds a request header whose value takes part in the store key, so that answers
    /// are kept per value (default: `authorization` and `cookie`, so that each credential
    /// has its own answers even when the upstream forgets `Vary`). Values are hashed.
    pub fn key_header(mut self, name: HeaderName) -> Self {
        if !self.key_headers.contains(&name) {
            self.key_headers.push(name);
        }
        self
    }

    /// Replaces the key headers (see [`key_header`](Self::key_header)); an empty list
    /// keys answers by method and URI alone.
    pub fn key_headers(mut self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        self.key_headers = names.into_iter().collect();
        self
    }

    /// Also marks each answer with a response header of this name (such as `x-cache`),
    /// valued `HIT`, `MISS`, `REVALIDATED`, `STALE` or `BYPASS` (default: only the
    /// [`CacheStatus`](crate::CacheStatus) extension).
    pub fn status_header(mut self, name: HeaderName) -> Self {
        self.status_header = Some(name);
        self
    }

    /// The wall-clock time that tokio's clock reads when the layer is built (default: the
    /// system's). Freshness is computed from tokio's clock from then on, so a test on
    /// paused time that pins this origin is exact and repeatable.
    pub fn system_time_origin(mut self, origin: SystemTime) -> Self {
        self.origin = Some(origin);
        self
    }

    /// Checks the settings and builds the layer.
    pub fn build(self) -> Result<CacheLayer<St>, ConfigError> {
        let max_body_bytes = check_range(
            "max_body_bytes",
            self.max_body_bytes,
            1,
            1 << 30,
            "1 byte to 1 GiB",
        )?;
        if let Some(ttl) = self.ttl {
            check_range("ttl", ttl, Duration::ZERO, YEAR, "a duration up to a year")?;
        }
        let mut routes = self.routes;
        for (prefix, ttl) in &routes {
            if !prefix.starts_with('/') {
                return Err(ConfigError::new(
                    "route_ttl",
                    prefix,
                    "a path prefix starting with '/'",
                ));
            }
            check_range(
                "route_ttl",
                *ttl,
                Duration::ZERO,
                YEAR,
                "a duration up to a year",
            )?;
        }
        // Longest first, so that the first match is the most specific; the later of two
        // equal prefixes wins.
        routes.reverse();
        routes.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        routes.dedup_by(|later, earlier| later.0 == earlier.0);
        let stale_if_error = check_range(
            "stale_if_error",
            self.stale_if_error,
            Duration::ZERO,
            YEAR,
            "a duration up to a year",
        )?;
        let revalidation_window = check_range(
            "revalidation_window",
            self.revalidation_window,
            Duration::ZERO,
            YEAR,
            "a duration up to a year",
        )?;
        Ok(CacheLayer {
            shared: Arc::new(Shared {
                store: self.store,
                config: Config {
                    max_body_bytes,
                    ttl: TtlRules {
                        routes,
                        default: self.ttl,
                    },
                    stale_if_error,
                    revalidation_window,
                    key_headers: self.key_headers,
                    status_header: self.status_header,
                },
                stats: Stats::default(),
                clock: Clock::new(self.origin),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_out_of_range_name_the_field() {
        let error = CacheLayer::builder().max_body_bytes(0).build().unwrap_err();
        assert_eq!(error.field(), "max_body_bytes");
        let error = CacheLayer::builder()
            .ttl(YEAR + Duration::from_secs(1))
            .build()
            .unwrap_err();
        assert_eq!(error.field(), "ttl");
        let error = CacheLayer::builder()
            .route_ttl("items", Duration::from_secs(1))
            .build()
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid `route_ttl` = \"items\": expected a path prefix starting with '/'"
        );
        let error = CacheLayer::builder()
            .stale_if_error(YEAR * 2)
            .build()
            .unwrap_err();
        assert_eq!(error.field(), "stale_if_error");
        assert_eq!(MemoryStore::new(10).unwrap_err().field(), "max_bytes");
    }
}
