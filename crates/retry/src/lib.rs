//! # seawall-retry
//!
//! A tower [`Layer`](tower::Layer) that retries failed HTTP requests: only those that are
//! safe to resend, after a jittered backoff or the delay the server asked for, within a retry
//! budget that keeps a failing upstream from being buried under retries, with request bodies
//! replayed.
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use seawall_retry::{ReplayBody, RetryLayer, RetryReport};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let retry = RetryLayer::builder()
//!     .max_attempts(3)
//!     .exponential_backoff(Duration::from_millis(10), Duration::from_secs(1))
//!     .build()?;
//!
//! // An upstream that answers 503 twice, then 200.
//! let calls = Arc::new(AtomicU32::new(0));
//! let upstream = service_fn({
//!     let calls = Arc::clone(&calls);
//!     move |_req: Request<ReplayBody<Full<Bytes>>>| {
//!         let n = calls.fetch_add(1, Ordering::SeqCst);
//!         async move {
//!             let mut response = Response::new(());
//!             if n < 2 {
//!                 *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
//!             }
//!             Ok::<_, std::io::Error>(response)
//!         }
//!     }
//! });
//! let client = ServiceBuilder::new().layer(retry).service(upstream);
//!
//! let request = Request::get("http://api.example.com/items").body(Full::new(Bytes::new()))?;
//! let response = client.oneshot(request).await?;
//! assert_eq!(response.status(), 200);
//! assert_eq!(response.extensions().get::<RetryReport>().map(|r| r.attempts), Some(3));
//! # Ok(())
//! # }
//! ```
//!
//! ## What it does
//!
//! - **What is retried**: connect errors, timeouts, broken connections, 5xx, and 429 / 503
//!   with `Retry-After` (see [`RetryOn`]); only idempotent requests, or POST / PATCH with an
//!   `Idempotency-Key` header, unless the request provably never left (a connect error).
//! - **When**: after an exponential (factor 2, or [your own](RetryBuilder::backoff_factor)),
//!   linear or fixed backoff, capped, with full, equal, decorrelated or proportional (±p %)
//!   [`Jitter`]; or after the server's `Retry-After` / `RateLimit` reset when that is
//!   longer. A hint that would pass the [deadline](RetryBuilder::deadline) (30 s by default)
//!   stops at once.
//! - **How much**: at most `max_attempts`, and a [`RetryBudget`] shared by every clone
//!   (20 % of recent requests plus a floor, lock-free) caps retries when an upstream is down.
//! - **Bodies**: a request is sent on as a [`ReplayBody`]. Bodies that are complete up front
//!   (`Full<Bytes>`, ...) cost nothing to resend; streamed bodies are buffered up to
//!   [`max_replay_bytes`](RetryBuilder::max_replay_bytes), and a longer body is sent once.
//! - **Readiness**: every retry waits for the service below to be ready again, so a rate
//!   limiter below charges every attempt.
//! - **Which service**: a first attempt goes through the wrapped service, readied by
//!   `poll_ready`; a retry goes through a clone of the service as the layer wrapped it, made
//!   when the first retry is due. Nothing is cloned for a request that succeeds first time.
//!   Services whose clones share their state (hyper's and reqwest's clients, every seawall
//!   layer, tower's `Buffer`) behave as one; a service that keeps state of its own per clone
//!   (a connection made in `poll_ready`, tower's per-clone `RateLimit`) starts each retried
//!   request's clone afresh, and changes made through [`Retry::get_mut`] reach first
//!   attempts only.
//! - **Reporting**: a final error is a [`RetryError`] with the attempts made and why the layer
//!   stopped, whose `source()` is the last attempt's error (its `Display` does not repeat it:
//!   print the chain, as anyhow's `{:#}` does); a response that was retried carries a [`RetryReport`]; figures for metrics come
//!   from [`RetryHandle::stats`]; [`on_retry`](RetryBuilder::on_retry) sees every retry.
//!
//! ## Why not `tower::retry::Retry`
//!
//! Its `Policy` sees each result by reference and must pass the inner error through
//! unchanged, so the final error could not say how many attempts were made or why retrying
//! stopped, and per-request state (the start of the deadline, the jitter state) would have to
//! live in a policy cloned into every request. This layer keeps tower's shape — every retry
//! driven to readiness before it is sent — in its own future, and clones the inner service
//! only for a request that is retried (tower's clones it for every request).

mod backoff;
mod budget;
mod copy;
mod error;
mod future;
mod layer;
mod policy;
mod replay;
mod run;
mod service;
mod stats;

pub use backoff::{Backoff, Growth, Jitter, Rng};
pub use budget::{BudgetConfig, RetryBudget};
pub use error::{RetryError, RetryReport};
pub use future::ResponseFuture;
pub use layer::{DEFAULT_DEADLINE, RetryBuilder, RetryLayer};
pub use policy::{AttemptInfo, Decision, RetryOn, RetryPolicy, RetryState, StopReason};
pub use replay::{BoxError, NotReplayable, ReplayBody};
pub use service::{OnRetry, Retry};
pub use stats::{RetryHandle, RetryStats};
