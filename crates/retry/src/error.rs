//! The error a retry layer returns.

use std::error::Error;
use std::fmt;
use std::time::Duration;

use seawall_core::{ClassifyError, FailureKind};

use crate::policy::StopReason;

/// The last attempt's error, with how many attempts were made and why the layer stopped.
#[derive(Debug)]
pub struct RetryError<E> {
    attempts: u32,
    stop: StopReason,
    hint: Option<Duration>,
    source: E,
}

impl<E> RetryError<E> {
    pub(crate) fn new(attempts: u32, stop: StopReason, hint: Option<Duration>, source: E) -> Self {
        Self {
            attempts,
            stop,
            hint,
            source,
        }
    }

    /// Attempts made, the first included (0 when the service failed before the first).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Why the layer did not try again.
    pub fn stop_reason(&self) -> StopReason {
        self.stop
    }

    /// The delay the server asked for, when it is why the layer stopped (a `Retry-After`
    /// beyond the deadline).
    pub fn hint(&self) -> Option<Duration> {
        self.hint
    }

    /// The last attempt's error.
    pub fn inner(&self) -> &E {
        &self.source
    }

    /// The last attempt's error, by value.
    pub fn into_inner(self) -> E {
        self.source
    }
}

/// Says how many attempts were made and why the layer stopped. The last attempt's error is
/// the [`source`](Error::source), not repeated here, so that a report that walks the chain
/// (anyhow's `{:#}`, for one) prints it once.
impl<E> fmt::Display for RetryError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = if self.attempts == 1 { "" } else { "s" };
        write!(
            f,
            "request failed after {} attempt{plural} ({}",
            self.attempts, self.stop
        )?;
        if let Some(hint) = self.hint {
            write!(f, "; the server asked to wait {:.3}s", hint.as_secs_f64())?;
        }
        f.write_str(")")
    }
}

impl<E: Error + 'static> Error for RetryError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.source)
    }
}

impl<E: ClassifyError> ClassifyError for RetryError<E> {
    fn failure_kind(&self) -> FailureKind {
        self.source.failure_kind()
    }

    fn attempts(&self) -> Option<u32> {
        Some(self.attempts)
    }
}

/// Added to a response's extensions when the layer retried the request, or gave up on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryReport {
    /// Attempts made, the first included.
    pub attempts: u32,
    /// Why the layer stopped, when the response is a failure it did not retry further.
    pub stop: Option<StopReason>,
    /// The delay the server asked for, when it is why the layer stopped.
    pub hint: Option<Duration>,
}
