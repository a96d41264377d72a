//! Shared pieces of the seawall benchmarks: a no-op upstream and a harness that drives a tower
//! service without an executor, so that every benchmark id pays the same fixed cost and the
//! difference between ids is the middleware's.

use std::future::{Future, Ready, ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use http::{Request, Response};
use tower::Service;

/// The upstream of every layer benchmark: answers `200` at once, allocating nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopUpstream;

impl<B> Service<Request<B>> for NoopUpstream {
    type Response = Response<()>;
    type Error = std::io::Error;
    type Future = Ready<Result<Response<()>, std::io::Error>>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: Request<B>) -> Self::Future {
        ready(Ok(Response::new(())))
    }
}

/// Polls `future` with a no-op waker until it is ready. Every future in these benchmarks
/// completes on its first or second poll; a bounded spin keeps a wrong benchmark from hanging.
pub fn complete<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1_000_000 {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
    }
    // A benchmark whose future never completes is broken; stopping loudly is right here.
    std::process::abort()
}

/// One request through `service`: readiness, call, completion.
///
/// Never inlined, so that every id pays the same call into it and the instruction counts of
/// `instructions.py` can find it, the baseline's included.
#[inline(never)]
pub fn call_once<S, R>(service: &mut S, request: R) -> Result<S::Response, S::Error>
where
    S: Service<R>,
{
    complete(std::future::poll_fn(|cx| service.poll_ready(cx)))?;
    complete(service.call(request))
}

/// Whether a bin was asked for its JSON summary only (`--json`).
pub fn json_only() -> bool {
    std::env::args().any(|arg| arg == "--json")
}

/// A multi-thread runtime with two workers, one per core of the machines these run on.
pub fn two_worker_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}
