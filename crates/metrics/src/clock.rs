//! What times requests: the CPU's time-stamp counter by default, or tokio's clock.

use tokio::time::Instant;

/// What times the latency histograms and the requests-per-minute figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LatencyClock {
    /// The CPU's time-stamp counter, read through `quanta` and calibrated against the
    /// system's monotonic clock (which it falls back to where the counter is unreliable).
    /// Reading it costs about half a `clock_gettime`, and a request reads the clock twice.
    /// It keeps real time even while tokio's clock is paused.
    #[default]
    Tsc,
    /// tokio's clock, which follows `tokio::time::pause` and `advance`: for tests that time
    /// requests on the paused clock.
    Tokio,
}

/// A [`LatencyClock`] ready to read, as nanoseconds since the recorder was made.
#[derive(Debug)]
pub(crate) enum Clock {
    Tsc { clock: quanta::Clock, origin: u64 },
    Tokio { origin: Instant },
}

impl Clock {
    pub(crate) fn new(kind: LatencyClock) -> Self {
        match kind {
            LatencyClock::Tsc => {
                let clock = quanta::Clock::new();
                let origin = clock.raw();
                Self::Tsc { clock, origin }
            }
            LatencyClock::Tokio => Self::Tokio {
                origin: Instant::now(),
            },
        }
    }

    /// Nanoseconds since the recorder was made.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        match self {
            Self::Tsc { clock, origin } => clock.delta_as_nanos(*origin, clock.raw()),
            Self::Tokio { origin } => {
                let since = Instant::now().saturating_duration_since(*origin);
                u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
            }
        }
    }
}
