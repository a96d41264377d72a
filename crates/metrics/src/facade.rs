//! Recording through the `metrics` facade (feature `metrics-facade`).
//!
//! Every handle is resolved once, when the layer is built, against the recorder installed
//! then; a request only indexes an array and calls the handle: no label hashing, no key
//! allocation per request, whatever the recorder does behind the handle.

use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};

use crate::labels::{METHODS, OUTCOMES, STATUS_CLASSES};

/// Pre-resolved `metrics` handles for every label combination.
pub(crate) struct FacadeHandles {
    requests: Vec<Counter>,
    latency: Vec<Histogram>,
    in_flight: Gauge,
}

impl std::fmt::Debug for FacadeHandles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FacadeHandles").finish_non_exhaustive()
    }
}

impl FacadeHandles {
    /// Resolves every handle against the recorder installed now.
    pub(crate) fn resolve() -> Self {
        let mut requests =
            Vec::with_capacity(METHODS.len() * STATUS_CLASSES.len() * OUTCOMES.len());
        let mut latency = Vec::with_capacity(METHODS.len() * STATUS_CLASSES.len());
        for method in METHODS {
            for status in STATUS_CLASSES {
                latency.push(metrics::histogram!(
                    "seawall_http_client_request_duration_seconds",
                    "http_request_method" => method,
                    "http_response_status_class" => status
                ));
                for outcome in OUTCOMES {
                    requests.push(metrics::counter!(
                        "seawall_http_client_requests_total",
                        "http_request_method" => method,
                        "http_response_status_class" => status,
                        "outcome" => outcome
                    ));
                }
            }
        }
        Self {
            requests,
            latency,
            in_flight: metrics::gauge!("seawall_http_client_requests_in_flight"),
        }
    }

    #[inline]
    pub(crate) fn record(&self, series: usize, outcome_slot: usize, elapsed: Duration) {
        self.requests[outcome_slot].increment(1);
        self.latency[series].record(elapsed.as_secs_f64());
    }

    #[inline]
    pub(crate) fn started(&self) {
        self.in_flight.increment(1.0);
    }

    #[inline]
    pub(crate) fn finished(&self) {
        self.in_flight.decrement(1.0);
    }
}
