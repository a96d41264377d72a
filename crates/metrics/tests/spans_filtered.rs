//! With a subscriber installed that filters the spans out (as a `warn` level filter does),
//! the layers make no span and add nothing to the request. A test binary of its own: the
//! interest of tracing's callsites is shared by every subscriber of a process.

#![allow(
    clippy::unwrap_used,
    reason = "helpers of a test: a failure should stop it"
)]

use std::io;

use http::{Request, Response};
use seawall_metrics::MetricsLayer;
use tower::{Layer, ServiceExt, service_fn};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};

/// Interested in warnings and errors only, and in no span.
struct WarningsOnly;

impl Subscriber for WarningsOnly {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if self.enabled(metadata) {
            Interest::always()
        } else {
            Interest::never()
        }
    }
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.is_event() && *metadata.level() <= tracing::Level::WARN
    }
    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::WARN)
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        unreachable!("no span is enabled")
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[tokio::test]
async fn a_subscriber_that_filters_spans_out_gets_none_and_the_request_stays_as_it_was() {
    let _default = tracing::subscriber::set_default(WarningsOnly);
    let metrics = MetricsLayer::builder()
        .exemplars(|| unreachable!("no span is recorded, so no trace id is asked for"))
        .build()
        .unwrap();
    let attempts = metrics
        .attempts()
        .layer(service_fn(|request: Request<()>| async move {
            // The logical layer adds its attempt counter only for a recorded span.
            assert!(request.extensions().is_empty());
            assert!(tracing::Span::current().is_disabled());
            Ok::<_, io::Error>(Response::new(String::new()))
        }));
    let response = metrics
        .layer(attempts)
        .oneshot(Request::get("http://api.test/").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(metrics.snapshot().total, 1);
    assert!(!metrics.encode().contains(" # {"));
}
