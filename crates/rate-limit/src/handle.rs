//! [`RateLimitHandle`]: the limiter's figures, and pauses from outside the request path.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use crate::limiter::{Limiter, LimiterStats};
use crate::store::RateStore;

/// Reads a limiter's figures and pauses its keys. Cheap to clone.
pub struct RateLimitHandle<K, St: RateStore> {
    limiter: Arc<Limiter<K, St>>,
}

impl<K, St: RateStore> Clone for RateLimitHandle<K, St> {
    fn clone(&self) -> Self {
        Self {
            limiter: Arc::clone(&self.limiter),
        }
    }
}

impl<K, St: RateStore> fmt::Debug for RateLimitHandle<K, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitHandle")
            .field("limiter", &self.limiter)
            .finish()
    }
}

impl<K, St> RateLimitHandle<K, St>
where
    K: Clone + Eq + Hash + fmt::Debug + Send + Sync + 'static,
    St: RateStore,
{
    pub(crate) fn new(limiter: Arc<Limiter<K, St>>) -> Self {
        Self { limiter }
    }

    /// The figures now.
    pub fn stats(&self) -> LimiterStats {
        self.limiter.stats()
    }

    /// Holds `key`'s requests for `duration`, as a server's `Retry-After` would.
    pub fn pause(&self, key: K, duration: Duration) {
        self.limiter.pause_key(key, duration);
    }
}
