//! The errors a circuit breaker returns.

use std::error::Error;
use std::fmt;
use std::time::Duration;

use seawall_core::{ClassifyError, FailureKind};
use tokio::time::Instant;

use crate::event::State;

/// The breaker refused the call. A plain value: returning it allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitOpen {
    pub(crate) state: State,
    pub(crate) retry_at: Option<Instant>,
}

impl CircuitOpen {
    /// The state that refused the call: open, half-open (no probe permit left) or forced open.
    pub fn state(&self) -> State {
        self.state
    }

    /// When the breaker will next admit a call, if known (never for forced open). For a
    /// half-open refusal this is the latest such instant: when the max wait will have
    /// reopened the breaker and its open time passed; the probes may decide sooner.
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// How long from now until the breaker next admits a call, if known.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_at
            .map(|at| at.saturating_duration_since(Instant::now()))
    }
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.state, self.retry_after()) {
            (State::ForcedOpen, _) => f.write_str(
                "circuit breaker is forced open: calls are refused until it is reset through its handle",
            ),
            (State::HalfOpen, Some(after)) => write!(
                f,
                "circuit breaker is half-open and every probe permit is taken; try again in {:.3}s",
                after.as_secs_f64()
            ),
            (_, Some(after)) => write!(
                f,
                "circuit breaker is open after upstream failures; try again in {:.3}s",
                after.as_secs_f64()
            ),
            (_, None) => f.write_str("circuit breaker is opening; try again shortly"),
        }
    }
}

impl Error for CircuitOpen {}

/// The error of a [`CircuitBreaker`](crate::CircuitBreaker) service.
#[derive(Debug)]
pub enum BreakerError<E> {
    /// The breaker refused the call; the inner service was not called.
    Open(CircuitOpen),
    /// The inner service failed.
    Inner(E),
}

impl<E> BreakerError<E> {
    /// The refusal, if this is one.
    pub fn as_open(&self) -> Option<&CircuitOpen> {
        match self {
            BreakerError::Open(open) => Some(open),
            BreakerError::Inner(_) => None,
        }
    }

    /// The inner service's error, if this is one.
    pub fn into_inner(self) -> Option<E> {
        match self {
            BreakerError::Open(_) => None,
            BreakerError::Inner(error) => Some(error),
        }
    }
}

impl<E: fmt::Display> fmt::Display for BreakerError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BreakerError::Open(open) => open.fmt(f),
            BreakerError::Inner(error) => error.fmt(f),
        }
    }
}

/// Both variants are transparent: `Display` and `source()` are those of the refusal or the
/// inner error, so a chain prints each cause once.
impl<E: Error + 'static> Error for BreakerError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            BreakerError::Open(open) => open.source(),
            BreakerError::Inner(error) => error.source(),
        }
    }
}

impl<E: ClassifyError> ClassifyError for BreakerError<E> {
    fn failure_kind(&self) -> FailureKind {
        match self {
            BreakerError::Open(_) => FailureKind::Rejected,
            BreakerError::Inner(error) => error.failure_kind(),
        }
    }

    fn attempts(&self) -> Option<u32> {
        match self {
            BreakerError::Open(_) => None,
            BreakerError::Inner(error) => error.attempts(),
        }
    }
}
