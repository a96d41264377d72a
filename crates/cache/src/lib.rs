//! # seawall-cache
//!
//! A tower [`Layer`](tower::Layer) that keeps an HTTP client's answers and reuses them as
//! RFC 9111 allows: a private cache, with a TTL for APIs that send no cache headers, and
//! `stale-if-error` so that a failing upstream (or an open circuit breaker) is answered
//! from what was stored.
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use seawall_cache::{CacheLayer, CacheStatus};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cache = CacheLayer::builder()
//!     // An API that sends no cache headers: its answers stay fresh for 30 s.
//!     .ttl(Duration::from_secs(30))
//!     .build()?;
//! let handle = cache.handle();
//!
//! let upstream = service_fn(|_req: Request<()>| async {
//!     Ok::<_, std::io::Error>(Response::new(Full::new(Bytes::from_static(b"[1,2,3]"))))
//! });
//! let client = ServiceBuilder::new().layer(cache).service(upstream);
//!
//! let request = || Request::get("https://api.example.com/items").body(()).unwrap();
//! let first = client.clone().oneshot(request()).await?;
//! assert_eq!(first.extensions().get::<CacheStatus>(), Some(&CacheStatus::Miss));
//!
//! let second = client.oneshot(request()).await?;
//! assert_eq!(second.extensions().get::<CacheStatus>(), Some(&CacheStatus::Hit));
//! assert_eq!(second.into_body().collect().await?.to_bytes(), "[1,2,3]");
//!
//! assert_eq!((handle.stats().hits, handle.stats().misses), (1, 1));
//! # Ok(())
//! # }
//! ```
//!
//! ## What it does
//!
//! - **RFC 9111, private cache**, through `http-cache-semantics`: `Cache-Control`
//!   `max-age`, `no-store`, `no-cache`, `private` (stored: this cache is the client's own),
//!   `must-revalidate`, `Expires`, `Age`, the `Last-Modified` heuristic, `Vary`, and the
//!   request's own `Cache-Control` (`no-cache`, `max-age`, `max-stale`, `min-fresh`).
//! - **Revalidation**: a stale answer with an `ETag` or `Last-Modified` is revalidated
//!   with `If-None-Match` / `If-Modified-Since`; a `304` refreshes the entry and the caller
//!   gets the stored answer with the refreshed headers ([`CacheStatus::Revalidated`]); any
//!   other answer replaces it.
//! - **TTL** for answers without freshness information, by default and per path prefix
//!   ([`ttl`](CacheLayerBuilder::ttl), [`route_ttl`](CacheLayerBuilder::route_ttl));
//!   `no-store` and `no-cache` always win over it.
//! - **stale-if-error**: when the upstream fails (an error, as an open breaker's refusal,
//!   or a 5xx), a stale entry within its allowance (its `stale-if-error` directive, or
//!   [`stale_if_error`](CacheLayerBuilder::stale_if_error)) answers instead, marked
//!   [`CacheStatus::Stale`].
//! - **Marks**: every answer carries a [`CacheStatus`] extension, and optionally a header
//!   ([`status_header`](CacheLayerBuilder::status_header)).
//! - **Bodies** are buffered as `Bytes` up to [`max_body_bytes`](CacheLayerBuilder::max_body_bytes)
//!   before they are stored; a larger answer streams through unstored. The response body is
//!   [`CacheBody`]: the upstream's own body or the stored bytes.
//! - **Stores** behind [`CacheStore`]: [`MemoryStore`] (in-process, bounded by bytes, moka),
//!   and `RedisStore` (feature `redis`), shared by processes. Keys are digests
//!   ([`CacheKey`]): no credential is ever part of a key, and the credentials an answer
//!   varies on are kept as digests.
//! - **Figures** through a [`CacheHandle`]: hits, misses, revalidations, stale answers,
//!   bytes held; it is a [`FigureSource`](seawall_core::FigureSource) for the metrics layer.
//!
//! ## Readiness
//!
//! [`Cache`] is always ready, so that a fresh hit never waits on the upstream (nor on a
//! rate limiter below it): a request that must reach the upstream waits, inside its
//! response future, for a clone of the upstream service to be ready. The upstream service
//! must therefore be `Clone`, like a hyper-util client.
//!
//! ## Time
//!
//! Freshness is wall-clock time, read from tokio's clock (see
//! [`system_time_origin`](CacheLayerBuilder::system_time_origin)), so tests run on paused
//! time with exact ages.
//!
//! ## Where it goes
//!
//! Outside the coalescing, retry, breaker and rate-limit layers: a hit spends no rate-limit
//! token and never meets an open breaker, and the breaker's refusal reaches the cache as an
//! error it can answer with a stale entry.

mod body;
mod clock;
mod config;
mod entry;
mod future;
mod handle;
mod key;
mod layer;
mod memory;
#[cfg(feature = "redis")]
mod redis;
mod service;
mod status;
mod store;

pub use body::CacheBody;
pub use entry::CachedResponse;
pub use future::ResponseFuture;
pub use handle::{CacheHandle, CacheStats};
pub use key::CacheKey;
pub use layer::{CacheLayer, CacheLayerBuilder};
pub use memory::MemoryStore;
#[cfg(feature = "redis")]
pub use redis::RedisStore;
pub use service::Cache;
pub use status::CacheStatus;
pub use store::{CacheStore, StoreError, StoreFuture};
