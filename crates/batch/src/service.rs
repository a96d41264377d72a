//! The [`Batch`] service.

use std::sync::Arc;
use std::task::{Context, Poll};

use tower::Service;

use crate::batcher::Batcher;
use crate::error::{BatchError, BoxError};
use crate::future::ResponseFuture;
use crate::worker::Worker;

/// Merges the items it is called with into batches sent to the service it wraps; built by a
/// [`BatchLayer`](crate::BatchLayer).
///
/// Clones share one batching task, which owns the wrapped service. The task ends when the
/// last clone is dropped, after sending the items it holds.
pub struct Batch<S, C: Batcher> {
    worker: Arc<Worker<S, C>>,
}

impl<S, C: Batcher> Clone for Batch<S, C> {
    fn clone(&self) -> Self {
        Self {
            worker: Arc::clone(&self.worker),
        }
    }
}

impl<S, C: Batcher> std::fmt::Debug for Batch<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").finish_non_exhaustive()
    }
}

impl<S, C: Batcher> Batch<S, C> {
    pub(crate) fn new(worker: Worker<S, C>) -> Self {
        Self {
            worker: Arc::new(worker),
        }
    }
}

impl<S, C> Service<C::Item> for Batch<S, C>
where
    C: Batcher,
    S: Service<C::Request, Response = C::Response> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    C::Request: Send + 'static,
    C::Response: Send + 'static,
{
    type Response = C::Output;
    type Error = BatchError;
    type Future = ResponseFuture<C::Output>;

    /// Always ready: items queue for the batching task, which waits for the wrapped
    /// service's readiness before each batch.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, item: C::Item) -> Self::Future {
        match self.worker.submit(item) {
            Ok(reply) => ResponseFuture::waiting(reply),
            Err(error) => ResponseFuture::failed(error),
        }
    }
}
