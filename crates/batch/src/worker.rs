//! The task that gathers items into batches and sends them.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

use crate::batcher::Batcher;
use crate::error::{BatchError, BoxError};
use crate::stats::Counters;

/// One caller's item, when it arrived, and where its result goes.
pub(crate) struct Pending<C: Batcher> {
    item: C::Item,
    arrived: Instant,
    reply: oneshot::Sender<Result<C::Output, BatchError>>,
    /// The item's place among those waiting to be sent, given back when its batch is.
    place: OwnedSemaphorePermit,
}

pub(crate) type Reply<C> = oneshot::Receiver<Result<<C as Batcher>::Output, BatchError>>;

/// A wait for a place among the items waiting to be sent.
pub(crate) type WaitForPlace =
    Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send + Sync>>;

/// The layer's settings, as the task needs them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub(crate) max_size: usize,
    pub(crate) max_delay: Duration,
    pub(crate) max_queued: usize,
}

/// What the clones of one service share: the queue to its batching task, which is spawned on
/// the first call (a service may be built before a runtime runs).
pub(crate) struct Worker<S, C: Batcher> {
    queue: OnceLock<mpsc::UnboundedSender<Pending<C>>>,
    /// Until the task is spawned: the service it will own. Locked once, by the first call.
    start: Mutex<Option<(S, Arc<C>)>>,
    /// Places for the items waiting to be sent (`max_queued` of them): the channel needs no
    /// bound of its own, as no item enters it without a place.
    room: Arc<Semaphore>,
    window: Window,
    counters: Arc<Counters>,
}

impl<S, C: Batcher> Worker<S, C> {
    pub(crate) fn new(inner: S, batcher: Arc<C>, window: Window, counters: Arc<Counters>) -> Self {
        Self {
            queue: OnceLock::new(),
            start: Mutex::new(Some((inner, batcher))),
            room: Arc::new(Semaphore::new(window.max_queued)),
            window,
            counters,
        }
    }
}

impl<S, C> Worker<S, C>
where
    C: Batcher,
    S: Service<C::Request, Response = C::Response> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    C::Request: Send + 'static,
    C::Response: Send + 'static,
{
    /// The most items waiting to be sent.
    pub(crate) fn max_queued(&self) -> usize {
        self.window.max_queued
    }

    /// A place for an item, if one is free now.
    pub(crate) fn try_place(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.room).try_acquire_owned().ok()
    }

    /// A wait for the next place that comes free.
    pub(crate) fn wait_for_place(&self) -> WaitForPlace {
        Box::pin(Arc::clone(&self.room).acquire_owned())
    }

    /// Queues `item`, which holds `place`, for the next batch; the receiver gets its result.
    pub(crate) fn submit(
        &self,
        item: C::Item,
        place: OwnedSemaphorePermit,
    ) -> Result<Reply<C>, BatchError> {
        let arrived = Instant::now();
        let queue = match self.queue.get() {
            Some(queue) => queue,
            None => {
                let runtime =
                    tokio::runtime::Handle::try_current().map_err(|_| BatchError::NoRuntime)?;
                self.queue.get_or_init(|| self.spawn(&runtime))
            }
        };
        let (reply, result) = oneshot::channel();
        queue
            .send(Pending {
                item,
                arrived,
                reply,
                place,
            })
            .map_err(|_| BatchError::Closed)?;
        Ok(result)
    }

    fn spawn(&self, runtime: &tokio::runtime::Handle) -> mpsc::UnboundedSender<Pending<C>> {
        let (queue, items) = mpsc::unbounded_channel();
        let start = self
            .start
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        // `None` only if a first spawn panicked half-way; the queue is then closed, and
        // every call gets `BatchError::Closed` rather than waiting.
        if let Some((inner, batcher)) = start {
            runtime.spawn(run(
                inner,
                batcher,
                items,
                self.window,
                Arc::clone(&self.counters),
            ));
        }
        queue
    }
}

/// Gathers items into batches until every service holding the queue is gone, then sends
/// what it holds and ends.
///
/// A batch opens with its first item and closes `max_delay` after that item arrived, or
/// when it holds `max_size` items. An item that arrived at or after the close goes to the
/// next batch, so arrival instants alone decide which batch an item joins.
async fn run<S, C>(
    mut inner: S,
    batcher: Arc<C>,
    mut items: mpsc::UnboundedReceiver<Pending<C>>,
    window: Window,
    counters: Arc<Counters>,
) where
    C: Batcher,
    S: Service<C::Request, Response = C::Response>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    C::Response: Send + 'static,
{
    let mut carried = None;
    loop {
        let first = match carried.take() {
            Some(first) => first,
            None => match items.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let closes = first.arrived + window.max_delay;
        let mut batch = Vec::with_capacity(window.max_size.min(1024));
        batch.push(first);
        while batch.len() < window.max_size {
            match tokio::time::timeout_at(closes, items.recv()).await {
                Ok(Some(pending)) if pending.arrived < closes => batch.push(pending),
                Ok(Some(pending)) => {
                    carried = Some(pending);
                    break;
                }
                // Every service is gone, or the window closed: send what there is.
                Ok(None) | Err(_) => break,
            }
        }
        send(&mut inner, &batcher, batch, &counters).await;
    }
}

/// Sends one batch and, in a task of its own, hands each caller its result, so that the
/// next batch gathers while this one is out.
async fn send<S, C>(
    inner: &mut S,
    batcher: &Arc<C>,
    mut batch: Vec<Pending<C>>,
    counters: &Counters,
) where
    C: Batcher,
    S: Service<C::Request, Response = C::Response>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    C::Response: Send + 'static,
{
    // A caller that went away is left out: its item costs the upstream nothing.
    let gathered = batch.len();
    batch.retain(|pending| !pending.reply.is_closed());
    counters.discarded(gathered - batch.len());
    if batch.is_empty() {
        return;
    }
    let mut items = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    // The items keep their places until the upstream takes the batch (or it fails).
    let mut places = Vec::with_capacity(batch.len());
    for pending in batch {
        items.push(pending.item);
        replies.push(pending.reply);
        places.push(pending.place);
    }
    let request = match batcher.merge(&items) {
        Ok(request) => request,
        Err(error) => return fail(replies, BatchError::Merge, error),
    };
    let call = match inner.ready().await {
        Ok(ready) => ready.call(request),
        Err(error) => return fail(replies, BatchError::Upstream, error.into()),
    };
    drop(places);
    counters.sent(items.len());
    let batcher = Arc::clone(batcher);
    tokio::spawn(async move {
        match call.await {
            Ok(response) => {
                let mut results = batcher.split(response, &items).into_iter();
                for reply in replies {
                    let result = match results.next() {
                        Some(result) => result.map_err(BatchError::Item),
                        None => Err(BatchError::Missing),
                    };
                    // A caller that went away meanwhile: its part is dropped.
                    let _ = reply.send(result);
                }
            }
            Err(error) => fail(replies, BatchError::Upstream, error.into()),
        }
    });
}

/// Gives every caller of a batch the same error.
fn fail<O>(
    replies: Vec<oneshot::Sender<Result<O, BatchError>>>,
    kind: fn(Arc<dyn std::error::Error + Send + Sync>) -> BatchError,
    error: BoxError,
) {
    let error: Arc<dyn std::error::Error + Send + Sync> = Arc::from(error);
    for reply in replies {
        let _ = reply.send(Err(kind(Arc::clone(&error))));
    }
}
