//! The [`Batch`] service.

use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::sync::OwnedSemaphorePermit;
use tower::Service;

use crate::batcher::Batcher;
use crate::error::{BatchError, BoxError};
use crate::future::ResponseFuture;
use crate::worker::{WaitForPlace, Worker};

/// Merges the items it is called with into batches sent to the service it wraps; built by a
/// [`BatchLayer`](crate::BatchLayer).
///
/// Clones share one batching task, which owns the wrapped service, and one bound on the
/// items waiting to be sent. The task ends when the last clone is dropped, after sending the
/// items it holds.
pub struct Batch<S, C: Batcher> {
    worker: Arc<Worker<S, C>>,
    /// The place `poll_ready` found for this clone's next item.
    place: Option<OwnedSemaphorePermit>,
    /// Waiting for a place while the queue is full (boxed: made only then).
    waiting: Option<WaitForPlace>,
}

impl<S, C: Batcher> Clone for Batch<S, C> {
    /// Another handle on the same task and queue, with no place of its own yet.
    fn clone(&self) -> Self {
        Self {
            worker: Arc::clone(&self.worker),
            place: None,
            waiting: None,
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
            place: None,
            waiting: None,
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

    /// Ready when the item can have a place among those waiting to be sent (the batching
    /// task waits for the wrapped service's readiness before each batch); while
    /// `max_queued` items wait, it waits for one of their batches to be taken.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.place.is_some() {
            return Poll::Ready(Ok(()));
        }
        let waiting = match &mut self.waiting {
            Some(waiting) => waiting,
            None => match self.worker.try_place() {
                Some(place) => {
                    self.place = Some(place);
                    return Poll::Ready(Ok(()));
                }
                None => self.waiting.insert(self.worker.wait_for_place()),
            },
        };
        let place = ready!(waiting.as_mut().poll(cx));
        self.waiting = None;
        // The semaphore is never closed; were it, no item could be queued again.
        let place = place.map_err(|_| BatchError::Closed)?;
        self.place = Some(place);
        Poll::Ready(Ok(()))
    }

    /// Queues `item` in the place `poll_ready` found. Called without one (against tower's
    /// contract), it takes a free place, or fails with [`BatchError::QueueFull`].
    fn call(&mut self, item: C::Item) -> Self::Future {
        let Some(place) = self.place.take().or_else(|| self.worker.try_place()) else {
            return ResponseFuture::failed(BatchError::QueueFull {
                max_queued: self.worker.max_queued(),
            });
        };
        match self.worker.submit(item, place) {
            Ok(reply) => ResponseFuture::waiting(reply),
            Err(error) => ResponseFuture::failed(error),
        }
    }
}
