//! Values the layers leave on responses for the layers above them.

use std::time::Duration;

/// How long a request waited in a rate limiter's queue before it was sent.
///
/// The rate limiter inserts it into the response's extensions only when the request waited,
/// so the steady state allocates nothing. The circuit breaker subtracts it before judging a
/// call slow (waiting for our own quota is not the upstream's slowness), and the metrics layer
/// reports it apart from upstream latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct QueueWait(pub Duration);

impl QueueWait {
    /// The wait recorded on `response`, zero if it did not wait.
    pub fn of<B>(response: &http::Response<B>) -> Duration {
        response
            .extensions()
            .get::<QueueWait>()
            .map_or(Duration::ZERO, |wait| wait.0)
    }
}
