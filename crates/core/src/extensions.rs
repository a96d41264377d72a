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

/// How many attempts a logical request took, the first included.
///
/// A retry layer inserts it into a response only when the request was resent (a response
/// without it took one attempt), so the steady state allocates nothing; an error tells its
/// own through [`ClassifyError::attempts`](crate::ClassifyError::attempts). The metrics layer
/// above records attempts per logical request from these without depending on the retry
/// crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Attempts(pub u32);

impl Attempts {
    /// The attempts recorded on `response`: one when none are recorded.
    pub fn of<B>(response: &http::Response<B>) -> u32 {
        response
            .extensions()
            .get::<Attempts>()
            .map_or(1, |attempts| attempts.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_without_attempts_took_one() {
        let mut response = http::Response::new(());
        assert_eq!(Attempts::of(&response), 1);
        response.extensions_mut().insert(Attempts(4));
        assert_eq!(Attempts::of(&response), 4);
    }

    #[test]
    fn an_error_tells_no_attempts_unless_it_says() {
        struct Plain;
        impl crate::ClassifyError for Plain {
            fn failure_kind(&self) -> crate::FailureKind {
                crate::FailureKind::Other
            }
        }
        assert_eq!(crate::ClassifyError::attempts(&Plain), None);
        let classifier = crate::HttpClassifier;
        assert_eq!(
            crate::Classify::<http::Response<()>, Plain>::error_attempts(&classifier, &Plain),
            None
        );
    }
}
