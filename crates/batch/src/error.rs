//! The error a batching service returns.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

/// A boxed error, as tower's APIs carry them.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// Why one caller's item got no output.
#[derive(Debug)]
#[non_exhaustive]
pub enum BatchError {
    /// The batcher could not merge the batch; every item of the batch gets this error.
    Merge(Arc<dyn Error + Send + Sync>),
    /// The upstream call for the batch failed (or its service failed to become ready);
    /// every item of the batch gets this error, with the same source.
    Upstream(Arc<dyn Error + Send + Sync>),
    /// The batcher's `split` returned an error for this item; the other items of the batch
    /// are not affected.
    Item(BoxError),
    /// The batcher's `split` returned fewer results than the batch had items.
    Missing,
    /// The batching task has stopped (the runtime it was spawned on shut down).
    Closed,
    /// The first call was made outside a tokio runtime, where the batching task cannot be
    /// spawned.
    NoRuntime,
    /// The service was called without waiting for `poll_ready` while `max_queued` items
    /// were waiting to be sent.
    QueueFull {
        /// The bound on items waiting to be sent.
        max_queued: usize,
    },
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Sources are not repeated: print the chain to see them.
        f.write_str(match self {
            BatchError::Merge(_) => "the batch could not be merged into one request",
            BatchError::Upstream(_) => "the batch's upstream call failed",
            BatchError::Item(_) => "the batch's answer holds an error for this item",
            BatchError::Missing => "the batch's answer holds no result for this item",
            BatchError::Closed => "the batching task has stopped",
            BatchError::NoRuntime => "no tokio runtime to run the batching task on",
            BatchError::QueueFull { max_queued } => {
                return write!(
                    f,
                    "{max_queued} items already wait to be sent (call `poll_ready` to wait \
                     for room)"
                );
            }
        })
    }
}

impl Error for BatchError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            BatchError::Merge(error) | BatchError::Upstream(error) => Some(&**error),
            BatchError::Item(error) => Some(&**error),
            BatchError::Missing
            | BatchError::Closed
            | BatchError::NoRuntime
            | BatchError::QueueFull { .. } => None,
        }
    }
}
