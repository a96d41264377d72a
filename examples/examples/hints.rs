//! What seawall-core reads from real upstream answers.
//!
//! Starts a throttling upstream on loopback, calls it with hyper-util's client, and prints how
//! each answer is classified and what it says about when to come back.
//!
//! `cargo run --release -p seawall-examples --example hints`

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use seawall_core::{Classify, HintPolicy, HttpClassifier, ServerHints};
use seawall_examples::{Upstream, respond};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let upstream = Upstream::start(|request: http::Request<_>| async move {
        match request.uri().path() {
            "/ok" => respond(
                200,
                &[
                    ("x-ratelimit-limit", "5000"),
                    ("x-ratelimit-remaining", "4999"),
                    ("x-ratelimit-reset", "60"),
                ],
                "ok",
            ),
            "/throttled" => respond(
                429,
                &[
                    ("retry-after", "2"),
                    ("ratelimit-policy", "\"default\";q=100;w=60"),
                    ("ratelimit", "\"default\";r=0;t=2"),
                ],
                "slow down",
            ),
            "/exhausted" => respond(200, &[("ratelimit", "\"default\";r=0;t=30")], "last one"),
            "/down" => respond(503, &[], "down"),
            "/absurd" => respond(429, &[("retry-after", "99999999")], "absurd"),
            _ => respond(404, &[], "no such path"),
        }
    })
    .await?;

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let policy = HintPolicy::default();
    println!(
        "{:<12} {:>6}  {:<22} {:>10} {:>10} {:>10}",
        "path", "status", "outcome", "pause", "retry in", "remaining"
    );
    for path in [
        "/ok",
        "/throttled",
        "/exhausted",
        "/down",
        "/absurd",
        "/missing",
    ] {
        let result = client.get(upstream.url(path).parse()?).await;
        let outcome = HttpClassifier.classify(&result);
        let response = result?;
        let hints = ServerHints::from_response(&response, &policy);
        println!(
            "{:<12} {:>6}  {:<22} {:>10} {:>10} {:>10}",
            path,
            response.status().as_u16(),
            format!("{outcome:?}"),
            show(hints.pause()),
            show(hints.retry_delay()),
            hints.remaining.map_or("-".to_owned(), |n| n.to_string()),
        );
    }

    // A port nobody listens on: the request never left, so any method may be resent.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let result = client.get(format!("http://{closed}/").parse()?).await;
    println!(
        "{:<12} {:>6}  {:<22}",
        "(closed)",
        "-",
        format!("{:?}", HttpClassifier.classify(&result))
    );
    Ok(())
}

fn show(delay: Option<Duration>) -> String {
    delay.map_or("-".to_owned(), |d| format!("{:.1}s", d.as_secs_f64()))
}
