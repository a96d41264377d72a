//! The errors a rate limiter returns.

use std::error::Error;
use std::fmt;
use std::time::Duration;

use seawall_core::admission::Withdrawn;
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
    /// The request waited, and when its turn came the layer above that had admitted it (a
    /// circuit breaker that opened meanwhile) refused it; no token was taken. Its source is
    /// that layer's refusal, which that layer counts (this limiter counts it as `withdrawn`,
    /// not as one of its refusals).
    Withdrawn(Withdrawn),
}

impl Rejected {
    /// A stable, low-cardinality label: `queue_full`, `wait_too_long`, `limited`, `oversize`,
    /// `store_unavailable`, `withdrawn`.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejected::QueueFull { .. } => "queue_full",
            Rejected::WaitTooLong { .. } => "wait_too_long",
            Rejected::Limited { .. } => "limited",
            Rejected::Oversize { .. } => "oversize",
            Rejected::StoreUnavailable(_) => "store_unavailable",
            Rejected::Withdrawn(_) => "withdrawn",
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

    /// The answer a server gives a caller it refuses: `429 Too Many Requests` with
    /// `Retry-After` and `RateLimit` (`"default";r=0;t=<seconds>`) when the limiter knows when
    /// to come back, `503 Service Unavailable` when its queue is full or its store is down.
    /// Seconds are rounded up, so a caller that obeys never comes back early.
    ///
    /// For a limiter in front of a server (say an axum app, in fail-fast mode), this turns
    /// every refusal into the response that well-behaved clients, seawall's included, obey.
    pub fn to_response<B>(&self, body: B) -> http::Response<B> {
        let mut response = http::Response::new(body);
        *response.status_mut() = match self {
            Rejected::QueueFull { .. } | Rejected::StoreUnavailable(_) | Rejected::Withdrawn(_) => {
                http::StatusCode::SERVICE_UNAVAILABLE
            }
            _ => http::StatusCode::TOO_MANY_REQUESTS,
        };
        if let Some(wait) = self.retry_after() {
            let seconds = wait
                .as_secs()
                .saturating_add(u64::from(wait.subsec_nanos() > 0));
            let headers = response.headers_mut();
            headers.insert(http::header::RETRY_AFTER, seconds.into());
            if let Ok(value) = http::HeaderValue::try_from(format!("\"default\";r=0;t={seconds}")) {
                headers.insert("ratelimit", value);
            }
        }
        response
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
            // The store's error is the source, not repeated here.
            Rejected::StoreUnavailable(_) => f.write_str(
                "rate limiter refused the request because its store could not be asked (it fails closed)",
            ),
            Rejected::Withdrawn(withdrawn) => withdrawn.fmt(f),
        }
    }
}

impl Error for Rejected {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Rejected::StoreUnavailable(error) => Some(error),
            // Its own text is the withdrawal's: the cause below it is the refusal.
            Rejected::Withdrawn(withdrawn) => withdrawn.source(),
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

/// Both variants are transparent: `Display` and `source()` are those of the refusal or the
/// inner error, so a chain prints each cause once.
impl<E: Error + 'static> Error for RateLimitError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            RateLimitError::Rejected(rejected) => rejected.source(),
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

    fn attempts(&self) -> Option<u32> {
        match self {
            RateLimitError::Rejected(_) => None,
            RateLimitError::Inner(error) => error.attempts(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(response: &http::Response<()>, name: &str) -> Option<String> {
        response
            .headers()
            .get(name)
            .map(|value| value.to_str().unwrap_or("not text").to_owned())
    }

    #[test]
    fn refusals_become_the_responses_clients_obey() {
        let limited = Rejected::Limited {
            retry_after: Duration::from_millis(1_200),
        }
        .to_response(());
        assert_eq!(limited.status(), 429);
        assert_eq!(header(&limited, "retry-after").as_deref(), Some("2"));
        assert_eq!(
            header(&limited, "ratelimit").as_deref(),
            Some("\"default\";r=0;t=2")
        );

        let too_long = Rejected::WaitTooLong {
            predicted: Duration::from_secs(90),
            max_wait: Duration::from_secs(60),
        }
        .to_response(());
        assert_eq!(too_long.status(), 429);
        assert_eq!(header(&too_long, "retry-after").as_deref(), Some("90"));

        let full = Rejected::QueueFull { max_waiting: 10 }.to_response(());
        assert_eq!(full.status(), 503);
        assert_eq!(header(&full, "retry-after"), None);

        let forever = Rejected::Limited {
            retry_after: Duration::MAX,
        }
        .to_response(());
        assert_eq!(
            header(&forever, "retry-after").as_deref(),
            Some(u64::MAX.to_string().as_str())
        );

        let oversize = Rejected::Oversize { cost: 50 }.to_response(());
        assert_eq!(oversize.status(), 429);
        assert_eq!(header(&oversize, "ratelimit"), None);
    }

    #[test]
    fn a_client_reads_back_the_pause_it_was_given() {
        let response = Rejected::Limited {
            retry_after: Duration::from_millis(2_500),
        }
        .to_response(());
        let hints = seawall_core::ServerHints::from_response(&response, &Default::default());
        assert_eq!(hints.pause(), Some(Duration::from_secs(3)));
    }
}
