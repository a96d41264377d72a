//! The wall-clock time the cache reasons with, derived from tokio's clock.
//!
//! HTTP freshness is expressed in wall-clock time (`Date`, `Expires`, `Age`), and
//! `http-cache-semantics` takes the current time as a `SystemTime` argument. The cache never
//! reads `SystemTime::now()` per request: it reads `tokio::time::Instant::now()` and adds the
//! elapsed time to a wall-clock origin taken once, when the layer is built (or given by
//! [`system_time_origin`](crate::CacheLayerBuilder::system_time_origin)). So, on paused
//! time (`tokio::time::pause()`), the cache's "now" moves exactly as far as the test
//! advances tokio's clock, and a test that pins the origin gets the same `SystemTime`s on
//! every run; and a wall-clock step (NTP) never makes a stored answer jump in age.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// Maps tokio instants to wall-clock times.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    origin_instant: Instant,
    origin_system: SystemTime,
}

impl Clock {
    /// A clock on which tokio's now is `origin` (the real wall clock when `None`).
    pub(crate) fn new(origin: Option<SystemTime>) -> Self {
        Self {
            origin_instant: Instant::now(),
            origin_system: origin.unwrap_or_else(SystemTime::now),
        }
    }

    /// The wall-clock time of `instant`.
    #[inline]
    pub(crate) fn at(&self, instant: Instant) -> SystemTime {
        self.origin_system + instant.saturating_duration_since(self.origin_instant)
    }

    /// The wall-clock time now.
    #[inline]
    pub(crate) fn now(&self) -> SystemTime {
        self.at(Instant::now())
    }
}

/// `later - earlier`, or zero when `later` is not later.
#[inline]
pub(crate) fn since(later: SystemTime, earlier: SystemTime) -> Duration {
    later.duration_since(earlier).unwrap_or_default()
}
