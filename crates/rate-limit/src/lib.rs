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
//! - **Windows**: [`window`](RateLimitBuilder::window)`(n, period)` never admits more than
//!   `n` in any interval of length `period`, beside GCRA quotas (see below for which to pick).
//! - **Tiers**: [`tier`](RateLimitBuilder::tier) and [`tier_of`](RateLimitBuilder::tier_of)
//!   give each key the quotas of its tier (`free` 10 a minute, `pro` 1,000 a minute).
//! - **Token budgets**: with [`settle_costs`](RateLimitBuilder::settle_costs) a request's
//!   [`Cost`] is settled after its answer ([`ActualCost`], a header, or
//!   [`RateLimitHandle::settle`]): the key is debited the difference, or refunded what its
//!   quotas still hold of it (tokens refilled since the admission went to later requests).
//! - **Adaptive rate**: [`adaptive`](RateLimitBuilder::adaptive) finds a server's unknown
//!   limit (CUBIC, as the AWS SDKs' adaptive retry mode) from its bare 429s.
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
//! - **Time from tokio**, so tests run on paused time; or, opted into with
//!   [`clock`](RateLimitBuilder::clock)`(Clock::tsc())`, from the processor's time-stamp
//!   counter, a cheaper reading that paused time does not move (see
//!   [`Clock`](seawall_core::Clock)).
//! - **Figures** ([`LimiterStats`]): admitted, waited, refused by reason, queue depth, paused
//!   keys. A request that waited carries a [`QueueWait`](seawall_core::QueueWait) on its
//!   response, so the breaker and metrics above can tell queueing from upstream latency.
//!
//! - **Withdrawn admissions**: a request a circuit breaker above admitted and that waits here
//!   is asked about again when its turn comes, through `seawall_core::admission`; if the
//!   breaker opened meanwhile it is refused as the breaker refuses, without taking a token.
//!
//! ## GCRA or a window?
//!
//! A GCRA quota spreads requests evenly: `per_minute(n)` with burst `b` admits `b` at once,
//! then one every `60 / n` s, so up to `b + n - 1` in some 60 s (`b + n` in a closed minute
//! from the first). `per_minute(20).burst(20)` thus sends 39 in the first minute to a server
//! that counts 20, which refuses 19 of them. A window quota, `window(20, 60 s)`, never admits
//! more than 20 in any 60 s: it lets the 20 go at once, then each next one when the oldest
//! leaves the minute. Pick a window when the server counts requests in a sliding or fixed
//! window and refuses the excess; pick GCRA when the server (or fairness to it) wants an even
//! pace. Both can be given together, and all must admit. A window keeps one entry per
//! admission of its last period for each key (O(`n`) memory, 16 bytes an entry, `n` at most
//! 100,000), behind a lock of its own that only keys with a window take.
//!
//! ## Why its own GCRA, and not governor's
//!
//! [governor](https://docs.rs/governor) is an excellent GCRA, and the benchmarks run it beside
//! this one. It answers one question, "may this request go now?", by taking a token or
//! refusing. A limiter that makes requests wait fairly needs two more: *when* would a request
//! (or the queue ahead of it) be admitted, asked without taking anything, so that each waiter
//! is woken once at its slot and `max_wait` is judged before it waits; and *give back* tokens,
//! so that several quotas (10/s and 5,000/h) admit all together or not at all. governor can
//! neither look ahead without taking nor refund, so [`gcra`] keeps the same algorithm in cells
//! of its own that can, and reads tokio's clock by default so that tests run on paused time.
//!
//! [`fail_fast`]: RateLimitBuilder::fail_fast
//! [`per_host`]: RateLimitBuilder::per_host

mod acquire;
mod adaptive;
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
mod window;

pub use acquire::{Acquire, Permit, QuotaState};
pub use error::{RateLimitError, Rejected};
pub use extensions::{ActualCost, Cost, Priority};
pub use future::ResponseFuture;
pub use handle::RateLimitHandle;
pub use layer::{DEFAULT_FIGURE_TOP_KEYS, RateLimitBuilder, RateLimitLayer};
pub use limiter::LimiterStats;
pub use quota::{MAX_WINDOW_COUNT, Quota};
pub use service::RateLimit;
pub use store::{Decision, InMemoryStore, RateStore, Refund, StoreError};
