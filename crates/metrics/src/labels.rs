//! The bounded label sets of the request figures, and the index of each value.
//!
//! Every request figure lives in a fixed array indexed by these positions, so recording is
//! an index computation and an atomic add: no label hashing, no allocation.

use http::{Method, StatusCode};
use seawall_core::{FailureKind, Outcome};

/// `http_request_method` values: the common methods, and `_OTHER` (the OpenTelemetry
/// convention) for any other, so that a client cannot create series by inventing methods.
pub const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "_OTHER",
];

/// `http_response_status_class` values; `none` when there was no response (an error or a
/// cancelled request).
pub const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

/// `outcome` values: the seawall-core outcomes, and `cancelled` for a request dropped before
/// its response arrived.
pub const OUTCOMES: [&str; 10] = [
    "success",
    "connect",
    "timeout",
    "transport",
    "server_error",
    "throttled",
    "rejected",
    "other",
    "ignored",
    "cancelled",
];

/// The position of `outcome` in [`OUTCOMES`]: `cancelled`.
pub(crate) const CANCELLED: usize = 9;
/// The position of `none` in [`STATUS_CLASSES`].
pub(crate) const NO_STATUS: usize = 5;

#[inline]
pub(crate) fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::PATCH => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

#[inline]
pub(crate) fn status_index(status: StatusCode) -> usize {
    match status.as_u16() {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        500..=599 => 4,
        _ => NO_STATUS,
    }
}

#[inline]
pub(crate) fn outcome_index(outcome: Outcome) -> usize {
    match outcome {
        Outcome::Success => 0,
        // `OUTCOMES` lists the failure kinds in `FailureKind::ALL`'s order after `success`.
        Outcome::Failure(kind) => 1 + kind.index(),
        Outcome::Ignored => 1 + FailureKind::ALL.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_point_at_their_labels() {
        assert_eq!(METHODS[method_index(&Method::PATCH)], "PATCH");
        assert_eq!(
            METHODS[method_index(&Method::from_bytes(b"PURGE").unwrap())],
            "_OTHER"
        );
        assert_eq!(STATUS_CLASSES[status_index(StatusCode::IM_A_TEAPOT)], "4xx");
        assert_eq!(
            OUTCOMES[outcome_index(Outcome::Failure(FailureKind::Throttled))],
            "throttled"
        );
        assert_eq!(OUTCOMES[outcome_index(Outcome::Ignored)], "ignored");
        assert_eq!(OUTCOMES[CANCELLED], "cancelled");
        for kind in FailureKind::ALL {
            assert_eq!(
                OUTCOMES[outcome_index(Outcome::Failure(kind))],
                kind.as_str()
            );
        }
        assert_eq!(STATUS_CLASSES[NO_STATUS], "none");
    }
}
