//! [`BatchLayer`] and its builder.

use std::sync::Arc;
use std::time::Duration;

use seawall_core::{ConfigError, check_range};
use tower::Layer;

use crate::batcher::Batcher;
use crate::service::Batch;
use crate::stats::{BatchHandle, Counters};
use crate::worker::{Window, Worker};

/// The most items in a batch a [`BatchBuilder`] starts with.
pub const DEFAULT_MAX_SIZE: usize = 100;

/// How long a batch stays open after its first item, as a [`BatchBuilder`] starts.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_millis(10);

/// The most items waiting to be sent, per service, that a [`BatchBuilder`] starts with.
pub const DEFAULT_MAX_QUEUED: usize = 10_000;

/// Merges requests arriving close together into one call to an API's batch endpoint.
///
/// Each service it builds has its own batching task; every service it builds adds to one
/// set of figures.
pub struct BatchLayer<C> {
    batcher: Arc<C>,
    window: Window,
    counters: Arc<Counters>,
}

impl<C> Clone for BatchLayer<C> {
    fn clone(&self) -> Self {
        Self {
            batcher: Arc::clone(&self.batcher),
            window: self.window,
            counters: Arc::clone(&self.counters),
        }
    }
}

impl<C> std::fmt::Debug for BatchLayer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchLayer")
            .field("max_size", &self.window.max_size)
            .field("max_delay", &self.window.max_delay)
            .field("max_queued", &self.window.max_queued)
            .finish_non_exhaustive()
    }
}

impl<C: Batcher> BatchLayer<C> {
    /// Starts a configuration that batches with `batcher` (see [`batch_fn`](crate::batch_fn)
    /// to make one from two functions), with the defaults: at most [`DEFAULT_MAX_SIZE`]
    /// items a batch, open for [`DEFAULT_MAX_DELAY`] after its first item.
    pub fn builder(batcher: C) -> BatchBuilder<C> {
        BatchBuilder {
            batcher,
            max_size: DEFAULT_MAX_SIZE,
            max_delay: DEFAULT_MAX_DELAY,
            max_queued: DEFAULT_MAX_QUEUED,
        }
    }
}

impl<C> BatchLayer<C> {
    /// A handle on the layer's figures.
    pub fn handle(&self) -> BatchHandle {
        BatchHandle::new(Arc::clone(&self.counters))
    }

    /// The most items in a batch.
    pub fn max_size(&self) -> usize {
        self.window.max_size
    }

    /// How long a batch stays open after its first item arrived.
    pub fn max_delay(&self) -> Duration {
        self.window.max_delay
    }

    /// The most items waiting to be sent, per service.
    pub fn max_queued(&self) -> usize {
        self.window.max_queued
    }
}

impl<S, C: Batcher> Layer<S> for BatchLayer<C> {
    type Service = Batch<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Batch::new(Worker::new(
            inner,
            Arc::clone(&self.batcher),
            self.window,
            Arc::clone(&self.counters),
        ))
    }
}

/// Configures a [`BatchLayer`]; [`build`](Self::build) validates every field.
pub struct BatchBuilder<C> {
    batcher: C,
    max_size: usize,
    max_delay: Duration,
    max_queued: usize,
}

impl<C> std::fmt::Debug for BatchBuilder<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchBuilder")
            .field("max_size", &self.max_size)
            .field("max_delay", &self.max_delay)
            .field("max_queued", &self.max_queued)
            .finish_non_exhaustive()
    }
}

impl<C: Batcher> BatchBuilder<C> {
    /// The most items in one batch (1 to 10,000; default 100): a full batch is sent at
    /// once, without waiting for `max_delay`. Set it to what the upstream's batch endpoint
    /// accepts.
    pub fn max_size(mut self, max_size: usize) -> Self {
        self.max_size = max_size;
        self
    }

    /// How long a batch stays open after its first item arrived (1 µs to 60 s; default
    /// 10 ms): the most an item waits before its batch is sent, beyond waiting for the
    /// upstream service to be ready.
    pub fn max_delay(mut self, max_delay: Duration) -> Self {
        self.max_delay = max_delay;
        self
    }

    /// The most items that may wait to be sent, per service (from `max_size` to 10,000,000;
    /// default 10,000): items gathered or queued for a batch that the upstream has not taken
    /// yet, as when the wrapped service is not ready. When that many wait, `poll_ready` waits
    /// for room, as tower's `Buffer` does, so a stalled upstream slows its callers instead
    /// of growing the queue without bound.
    ///
    /// As with tower's `Buffer`, a place is held from the `poll_ready` that found it: by a
    /// clone that has not called yet, and by an item whose caller went away until the task
    /// gathers it and leaves it out. Batches the upstream has taken hold no place.
    pub fn max_queued(mut self, max_queued: usize) -> Self {
        self.max_queued = max_queued;
        self
    }

    /// Validates the configuration.
    pub fn build(self) -> Result<BatchLayer<C>, ConfigError> {
        let max_size = check_range(
            "max_size",
            self.max_size,
            1,
            10_000,
            "an integer from 1 to 10000",
        )?;
        let max_delay = check_range(
            "max_delay",
            self.max_delay,
            Duration::from_micros(1),
            Duration::from_secs(60),
            "a duration from 1 µs to 60 s",
        )?;
        let max_queued = check_range(
            "max_queued",
            self.max_queued,
            1,
            10_000_000,
            "an integer from 1 to 10000000",
        )?;
        // Fewer places than a batch holds: no batch could fill, and every one would wait out
        // `max_delay`.
        if max_queued < max_size {
            return Err(ConfigError::new(
                "max_queued",
                max_queued,
                "at least `max_size`",
            ));
        }
        Ok(BatchLayer {
            batcher: Arc::new(self.batcher),
            window: Window {
                max_size,
                max_delay,
                max_queued,
            },
            counters: Arc::new(Counters::default()),
        })
    }
}
