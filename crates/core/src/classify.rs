//! Outcome classification: the one seam through which the breaker, the retry layer and the
//! metrics layer decide what a finished call means.
//!
//! The default rules ([`HttpClassifier`]):
//!
//! | result | outcome |
//! |---|---|
//! | connect error (refused, DNS, connect timeout) before the connection was made | `Failure(Connect)` |
//! | attempt timeout (tower's or tokio's `Elapsed`) | `Failure(Timeout)` |
//! | reset, broken pipe, incomplete message, other transport error | `Failure(Transport)` |
//! | 429, or 503 with `Retry-After` | `Failure(Throttled)` |
//! | other 5xx | `Failure(ServerError)` |
//! | 1xx, 2xx, 3xx, other 4xx | `Success` |
//! | a seawall layer refused the call (circuit open, queue full) | `Failure(Rejected)` |
//! | an error whose chain holds none of the above | `Failure(Other)` |
//!
//! Errors are read through [`ClassifyError`], implemented for the usual client errors and
//! for every seawall layer's error. A closure `Fn(&Result<Res, E>) -> Outcome` is a
//! classifier too, and with the `tower-http` feature `TowerHttpClassifier` adapts any
//! tower-http `ClassifyResponse`.

use std::error::Error;
use std::fmt;
use std::io;

use http::{Response, StatusCode, header};

/// What a finished call means to the resilience layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The upstream did its job (including 4xx answers other than 429: the caller erred).
    Success,
    /// The call failed; the kind says how.
    Failure(FailureKind),
    /// The call says nothing about the upstream's health (for example it was cancelled).
    Ignored,
}

impl Outcome {
    /// A label for metrics: `success`, `ignored` or the failure kind's label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Ignored => "ignored",
            Outcome::Failure(kind) => kind.as_str(),
        }
    }

    /// `true` for [`Outcome::Success`].
    pub const fn is_success(self) -> bool {
        matches!(self, Outcome::Success)
    }

    /// `true` for any [`Outcome::Failure`].
    pub const fn is_failure(self) -> bool {
        matches!(self, Outcome::Failure(_))
    }

    /// `true` for a throttling answer (429, or 503 with `Retry-After`).
    pub const fn is_throttled(self) -> bool {
        matches!(self, Outcome::Failure(FailureKind::Throttled))
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a call failed. The set is small and fixed so that it can label metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// No connection could be made; the request never left this machine.
    Connect,
    /// The attempt ran out of time.
    Timeout,
    /// The connection broke while the request or response was in flight.
    Transport,
    /// The upstream answered 5xx.
    ServerError,
    /// The upstream asked us to slow down: 429, or 503 with `Retry-After`.
    Throttled,
    /// A seawall layer refused the call before it reached the upstream (circuit open, rate
    /// limiter queue full or wait too long). Says nothing about the upstream's health.
    Rejected,
    /// An error of a type seawall does not recognise.
    Other,
}

impl FailureKind {
    /// Every kind, in the order of [`index`](Self::index), for tables of figures.
    pub const ALL: [FailureKind; 7] = [
        FailureKind::Connect,
        FailureKind::Timeout,
        FailureKind::Transport,
        FailureKind::ServerError,
        FailureKind::Throttled,
        FailureKind::Rejected,
        FailureKind::Other,
    ];

    /// This kind's position in [`ALL`](Self::ALL), to index a fixed array of figures.
    pub const fn index(self) -> usize {
        match self {
            FailureKind::Connect => 0,
            FailureKind::Timeout => 1,
            FailureKind::Transport => 2,
            FailureKind::ServerError => 3,
            FailureKind::Throttled => 4,
            FailureKind::Rejected => 5,
            FailureKind::Other => 6,
        }
    }

    /// A stable, low-cardinality label: `connect`, `timeout`, `transport`, `server_error`,
    /// `throttled`, `rejected` or `other`.
    pub const fn as_str(self) -> &'static str {
        match self {
            FailureKind::Connect => "connect",
            FailureKind::Timeout => "timeout",
            FailureKind::Transport => "transport",
            FailureKind::ServerError => "server_error",
            FailureKind::Throttled => "throttled",
            FailureKind::Rejected => "rejected",
            FailureKind::Other => "other",
        }
    }

    /// `true` when the request provably never reached the upstream, so resending it is safe
    /// whatever its method.
    pub const fn never_sent(self) -> bool {
        matches!(self, FailureKind::Connect | FailureKind::Rejected)
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Decides the [`Outcome`] of a finished call.
///
/// Implemented by [`HttpClassifier`], `TowerHttpClassifier` (feature `tower-http`) and by every closure
/// `Fn(&Result<Res, E>) -> Outcome`.
pub trait Classify<Res, E> {
    /// Classifies one finished call.
    fn classify(&self, result: &Result<Res, E>) -> Outcome;

    /// How many attempts the failed call made, when its error says so (a retry layer's
    /// error does). The default knows nothing; classifiers that can read the error through
    /// [`ClassifyError`] ask it.
    fn error_attempts(&self, error: &E) -> Option<u32> {
        let _ = error;
        None
    }
}

impl<F, Res, E> Classify<Res, E> for F
where
    F: Fn(&Result<Res, E>) -> Outcome,
{
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        self(result)
    }
}

/// The default HTTP classification rules (see the [module docs](self)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpClassifier;

impl HttpClassifier {
    /// Classifies a response by its status and headers.
    pub fn classify_response<B>(&self, response: &Response<B>) -> Outcome {
        classify_status(response.status(), response.headers())
    }
}

impl<B, E: ClassifyError> Classify<Response<B>, E> for HttpClassifier {
    fn classify(&self, result: &Result<Response<B>, E>) -> Outcome {
        match result {
            Ok(response) => self.classify_response(response),
            Err(error) => Outcome::Failure(classify_error(error)),
        }
    }

    fn error_attempts(&self, error: &E) -> Option<u32> {
        error.attempts()
    }
}

/// Classifies a status code with its headers by the default rules.
pub fn classify_status(status: StatusCode, headers: &http::HeaderMap) -> Outcome {
    if status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::SERVICE_UNAVAILABLE && headers.contains_key(header::RETRY_AFTER))
    {
        Outcome::Failure(FailureKind::Throttled)
    } else if status.is_server_error() {
        Outcome::Failure(FailureKind::ServerError)
    } else {
        Outcome::Success
    }
}

/// How an error value of the stack below failed.
///
/// Implemented for the errors HTTP client stacks produce: `tower::BoxError` (its `source()`
/// chain is walked), hyper-util's client error, `hyper::Error`, `std::io::Error`, tower's and
/// tokio's `Elapsed`, `Infallible`, and every seawall layer's error. A client with its own
/// error type implements it in one line, usually with [`classify_error_chain`], or uses a
/// closure classifier instead.
pub trait ClassifyError {
    /// The kind of failure this error is.
    fn failure_kind(&self) -> FailureKind;

    /// How many attempts were made before this error, the first included, when the error
    /// knows (a retry layer's error does, and errors that wrap one pass it on). `None` by
    /// default.
    fn attempts(&self) -> Option<u32> {
        None
    }
}

/// Classifies an error by its [`ClassifyError`] implementation.
pub fn classify_error<E: ClassifyError + ?Sized>(error: &E) -> FailureKind {
    error.failure_kind()
}

impl ClassifyError for tower::BoxError {
    fn failure_kind(&self) -> FailureKind {
        classify_error_chain(self.as_ref())
    }
}

impl ClassifyError for Box<dyn Error + Send> {
    fn failure_kind(&self) -> FailureKind {
        classify_error_chain(self.as_ref())
    }
}

impl ClassifyError for std::convert::Infallible {
    fn failure_kind(&self) -> FailureKind {
        match *self {}
    }
}

macro_rules! classify_by_chain {
    ($($ty:ty),*) => {
        $(impl ClassifyError for $ty {
            fn failure_kind(&self) -> FailureKind {
                classify_error_chain(self)
            }
        })*
    };
}

classify_by_chain!(
    hyper_util::client::legacy::Error,
    hyper::Error,
    io::Error,
    tower::timeout::error::Elapsed,
    tokio::time::error::Elapsed
);

/// Classifies a `dyn Error` by walking its `source()` chain.
///
/// An I/O error kind that alone would mean "never connected" (`ConnectionRefused`,
/// `NotConnected`, `HostUnreachable`, ...) counts as `Connect` only when nothing above it in
/// the chain says the connection was made: under a hyper-util client error that is not a
/// connect error, or under a `hyper::Error` (which hyper raises only on an established
/// connection), the request may have been sent, so the failure is `Transport`.
pub fn classify_error_chain(error: &(dyn Error + 'static)) -> FailureKind {
    classify_chain(error, false)
}

/// Walks the chain; `connected` is set once an error above says the connection was made.
fn classify_chain(error: &(dyn Error + 'static), mut connected: bool) -> FailureKind {
    // A hyper or hyper-util error whose cause is not more precise still means the
    // connection broke under the request.
    let mut fallback = FailureKind::Other;
    let mut current = Some(error);
    // Bounded so that a cyclic or absurdly deep chain cannot spin.
    for _ in 0..32 {
        let Some(err) = current else { break };
        if let Some(e) = err.downcast_ref::<hyper_util::client::legacy::Error>() {
            if e.is_connect() {
                return FailureKind::Connect;
            }
            connected = true;
            fallback = FailureKind::Transport;
        } else if let Some(e) = err.downcast_ref::<hyper::Error>() {
            if e.is_timeout() {
                return FailureKind::Timeout;
            }
            connected = true;
            fallback = FailureKind::Transport;
        } else if err.is::<tower::timeout::error::Elapsed>()
            || err.is::<tokio::time::error::Elapsed>()
        {
            return FailureKind::Timeout;
        } else if let Some(e) = err.downcast_ref::<io::Error>() {
            // `io::Error::source` skips a custom inner error, so look at it first.
            if let Some(inner) = e.get_ref() {
                let inner_kind = classify_chain(inner, connected);
                if inner_kind != FailureKind::Other {
                    return inner_kind;
                }
            }
            return match io_error_kind(e.kind()) {
                FailureKind::Connect if connected => FailureKind::Transport,
                kind => kind,
            };
        }
        current = err.source();
    }
    fallback
}

fn io_error_kind(kind: io::ErrorKind) -> FailureKind {
    use io::ErrorKind::*;
    match kind {
        ConnectionRefused | AddrNotAvailable | NotConnected | HostUnreachable
        | NetworkUnreachable | AddrInUse => FailureKind::Connect,
        TimedOut => FailureKind::Timeout,
        _ => FailureKind::Transport,
    }
}

/// Adapts a tower-http [`ClassifyResponse`](tower_http::classify::ClassifyResponse) to
/// [`Classify`], so an existing tower-http classification can drive the seawall layers.
///
/// A response tower-http calls a failure keeps seawall's finer kind when it has one (5xx,
/// throttled) and is `Failure(Other)` otherwise. Classifiers that need the end of the body
/// cannot decide at the headers, so those responses count as `Success`.
#[cfg(feature = "tower-http")]
#[derive(Debug, Clone, Copy, Default)]
pub struct TowerHttpClassifier<C>(pub C);

#[cfg(feature = "tower-http")]
impl<C, B, E> Classify<Response<B>, E> for TowerHttpClassifier<C>
where
    C: tower_http::classify::ClassifyResponse + Clone,
    E: fmt::Display + ClassifyError + 'static,
{
    fn classify(&self, result: &Result<Response<B>, E>) -> Outcome {
        use tower_http::classify::ClassifiedResponse;
        match result {
            Ok(response) => match self.0.clone().classify_response(response) {
                ClassifiedResponse::Ready(Ok(())) | ClassifiedResponse::RequiresEos(_) => {
                    Outcome::Success
                }
                ClassifiedResponse::Ready(Err(_)) => {
                    match classify_status(response.status(), response.headers()) {
                        failure @ Outcome::Failure(_) => failure,
                        _ => Outcome::Failure(FailureKind::Other),
                    }
                }
            },
            Err(error) => {
                let _ = self.0.clone().classify_error(error);
                Outcome::Failure(classify_error(error))
            }
        }
    }

    fn error_attempts(&self, error: &E) -> Option<u32> {
        error.attempts()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_stable() {
        assert_eq!(Outcome::Success.as_str(), "success");
        assert_eq!(Outcome::Ignored.as_str(), "ignored");
        assert_eq!(
            Outcome::Failure(FailureKind::ServerError).to_string(),
            "server_error"
        );
        assert!(FailureKind::Connect.never_sent());
        assert!(!FailureKind::Transport.never_sent());
    }
}
