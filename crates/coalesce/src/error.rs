//! The error a coalescing service returns.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

/// A boxed error, as tower's and hyper's APIs carry them.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// Why a request through a [`Coalesce`](crate::Coalesce) service failed.
#[derive(Debug)]
pub enum CoalesceError<E> {
    /// The request's own upstream call failed (it led its call, or passed through).
    Upstream(E),
    /// The upstream call this request shared failed: every request that shared it gets this
    /// error, with the same source.
    Shared(Arc<dyn Error + Send + Sync>),
}

impl<E> CoalesceError<E> {
    /// The upstream error of a call this request made, if it made one.
    pub fn into_upstream(self) -> Option<E> {
        match self {
            CoalesceError::Upstream(error) => Some(error),
            CoalesceError::Shared(_) => None,
        }
    }

    /// Whether this is the error of a call shared with identical requests.
    pub fn is_shared(&self) -> bool {
        matches!(self, CoalesceError::Shared(_))
    }
}

impl<E: fmt::Display> fmt::Display for CoalesceError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoalesceError::Upstream(error) => error.fmt(f),
            // The source is not repeated: print the chain to see it.
            CoalesceError::Shared(_) => f.write_str("the shared upstream call failed"),
        }
    }
}

impl<E: Error + 'static> Error for CoalesceError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            CoalesceError::Upstream(error) => error.source(),
            CoalesceError::Shared(error) => Some(&**error),
        }
    }
}

/// A request's own failure is judged as its upstream's error is; a shared call's failure by
/// its error chain (the sharers hold it only as a trait object).
impl<E: seawall_core::ClassifyError> seawall_core::ClassifyError for CoalesceError<E> {
    fn failure_kind(&self) -> seawall_core::FailureKind {
        match self {
            CoalesceError::Upstream(error) => error.failure_kind(),
            CoalesceError::Shared(error) => seawall_core::classify_error_chain(&**error),
        }
    }

    fn attempts(&self) -> Option<u32> {
        match self {
            CoalesceError::Upstream(error) => error.attempts(),
            CoalesceError::Shared(_) => None,
        }
    }
}
