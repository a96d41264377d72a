//! Where stored answers live: the [`CacheStore`] trait and its answer type.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::entry::CachedResponse;
use crate::key::CacheKey;

/// A store's failure (Redis unreachable, an entry that does not decode). The cache treats it
/// as a miss (or as not storing) and counts it; it never fails a request.
pub type StoreError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Where a cache layer keeps its answers: in the process ([`MemoryStore`](crate::MemoryStore))
/// or shared by processes (`RedisStore`, feature `redis`).
///
/// A store answers at once when it can ([`StoreFuture::ready`]), which lets a fresh hit
/// complete inside the layer's `call`; a remote store answers later.
pub trait CacheStore: Send + Sync + 'static {
    /// The entry under `key`, if the store has one.
    fn get(&self, key: &CacheKey) -> StoreFuture<Result<Option<Arc<CachedResponse>>, StoreError>>;

    /// Stores `entry` under `key`, replacing any other; the store may forget it at
    /// [`entry.keep_until()`](CachedResponse::keep_until) and may evict it before.
    fn put(&self, key: CacheKey, entry: Arc<CachedResponse>)
    -> StoreFuture<Result<(), StoreError>>;

    /// Forgets the entry under `key`.
    fn remove(&self, key: &CacheKey) -> StoreFuture<Result<(), StoreError>>;

    /// The bytes the store holds, when it knows (an in-process store does).
    fn bytes_held(&self) -> Option<u64> {
        None
    }
}

/// A store's answer: ready at once, or a boxed future for stores that must wait.
#[must_use = "futures do nothing unless polled"]
pub struct StoreFuture<T> {
    kind: Kind<T>,
}

enum Kind<T> {
    Ready(Option<T>),
    Pending(Pin<Box<dyn Future<Output = T> + Send>>),
}

impl<T> StoreFuture<T> {
    /// An answer available now.
    pub fn ready(value: T) -> Self {
        StoreFuture {
            kind: Kind::Ready(Some(value)),
        }
    }

    /// An answer that `future` will give.
    pub fn pending(future: impl Future<Output = T> + Send + 'static) -> Self {
        StoreFuture {
            kind: Kind::Pending(Box::pin(future)),
        }
    }

    /// The answer if it is available now, else the future back.
    pub(crate) fn now_or_later(self) -> Result<T, Self> {
        match self.kind {
            Kind::Ready(Some(value)) => Ok(value),
            kind => Err(StoreFuture { kind }),
        }
    }
}

// Nothing in it is pinned in place: the ready value is moved out, the pending one is boxed.
impl<T> Unpin for StoreFuture<T> {}

impl<T> Future for StoreFuture<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match &mut self.kind {
            Kind::Ready(value) => match value.take() {
                Some(value) => Poll::Ready(value),
                // Polled again after it completed: a caller's bug, which stays pending.
                None => Poll::Pending,
            },
            Kind::Pending(future) => future.as_mut().poll(cx),
        }
    }
}

impl<T> std::fmt::Debug for StoreFuture<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.kind {
            Kind::Ready(_) => "ready",
            Kind::Pending(_) => "pending",
        };
        f.debug_struct("StoreFuture")
            .field("state", &state)
            .finish()
    }
}

impl<St: CacheStore + ?Sized> CacheStore for Arc<St> {
    fn get(&self, key: &CacheKey) -> StoreFuture<Result<Option<Arc<CachedResponse>>, StoreError>> {
        (**self).get(key)
    }
    fn put(
        &self,
        key: CacheKey,
        entry: Arc<CachedResponse>,
    ) -> StoreFuture<Result<(), StoreError>> {
        (**self).put(key, entry)
    }
    fn remove(&self, key: &CacheKey) -> StoreFuture<Result<(), StoreError>> {
        (**self).remove(key)
    }
    fn bytes_held(&self) -> Option<u64> {
        (**self).bytes_held()
    }
}
