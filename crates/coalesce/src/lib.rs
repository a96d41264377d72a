//! # seawall-coalesce
//!
//! A tower [`Layer`](tower::Layer) for HTTP clients that lets identical in-flight requests
//! share one upstream call: while a `GET /items/7` is on its way, a second, third, ...
//! identical `GET /items/7` waits for its answer instead of calling the upstream again, and
//! each gets the same status, headers and body.
//!
//! ```
//! use std::convert::Infallible;
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Empty, Full};
//! use seawall_coalesce::CoalesceLayer;
//! use tower::{Layer, Service, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let layer = CoalesceLayer::builder().build()?;
//! let handle = layer.handle();
//!
//! // An upstream that counts its calls.
//! let calls = Arc::new(AtomicU32::new(0));
//! let upstream = service_fn({
//!     let calls = Arc::clone(&calls);
//!     move |_request: Request<Empty<Bytes>>| {
//!         calls.fetch_add(1, Ordering::SeqCst);
//!         async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("item 7")))) }
//!     }
//! });
//! let mut client = layer.layer(upstream);
//!
//! let request = || Request::get("https://api.example.com/items/7").body(Empty::new());
//! // Two identical requests in flight at once.
//! let first = client.ready().await?.call(request()?);
//! let second = client.ready().await?.call(request()?);
//! let (first, second) = tokio::join!(first, second);
//!
//! assert_eq!(calls.load(Ordering::SeqCst), 1);
//! for response in [first?, second?] {
//!     assert_eq!(response.into_body().collect().await?.to_bytes(), "item 7");
//! }
//! assert_eq!(handle.stats().coalesced, 1);
//! # Ok(())
//! # }
//! ```
//!
//! ## What it does
//!
//! - **Which requests**: requests with an idempotent method (GET, HEAD, OPTIONS, TRACE, PUT,
//!   DELETE; seawall-core's rules) and no body. Others pass through untouched.
//! - **Identical**: same method, same URI, and the same values of the headers
//!   [`vary`](CoalesceBuilder::vary) names (default `Authorization` and `Cookie`, so that
//!   two users never share an answer). Name every header the upstream's answers depend on.
//! - **What followers get**: the leader's status, version, headers and body (and trailers).
//!   The body is buffered as [`Bytes`](bytes::Bytes) once and shared, when its declared size
//!   is at most [`max_body_bytes`](CoalesceBuilder::max_body_bytes); an answer that may be
//!   longer (or is streamed, with no declared size) goes to the leader alone, and each
//!   follower makes its own call. Followers do not get the leader's response extensions. An
//!   upstream error is shared too: every request gets [`CoalesceError::Shared`] with the
//!   same source.
//! - **Response body**: [`CoalesceBody`], either the upstream's own body (a request that
//!   shared nothing pays nothing more) or the shared bytes.
//! - **Cancellation**: if the leader's caller goes away, its call is dropped with it and one
//!   follower leads a new call, which the others follow; when every caller has gone, no call
//!   is left running. A flight leaves the in-flight map when its answer arrives or its
//!   leader goes away, so nothing is left behind.
//! - **Readiness**: `poll_ready` is the wrapped service's, since a leader calls it. A
//!   follower does not use that readiness; when it must call after all, it readies a clone
//!   of the wrapped service itself.
//! - **Cost**: a request with no identical one in flight makes its key (a copy of the URI
//!   and of the named header values), allocates its flight, and enters and leaves one of 32
//!   shards of the in-flight map, each held for one hash-set operation. Followers wait on a
//!   `tokio::sync::Notify`.
//! - **Figures**: [`CoalesceHandle::stats`] and, for metrics exporters,
//!   [`FigureSource`](seawall_core::FigureSource): calls led, requests coalesced, answers not
//!   shared, takeovers, keys in flight.

mod body;
mod error;
mod flight;
mod future;
mod key;
mod layer;
mod service;
mod stats;

pub use body::CoalesceBody;
pub use error::{BoxError, CoalesceError};
pub use future::ResponseFuture;
pub use layer::{CoalesceBuilder, CoalesceLayer, DEFAULT_MAX_BODY_BYTES, MAX_VARY_HEADERS};
pub use service::Coalesce;
pub use stats::{CoalesceHandle, CoalesceStats};
