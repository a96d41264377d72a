//! Requests over loopback one at a time, on one thread, through one client: the bare
//! hyper-util client, the standard stack over it, or tower-resilience's stack over it (as the
//! `e2e` bin builds them). Made to be counted rather than timed:
//! `python3 crates/bench/instructions.py --wire` runs it under callgrind for each client,
//! counting inside [`measured`] only, and prints the instructions and locked instructions a
//! request executes, client, server and runtime together, and beyond the bare client's.
//! Building the client (the latency clock's calibration among it) and a warm-up of
//! [`WARM_UP`] requests (the connection, the per-host entries) come before.
//!
//! `cargo run --release -p seawall-bench --bin wire -- <bare|seawall|tower_resilience> <requests>`
//!
//! The last line is a JSON object with `client`, `requests` and `answered` (requests whose
//! body was read whole, warm-up included; all of them, or the bin fails).

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use seawall_bench::{CloneableRequest, serve_small_answer, tower_resilience_stack};
use serde_json::json;
use tower::{Layer, Service, ServiceExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Requests sent before the counted ones.
const WARM_UP: u64 = 100;

/// Sends `requests` GETs to `url` through `client`, one at a time, as `e2e`'s tasks do;
/// returns how many were answered with their body read whole.
async fn send<S, B>(client: S, url: &str, requests: u64) -> Result<u64, BoxError>
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>> + Clone,
    B: hyper::body::Body,
{
    let mut answered = 0;
    for _ in 0..requests {
        let request = Request::get(url).body(Empty::new())?;
        if let Ok(response) = client.clone().oneshot(request).await
            && response.into_body().collect().await.is_ok()
        {
            answered += 1;
        }
    }
    Ok(answered)
}

/// Runs `counted`: the only frame callgrind counts in (`--toggle-collect`).
#[inline(never)]
fn measured<T>(counted: impl FnOnce() -> T) -> T {
    counted()
}

/// Warms `client` up, then sends the counted requests; returns how many of all were answered.
fn warm_then_measured<S, B>(
    runtime: &tokio::runtime::Runtime,
    client: S,
    url: &str,
    requests: u64,
) -> Result<u64, BoxError>
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>> + Clone,
    B: hyper::body::Body,
{
    let warm = runtime.block_on(send(client.clone(), url, WARM_UP))?;
    // The runtime's work for the counted requests runs inside `block_on`, so it is counted.
    Ok(warm + measured(|| runtime.block_on(send(client, url, requests)))?)
}

fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: wire <bare|seawall|tower_resilience> <requests>";
    let client = args.next().ok_or(usage)?;
    let requests: u64 = args.next().ok_or(usage)?.parse()?;
    // One thread: the count does not depend on which worker a task was woken on.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let url = runtime.block_on(serve_small_answer())?;
    let _entered = runtime.enter();
    let hyper = || Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let answered = match client.as_str() {
        "bare" => warm_then_measured(&runtime, hyper(), &url, requests)?,
        "seawall" => {
            // As `e2e` builds it: limits far above the load.
            let stack = seawall::stack()
                .rate_limit(|limit| limit.per_second(1_000_000_000).burst(1_000_000))
                .build()?;
            warm_then_measured(
                &runtime,
                stack.hyper_client::<Empty<Bytes>>(),
                &url,
                requests,
            )?
        }
        "tower_resilience" => {
            let stack = tower::util::MapRequestLayer::new(CloneableRequest)
                .layer(tower_resilience_stack(hyper())?);
            warm_then_measured(&runtime, stack, &url, requests)?
        }
        other => return Err(format!("no client {other:?}; {usage}").into()),
    };
    let sent = WARM_UP + requests;
    println!(
        "{}",
        json!({ "client": client, "requests": sent, "answered": answered })
    );
    if answered != sent {
        return Err(format!("{} of {sent} requests were not answered", sent - answered).into());
    }
    Ok(())
}
