//! The errors a rate limiter returns.

use std::error::Error;
use std::fmt;
use std::time::Duration;

use seawall_core::{ClassifyError, FailureKind};

use crate::store::StoreError;

/// Why the limiter refused a request. Every refusal is immediate and carries its figures.
#[derive(Debug, Clone)]
pub enum Rejected {
    /// The wait queue already held `max_waiting` requests.
    QueueFull {
        /// The configured bound.
        max_waiting: usize,
    },
    /// The request would have waited longer than `max_wait`.
    WaitTooLong {
        /// The wait predicted for it.
        predicted: Duration,
        /// The configured budget.
        max_wait: Duration,
    },
    /// Fail-fast mode and no token was free; one will be after `retry_after`.
    Limited {
        /// How long until the request would be admitted.
        retry_after: Duration,
    },
    /// The request's cost exceeds a quota's burst: no wait would ever admit it.
    Oversize {
        /// The request's cost.
        cost: u32,
    },
    /// The store could not be asked (a shared store down, with fail-closed policy).
    StoreUnavailable(StoreError),
}

impl Rejected {
    /// A stable, low-cardinality label: `queue_full`, `wait_too_long`, `limited`, `oversize`,
    /// `store_unavailable`.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejected::QueueFull { .. } => "queue_full",
            Rejected::WaitTooLong { .. } => "wait_too_long",
            Rejected::Limited { .. } => "limited",
            Rejected::Oversize { .. } => "oversize",
            Rejected::StoreUnavailable(_) => "store_unavailable",
        }
    }

    /// When trying again could succeed, if the limiter knows.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Rejected::WaitTooLong { predicted, .. } => Some(*predicted),
            Rejected::Limited { retry_after } => Some(*retry_after),
            _ => None,
        }
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejected::QueueFull { max_waiting } => write!(
                f,
                "rate limiter queue is full ({max_waiting} requests waiting); send fewer at once or raise `max_waiting`"
            ),
            Rejected::WaitTooLong {
                predicted,
                max_wait,
            } => write!(
                f,
                "rate limited: this request would wait {:.3}s, over the {:.3}s `max_wait`",
                predicted.as_secs_f64(),
                max_wait.as_secs_f64()
            ),
            Rejected::Limited { retry_after } => write!(
                f,
                "rate limited: try again in {:.3}s",
                retry_after.as_secs_f64()
            ),
            Rejected::Oversize { cost } => write!(
                f,
                "request cost {cost} exceeds the quota's burst; it can never be admitted"
            ),
            Rejected::StoreUnavailable(error) => error.fmt(f),
        }
    }
}

impl Error for Rejected {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Rejected::StoreUnavailable(error) => Some(error),
            _ => None,
        }
    }
}

/// The error of a [`RateLimit`](crate::RateLimit) service.
#[derive(Debug)]
pub enum RateLimitError<E> {
    /// The limiter refused the request; the inner service was not called.
    Rejected(Rejected),
    /// The inner service failed.
    Inner(E),
}

impl<E> RateLimitError<E> {
    /// The refusal, if this is one.
    pub fn as_rejected(&self) -> Option<&Rejected> {
        match self {
            RateLimitError::Rejected(rejected) => Some(rejected),
            RateLimitError::Inner(_) => None,
        }
    }
}

impl<E: fmt::Display> fmt::Display for RateLimitError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RateLimitError::Rejected(rejected) => rejected.fmt(f),
            RateLimitError::Inner(error) => error.fmt(f),
        }
    }
}

impl<E: Error + 'static> Error for RateLimitError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            RateLimitError::Rejected(rejected) => Some(rejected),
            RateLimitError::Inner(error) => error.source(),
        }
    }
}

impl<E: ClassifyError> ClassifyError for RateLimitError<E> {
    fn failure_kind(&self) -> FailureKind {
        match self {
            RateLimitError::Rejected(_) => FailureKind::Rejected,
            RateLimitError::Inner(error) => error.failure_kind(),
        }
    }
}
