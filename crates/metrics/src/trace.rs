//! Spans per logical request and per attempt, named and attributed as OpenTelemetry's HTTP
//! client span conventions say.
//!
//! Both are `INFO` spans of target `seawall`, named `http.client.request` (the logical
//! request) and `http.client.attempt` (each physical request), with `otel.name` set to the
//! method and `otel.kind = "client"` for an OpenTelemetry bridge. When no subscriber is
//! interested, making one is the callsite's cached interest check and nothing else: no field
//! is computed, nothing is allocated.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use http::{Request, Uri};
use tracing::Span;
use tracing::field::Empty;

use crate::labels::METHODS;

/// The attempts of one logical request, counted so that each attempt's span carries its
/// `http.request.resend_count`. Put in the request's extensions by the logical layer only
/// when its span is recorded; the retry layer copies extensions to every attempt.
#[derive(Debug, Clone, Default)]
pub(crate) struct AttemptCount(Arc<AtomicU32>);

/// Query keys whose values OpenTelemetry's conventions say to record as `REDACTED`
/// (matched case-sensitively): signatures and keys of signed URLs.
const SENSITIVE_QUERY_KEYS: [&str; 4] = ["AWSAccessKeyId", "Signature", "sig", "X-Goog-Signature"];

/// `url.full` as OpenTelemetry records it: without user information, and with the values of
/// the sensitive query keys replaced by `REDACTED` (the keys kept).
fn url_full(uri: &Uri) -> String {
    let sensitive = |pair: &str| {
        let key = pair.split_once('=').map_or(pair, |(key, _)| key);
        SENSITIVE_QUERY_KEYS.contains(&key)
    };
    let redacting = uri
        .query()
        .is_some_and(|query| query.split('&').any(sensitive));
    let credentials = uri
        .authority()
        .is_some_and(|authority| authority.as_str().contains('@'));
    if !(redacting || credentials) {
        return uri.to_string();
    }
    let mut url = String::new();
    if let Some(scheme) = uri.scheme_str() {
        url.push_str(scheme);
        url.push_str("://");
    }
    if let Some(authority) = uri.authority() {
        let authority = authority.as_str();
        url.push_str(
            authority
                .rsplit_once('@')
                .map_or(authority, |(_, host)| host),
        );
    }
    url.push_str(uri.path());
    if let Some(query) = uri.query() {
        url.push('?');
        for (index, pair) in query.split('&').enumerate() {
            if index > 0 {
                url.push('&');
            }
            match pair.split_once('=') {
                Some((key, _)) if sensitive(pair) => {
                    url.push_str(key);
                    url.push_str("=REDACTED");
                }
                _ => url.push_str(pair),
            }
        }
    }
    url
}

/// Records the request's attributes on a span that a subscriber wants.
fn record_request<B>(span: &Span, request: &Request<B>) {
    span.record("url.full", url_full(request.uri()).as_str());
    if let Some(host) = request.uri().host() {
        span.record("server.address", host);
    }
    let port = request
        .uri()
        .port_u16()
        .or_else(|| seawall_core::key::default_port(request.uri().scheme()));
    if let Some(port) = port {
        span.record("server.port", port);
    }
}

/// The span of a logical request; when recorded, the request also gets an [`AttemptCount`].
#[inline]
pub(crate) fn request_span<B>(request: &mut Request<B>, method: usize) -> Span {
    let span = tracing::info_span!(
        target: "seawall",
        "http.client.request",
        otel.name = METHODS[method],
        otel.kind = "client",
        http.request.method = METHODS[method],
        url.full = Empty,
        server.address = Empty,
        server.port = Empty,
        http.response.status_code = Empty,
        error.type = Empty,
    );
    if !span.is_disabled() {
        record_request(&span, request);
        request.extensions_mut().insert(AttemptCount::default());
    }
    span
}

/// The span of one attempt.
#[inline]
pub(crate) fn attempt_span<B>(request: &Request<B>, method: usize) -> Span {
    let span = tracing::info_span!(
        target: "seawall",
        "http.client.attempt",
        otel.name = METHODS[method],
        otel.kind = "client",
        http.request.method = METHODS[method],
        url.full = Empty,
        server.address = Empty,
        server.port = Empty,
        http.request.resend_count = Empty,
        http.response.status_code = Empty,
        error.type = Empty,
    );
    if !span.is_disabled() {
        record_request(&span, request);
        if let Some(count) = request.extensions().get::<AttemptCount>() {
            let resends = count.0.fetch_add(1, Ordering::Relaxed);
            // OpenTelemetry: set on resends only.
            if resends > 0 {
                span.record("http.request.resend_count", resends);
            }
        }
    }
    span
}

/// Records how a call ended: the status code (and `error.type` for 4xx and 5xx), or the
/// error's type.
pub(crate) fn record_end(span: &Span, status: Option<http::StatusCode>, error_type: &str) {
    if span.is_disabled() {
        return;
    }
    match status {
        Some(status) => {
            span.record("http.response.status_code", status.as_u16());
            if status.as_u16() >= 400 {
                span.record("error.type", status.as_str());
            }
        }
        None => {
            span.record("error.type", error_type);
        }
    }
}
