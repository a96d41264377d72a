//! Requests recorded from many threads at once, each starting on one thread and finishing on
//! another: the figures are added up exactly.

#![allow(
    clippy::unwrap_used,
    reason = "helpers of a test: a failure should stop it"
)]

use std::convert::Infallible;

use http::{Request, Response};
use seawall_metrics::MetricsLayer;
use tower::{Layer, ServiceExt, service_fn};

#[test]
fn figures_from_eight_threads_add_up_exactly() {
    let layer = MetricsLayer::builder().build().unwrap();
    let service = layer.layer(service_fn(|request: Request<u32>| async move {
        let status = if request.into_body().is_multiple_of(4) {
            503
        } else {
            200
        };
        Ok::<_, Infallible>(Response::builder().status(status).body(()).unwrap())
    }));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .build()
        .unwrap();
    let responses = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..8)
            .map(|thread| {
                let service = service.clone();
                let runtime = &runtime;
                scope.spawn(move || {
                    // Started here, polled to the end on the runtime's workers: each request
                    // is counted in flight on one thread and finished on another.
                    let calls = (0..5_000u32).map(|i| {
                        let future = service.clone().oneshot(Request::new(thread * 5_000 + i));
                        runtime.spawn(future)
                    });
                    let handles: Vec<_> = calls.collect();
                    runtime.block_on(async {
                        let mut responses = Vec::with_capacity(handles.len());
                        for handle in handles {
                            responses.push(handle.await.unwrap().unwrap());
                        }
                        responses
                    })
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|thread| thread.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert_eq!(layer.snapshot().in_flight, 40_000, "no body dropped yet");
    drop(responses);
    let snapshot = layer.snapshot();
    assert_eq!(snapshot.total, 40_000);
    assert_eq!(snapshot.in_flight, 0);
    let count = |outcome| {
        snapshot
            .by_outcome
            .iter()
            .find(|(name, _)| *name == outcome)
            .unwrap()
            .1
    };
    assert_eq!(count("success"), 30_000);
    assert_eq!(count("server_error"), 10_000);
}
