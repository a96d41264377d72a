//! # seawall-core
//!
//! The HTTP knowledge every seawall layer shares, in one place: what a finished call means
//! ([`classify`]), what the upstream said about its limits ([`hints`]), which requests may be
//! sent again ([`idempotency`]), and which upstream a request is for ([`key`]). It contains no
//! tower layers; the rate limiter, circuit breaker, retry and metrics crates build on it.
//!
//! ```
//! use std::time::Duration;
//! use http::{Request, Response, StatusCode};
//! use seawall_core::{
//!     ByHost, Classify, FailureKind, HintPolicy, HttpClassifier, Idempotency, KeyExtractor,
//!     Outcome, ServerHints,
//! };
//!
//! // An upstream that throttles us.
//! let response = Response::builder()
//!     .status(StatusCode::TOO_MANY_REQUESTS)
//!     .header("retry-after", "2")
//!     .header("ratelimit-policy", r#""default";q=100;w=60"#)
//!     .header("ratelimit", r#""default";r=0;t=2"#)
//!     .body(())?;
//!
//! let outcome = HttpClassifier.classify(&Ok::<_, std::io::Error>(response.clone()));
//! assert_eq!(outcome, Outcome::Failure(FailureKind::Throttled));
//!
//! let hints = ServerHints::from_response(&response, &HintPolicy::default());
//! assert_eq!(hints.pause(), Some(Duration::from_secs(2)));
//! assert_eq!(hints.limit, Some(100));
//!
//! let request = Request::post("https://api.example.com/orders").body(())?;
//! assert!(!Idempotency::Standard.allows(&request));
//! assert_eq!(ByHost.extract_from(&request).to_string(), "https://api.example.com");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod admission;
pub mod classify;
// The key lookup shared by the layers of one call: public so that seawall's layer crates can
// reach it, hidden from the docs, and not covered by any stability promise.
#[doc(hidden)]
pub mod call_key;
pub mod clock;
mod counter;
mod divisor;
mod error;
mod extensions;
pub mod figures;
pub mod held;
pub mod hints;
pub mod idempotency;
pub mod key;
pub mod keyed;
pub mod sliding;
mod structured;

#[cfg(feature = "tower-http")]
pub use classify::TowerHttpClassifier;
pub use classify::{
    Classify, ClassifyError, FailureKind, HttpClassifier, Outcome, classify_error,
    classify_error_chain, classify_status,
};
pub use clock::Clock;
// Mechanics seawall's layer crates share on their hot paths: public only so that those crates
// can reach them, hidden from the docs, and not covered by any stability promise.
#[doc(hidden)]
pub use call_key::CallKey;
#[doc(hidden)]
pub use clock::CallTime;
#[doc(hidden)]
pub use counter::ThreadCounter;
#[doc(hidden)]
pub use divisor::Divisor;
pub use error::{ConfigError, check_range};
pub use extensions::{Attempts, QueueWait};
pub use figures::{Figure, FigureKind, FigureSource, KeyLabel, Labelled};
pub use held::{Held, SingleState};
pub use hints::{HintPolicy, HintPolicyBuilder, ResetFormat, ServerHints};
pub use idempotency::{IDEMPOTENCY_KEY, Idempotency, is_idempotent_method};
pub use key::{ByHost, Global, HostKey, KeyExtractor, RequestHead};
pub use keyed::{KeyLimits, KeyRef, KeyState, KeyedMap};
pub use sliding::SlidingCount;
