//! # seawall-reqwest
//!
//! The seawall stack as [reqwest-middleware](https://docs.rs/reqwest-middleware) middleware:
//! rate limiting, circuit breaking, retries and metrics for a `reqwest` client, sharing their
//! state with every tower client built from the same [`seawall::Stack`].
//!
//! ```
//! use reqwest_middleware::ClientBuilder;
//! use seawall_examples::{Upstream, respond};
//! use seawall_reqwest::SeawallMiddleware;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let upstream = Upstream::start(|_request| async { respond(200, &[], "ok") }).await?;
//! let stack = seawall::stack()
//!     .rate_limit(|limit| limit.per_second(50).burst(5))
//!     .build()?;
//! let client = ClientBuilder::new(reqwest::Client::new())
//!     .with(SeawallMiddleware::new(&stack))
//!     .build();
//!
//! let response = client.get(upstream.url("/items")).send().await?;
//! assert_eq!(response.status(), 200);
//! assert_eq!(response.text().await?, "ok");
//! // The same limiter and figures as any tower client built from `stack`.
//! assert_eq!(stack.rate_limit().stats().admitted, 1);
//! assert_eq!(stack.metrics().snapshot().total, 1);
//! # Ok(())
//! # }
//! ```
//!
//! ## How it works
//!
//! reqwest-middleware lends each middleware the rest of its chain for one call only, while a
//! tower stack owns its inner service. So the stack is built once over a [`Bridge`], and each
//! attempt the stack makes (a retry, after the limiter admitted it and the breaker let it
//! through) is handed back to the middleware call, which sends it on down the chain. Time
//! limits work as in the tower stack: when the attempt timeout fires, the attempt in flight is
//! dropped.
//!
//! Put `SeawallMiddleware` first in the chain, so that every middleware after it runs once per
//! attempt. A refusal or a failure of the stack comes back as
//! [`reqwest_middleware::Error::Middleware`]; [`failure_kind`] says what it was, and
//! [`stack_error`] gives the standard stack's typed error (attempts, stop reason, the breaker's
//! or limiter's refusal with its retry-after).
//!
//! Per-request steering: a [`Priority`](seawall::rate_limit::Priority) or
//! [`Cost`](seawall::rate_limit::Cost) set with reqwest-middleware's `with_extension` reaches
//! the rate limiter; an `Idempotency-Key` header lets the retry layer resend a `POST`.
//!
//! Bodies: a body known whole is resent to every attempt for free; a streamed body is replayed
//! from a buffer while it fits the retry layer's `max_replay_bytes`, and past that it is sent
//! once and the request is not retried.
//!
//! Timeouts: the stack's `attempt_timeout` limits each attempt. A reqwest timeout (the
//! client's or the request's) applies to each attempt too, since every attempt is a request
//! of its own to the rest of the chain; it comes back as [`BridgeError::TimedOut`], a timeout
//! the retry layer retries.

mod bridge;
mod middleware;

pub use bridge::{Bridge, BridgeError, BridgeFuture};
pub use middleware::SeawallMiddleware;

use seawall::StandardService;
use seawall_core::{ClassifyError, FailureKind, classify_error_chain};

/// The error of the standard stack built over the [`Bridge`].
pub type StackError =
    <StandardService<Bridge> as tower::Service<http::Request<reqwest::Body>>>::Error;

/// The standard stack's typed error inside a middleware error, if that is what it is.
pub fn stack_error(error: &reqwest_middleware::Error) -> Option<&StackError> {
    match error {
        reqwest_middleware::Error::Middleware(error) => error.downcast_ref::<StackError>(),
        reqwest_middleware::Error::Reqwest(_) => None,
    }
}

/// What kind of failure a request through the middleware ended in: a seawall refusal
/// (`Rejected`), a timeout, a connection failure...
pub fn failure_kind(error: &reqwest_middleware::Error) -> FailureKind {
    if let Some(error) = stack_error(error) {
        return error.failure_kind();
    }
    match error {
        reqwest_middleware::Error::Reqwest(error) => bridge::reqwest_kind(error),
        reqwest_middleware::Error::Middleware(error) => classify_error_chain(error.as_ref()),
    }
}
