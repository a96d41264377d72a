//! One limiter serving callers on two tokio runtimes, one of which shuts down while the
//! other's callers wait: the queue's timer of the runtime that is gone is never touched again.

#![allow(
    clippy::unwrap_used,
    reason = "helpers of a test: a failure should stop it"
)]

use std::future::ready;
use std::time::Duration;

use futures::FutureExt;
use http::{Request, Response};
use seawall_rate_limit::RateLimitLayer;
use tower::{Layer, Service, service_fn};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_waiter_outlives_the_runtime_that_armed_the_queues_timer() {
    // Two a second: the second request finds the token spent even if the machine stalls this
    // test for most of half a second between the first two calls (at 1,000 a second, a
    // millisecond's stall on a loaded machine let it through and failed the test).
    let layer = RateLimitLayer::builder().per_second(2).build().unwrap();
    let mut service = layer.layer(service_fn(|_: Request<()>| {
        ready(Ok::<_, std::io::Error>(Response::new(())))
    }));
    let (first, second) = (runtime(), runtime());

    // On the first runtime: one request takes the token, the next waits at the head and arms
    // the queue's timer there.
    let mut head = {
        let _inside = first.enter();
        let admitted = service.call(Request::new(())).now_or_never();
        admitted.expect("the first is admitted at once").unwrap();
        let mut head = Box::pin(service.call(Request::new(())));
        assert!((&mut head).now_or_never().is_none(), "the second must wait");
        head
    };
    // On the second runtime: a caller queues behind it and is polled once.
    let mut behind = {
        let _inside = second.enter();
        let mut behind = Box::pin(service.call(Request::new(())));
        assert!(
            (&mut behind).now_or_never().is_none(),
            "the third must wait"
        );
        behind
    };
    // Back on the first: the head is admitted, and its hand-off arms the queue's timer, on the
    // first runtime, for the caller behind. Then the first runtime goes away.
    first.block_on(async { (&mut head).await.unwrap() });
    drop(head);
    drop(first);

    // The caller behind is still admitted, on its own runtime, at its slot.
    let admitted =
        second.block_on(async { tokio::time::timeout(Duration::from_secs(5), &mut behind).await });
    admitted.expect("the waiter hung").unwrap();
}
