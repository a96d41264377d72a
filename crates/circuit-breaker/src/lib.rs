//! # seawall-circuit-breaker
//!
//! A tower [`Layer`](tower::Layer) that stops calling an upstream that is failing, probes it
//! carefully, and recovers: a circuit breaker for HTTP clients.
//!
//! ```
//! use std::time::Duration;
//! use http::{Request, Response};
//! use seawall_circuit_breaker::{BreakerError, CircuitBreakerLayer, State};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let breaker = CircuitBreakerLayer::builder()
//!     .consecutive_failures(3)
//!     .open_duration(Duration::from_secs(30))
//!     .build()?;
//! let handle = breaker.handle();
//!
//! // An upstream that is down: every call answers 503.
//! let upstream = service_fn(|_req: Request<()>| async {
//!     Ok::<_, std::io::Error>(Response::builder().status(503).body(()).unwrap())
//! });
//! let client = ServiceBuilder::new().layer(breaker).service(upstream);
//!
//! for _ in 0..3 {
//!     let response = client.clone().oneshot(Request::new(())).await?;
//!     assert_eq!(response.status(), 503);
//! }
//! assert_eq!(handle.state(&()), State::Open);
//!
//! // Now calls fail fast, without reaching the upstream, and say when to come back.
//! match client.oneshot(Request::new(())).await {
//!     Err(BreakerError::Open(open)) => assert!(open.retry_after() <= Some(Duration::from_secs(30))),
//!     other => panic!("expected a refusal, got {other:?}"),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! ## What it does
//!
//! - **States**: closed, open, half-open, plus forced-open, disabled and metrics-only, read
//!   and changed through a [`CircuitBreakerHandle`].
//! - **Trip policies**: consecutive failures; failure rate over the last N calls (a window
//!   that slides one call at a time) or over a time window; slow-call rate, with time spent
//!   waiting in a rate limiter below excluded. Rate policies wait for a minimum number of calls.
//! - **Open duration**: fixed, or growing on repeated trips with jitter and a cap; a 503's
//!   `Retry-After` sets it when present.
//! - **Half-open**: a fixed number of probe permits, a number of successes to close, any
//!   failure reopens, and so does a slow probe when the breaker counts slow calls (it would
//!   not close on an upstream as slow as the one it opened on); a cancelled probe returns
//!   its permit; probes that hang past a maximum wait reopen the breaker at that deadline
//!   instead of wedging it.
//! - **Classification** from `seawall-core`: connect errors, timeouts, resets and 5xx fail;
//!   other 4xx succeed; 429 is ignored (a rate signal, see `throttled_is_failure`); refusals
//!   by layers below are ignored.
//! - **Per host** with [`per_host`](CircuitBreakerBuilder::per_host) or any key, with bounded
//!   memory and bounded figures: the aggregate over every key, then the keys with the most
//!   failures ([`figure_top_keys`](CircuitBreakerBuilder::figure_top_keys), default 10).
//! - **Cheap**: the closed path is lock-free (a few atomic operations). While a count window
//!   holds no failure and no slow call, a success writes nothing other threads share: it is
//!   counted in its thread's own cell, and the next failure folds those counts into the
//!   window before it is judged (it may miss a success another thread is recording at that
//!   very instant, which then counts toward the failure after). A refusal is an `Err` value
//!   that allocates nothing and carries when the breaker next admits.
//! - **Events**: every transition once, through `tracing` and
//!   [`on_transition`](CircuitBreakerBuilder::on_transition) listeners.

mod backoff;
mod breaker;
mod config;
mod error;
mod event;
mod future;
mod guard;
mod handle;
mod layer;
mod service;
mod sync;
mod window;

pub use backoff::OpenBackoff;
pub use config::{Config, TransitionListener, Window};
pub use error::{BreakerError, CircuitOpen};
pub use event::{Reason, State, Transition};
pub use future::ResponseFuture;
pub use guard::BreakerGuard;
pub use handle::{BreakerStats, CircuitBreakerHandle};
pub use layer::{CircuitBreakerBuilder, CircuitBreakerLayer};
pub use service::CircuitBreaker;
pub use window::WindowTotals;
