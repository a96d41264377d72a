//! # seawall-batch
//!
//! A tower [`Layer`](tower::Layer) for APIs with batch endpoints: single requests arriving
//! within `max_delay` of each other (up to `max_size` of them) are merged by a function you
//! give into one upstream request, and the upstream's answer is split back, by another
//! function, into one result per caller.
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use seawall_batch::{BatchLayer, batch_fn};
//! use tower::{Layer, Service, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // An upstream batch endpoint: names for many ids in one call.
//! let upstream = service_fn(|ids: Vec<u32>| async move {
//!     Ok::<_, Infallible>(ids.iter().map(|id| format!("item {id}")).collect::<Vec<_>>())
//! });
//!
//! let layer = BatchLayer::builder(batch_fn(
//!     // Merge: the ids of the batch, in arrival order, make one request.
//!     |ids: &[u32]| Ok(ids.to_vec()),
//!     // Split: one result per id, in the same order.
//!     |names: Vec<String>, _ids: &[u32]| names.into_iter().map(Ok).collect(),
//! ))
//! .max_size(50)
//! .max_delay(Duration::from_millis(5))
//! .build()?;
//! let handle = layer.handle();
//! let mut items = layer.layer(upstream);
//!
//! // Three single lookups, one upstream call.
//! let calls = [1, 2, 3].map(|id| items.clone().oneshot(id));
//! let [a, b, c] = futures::future::join_all(calls).await.try_into().expect("three");
//! assert_eq!((a?, b?, c?), ("item 1".into(), "item 2".into(), "item 3".into()));
//! assert_eq!(handle.stats().batches, 1);
//! # Ok(())
//! # }
//! ```
//!
//! ## What it does
//!
//! - **Windows**: a batch opens with its first item and closes `max_delay` after that item
//!   arrived, or as soon as it holds `max_size` items. An item that arrives at or after the
//!   close goes to the next batch; the arrival instant (read from tokio's clock when the
//!   service is called) alone decides.
//! - **Results**: the [`Batcher`] (or the two functions of [`batch_fn`]) returns one result
//!   per item; an error for one item reaches that caller only ([`BatchError::Item`]). An
//!   upstream error reaches every caller of the batch, with the same source.
//! - **Cancellation**: a caller that goes away before its batch is sent is left out of it;
//!   one that goes away later has its result dropped. A batch already sent runs to its end.
//! - **Task**: each service the layer builds spawns one tokio task on its first call (so it
//!   can be built before a runtime runs). The task owns the wrapped service, waits for it to
//!   be ready before each batch, and sends each batch in a task of its own, so the next
//!   batch gathers meanwhile. When the last clone of the service is dropped, the task sends
//!   the items it holds at once and ends: no call is left without an answer.
//! - **Readiness**: at most `max_queued` items (10,000 by default) wait to be sent, per
//!   service; while that many wait (the wrapped service is not ready, say), `poll_ready`
//!   waits for a batch to be taken, as tower's `Buffer` does, so memory stays bounded.
//! - **Figures**: [`BatchHandle::stats`] and, for metrics exporters,
//!   [`FigureSource`](seawall_core::FigureSource): batches sent, items sent, items
//!   discarded.

mod batcher;
mod error;
mod future;
mod layer;
mod service;
mod stats;
mod worker;

pub use batcher::{Batcher, FnBatcher, batch_fn};
pub use error::{BatchError, BoxError};
pub use future::ResponseFuture;
pub use layer::{
    BatchBuilder, BatchLayer, DEFAULT_MAX_DELAY, DEFAULT_MAX_QUEUED, DEFAULT_MAX_SIZE,
};
pub use service::Batch;
pub use stats::{BatchHandle, BatchStats};
