//! What the limiter's behaviour tests share: an upstream that logs when each request reached
//! it, and durations in milliseconds.
#![allow(dead_code, reason = "each test file uses the part it needs")]

use std::future::ready;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use tokio::time::Instant;
use tower::{Service, service_fn};

/// Records which request (by its body) reached the upstream, and when.
pub(crate) type Log = Arc<Mutex<Vec<(u32, Duration)>>>;

/// An upstream that answers 200 at once and logs each request's arrival after `start`.
pub(crate) fn logging_upstream(
    start: Instant,
) -> (
    Log,
    impl Service<Request<u32>, Response = Response<()>, Error = std::io::Error, Future: Send> + Clone,
) {
    let log: Log = Arc::default();
    let sink = Arc::clone(&log);
    let service = service_fn(move |request: Request<u32>| {
        #[allow(
            clippy::unwrap_used,
            reason = "a poisoned log must fail the test loudly"
        )]
        sink.lock()
            .unwrap()
            .push((*request.body(), start.elapsed()));
        ready(Ok::<_, std::io::Error>(Response::new(())))
    });
    (log, service)
}

/// `n` milliseconds.
pub(crate) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
