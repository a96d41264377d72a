//! A refusal by an open breaker is an `Err` value: it allocates nothing.

use std::alloc::System;
use std::future::Future;
use std::task::{Context, Poll, Waker};

use http::{Request, Response};
use seawall_circuit_breaker::{BreakerError, CircuitBreakerLayer};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::{Layer, Service, service_fn};

/// Counts allocations made by this test binary.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[test]
fn an_open_breaker_refuses_without_allocating() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let layer = CircuitBreakerLayer::builder().build().unwrap();
    layer.handle().force_open(&());
    let mut service = layer.layer(service_fn(|_req: Request<()>| async {
        Ok::<_, std::io::Error>(Response::new(()))
    }));
    let mut cx = Context::from_waker(Waker::noop());
    let requests: Vec<Request<()>> = (0..1_000).map(|_| Request::new(())).collect();

    let region = Region::new(GLOBAL);
    let mut refused = 0;
    for request in requests {
        assert!(service.poll_ready(&mut cx).is_ready());
        let mut future = std::pin::pin!(service.call(request));
        if let Poll::Ready(Err(BreakerError::Open(_))) = future.as_mut().poll(&mut cx) {
            refused += 1;
        }
    }
    let change = region.change();
    assert_eq!(refused, 1_000);
    assert_eq!(
        change.allocations, 0,
        "allocations while refusing 1,000 calls"
    );
}
