//! # seawall-rate-limit
//!
//! A tower [`Layer`](tower::Layer) that keeps an HTTP client under its quotas: requests wait
//! their turn fairly instead of failing, and the server's own `Retry-After` and `RateLimit`
//! headers are obeyed.
//!
//! ```
//! use std::time::Duration;
//! use http::{Request, Response};
//! use seawall_rate_limit::RateLimitLayer;
//! use tokio::time::Instant;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // 10 requests per second, 5 of them back to back after an idle spell.
//! let limit = RateLimitLayer::builder().per_second(10).burst(5).build()?;
//! let upstream = service_fn(|_req: Request<()>| async {
//!     Ok::<_, std::io::Error>(Response::new(()))
//! });
//! let client = ServiceBuilder::new().layer(limit).service(upstream);
//!
//! let start = Instant::now();
//! for _ in 0..7 {
//!     client.clone().oneshot(Request::new(())).await?;
//! }
//! // The burst of 5 went at once; the 6th and 7th waited 100 ms each.
//! assert_eq!(start.elapsed(), Duration::from_millis(200));
//! # Ok(())
//! # }
//! ```
//!
//! ## What it does
//!
//! - **Quotas**: GCRA per quota (`per_second`, `per_minute`, `per_hour`, `burst`); several
//!   at once (10/s *and* 5,000/h), all must admit; a [`Cost`] extension weighs a request.
//! - **Fair waiting** (the default): first come, first served, or by [`Priority`]; each
//!   waiter is woken once, at its slot; `max_waiting` and `max_wait` bound the queue, and a
//!   request beyond either is refused at once with the figures. [`fail_fast`] refuses instead
//!   of waiting.
//! - **Cancellation-safe**: a dropped waiting request leaves the queue at once and its turn
//!   goes to the next.
//! - **Server-driven**: a 429/503 with `Retry-After`, or `RateLimit`/`X-RateLimit-*` saying
//!   the quota is spent, holds that key until the reset (parsed by `seawall-core`).
//! - **Per host** with [`per_host`] or any key, with bounded memory.
//! - **Shared**: clones share one limiter; quota state can live in another [`RateStore`] (the
//!   Redis store of `seawall-rate-limit-redis`).
//! - **Time from tokio**, so tests run on paused time.
//! - **Figures** ([`LimiterStats`]): admitted, waited, refused by reason, queue depth, paused
//!   keys. A request that waited carries a [`QueueWait`](seawall_core::QueueWait) on its
//!   response, so the breaker and metrics above can tell queueing from upstream latency.
//!
//! [`fail_fast`]: RateLimitBuilder::fail_fast
//! [`per_host`]: RateLimitBuilder::per_host

pub mod conformance;
mod error;
mod extensions;
mod future;
pub mod gcra;
mod handle;
mod layer;
mod limiter;
mod queue;
mod quota;
mod service;
mod store;
mod sync;

pub use error::{RateLimitError, Rejected};
pub use extensions::{Cost, Priority};
pub use future::ResponseFuture;
pub use handle::RateLimitHandle;
pub use layer::{RateLimitBuilder, RateLimitLayer};
pub use limiter::LimiterStats;
pub use quota::Quota;
pub use service::RateLimit;
pub use store::{Decision, InMemoryStore, RateStore, StoreError};
