//! `seawall::Client` calling an API over HTTPS: the demo's flaky upstream, served with a
//! certificate made for the run and trusted through the client's builder.
//!
//! `cargo run -p seawall-examples --example api_client`
//!
//! One call step by step (query, headers, auth, what the stack did), then 100 calls at once
//! through the same client, whose limiter keeps them under the upstream's quota and whose
//! retries recover its 503s, slow answers and dropped connections, then an idempotent POST.

use std::collections::BTreeMap;
use std::time::Duration;

use seawall_examples::flaky;
use serde::Serialize;

#[derive(Serialize)]
struct NewItem<'a> {
    name: &'a str,
    quantity: u32,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (tls, certificate_pem) = flaky::self_signed_tls()?;
    let upstream = flaky::start(Duration::from_millis(1500), Some(tls)).await?;
    println!("the flaky upstream: {}", upstream.url);

    let stack = seawall::stack()
        .rate_limit(|limit| limit.per_second(50).burst(10))
        .retry(|retry| retry.max_attempts(4))
        .attempt_timeout(Duration::from_millis(500))
        .build()?;
    let api = stack
        .client_builder(&upstream.url)
        .add_root_certificate(&certificate_pem)
        .bearer_auth("demo-token")
        .user_agent("seawall-api-client-example/1")
        .timeout(Duration::from_secs(20))
        .build()?;

    // One call, step by step.
    let response = api
        .get("7")
        .query(&[("fields", "name,price"), ("lang", "fr-CH")])
        .header("x-request-id", "example-1")
        .send()
        .await?
        .error_for_status()?;
    println!(
        "GET {} -> {} over {:?}, {} attempt(s), {:?} in the limiter",
        response.url(),
        response.status(),
        response.version(),
        response.attempts(),
        response.queue_wait(),
    );
    let item: serde_json::Value = response.json().await?;
    println!("  body: {item}");

    // 100 calls at once through the same client: one limiter, one breaker, one budget.
    let calls = (0..100).map(|n| {
        let api = api.clone();
        async move {
            let response = api.get(&n.to_string()).send().await?.error_for_status()?;
            let attempts = response.attempts();
            response.bytes().await?;
            Ok::<u32, seawall::ClientError>(attempts)
        }
    });
    let mut attempts = BTreeMap::new();
    let mut failures = BTreeMap::new();
    for outcome in futures::future::join_all(calls).await {
        match outcome {
            Ok(made) => *attempts.entry(made).or_insert(0) += 1,
            Err(error) => {
                let reason = match error.failure_kind() {
                    Some(kind) => format!("{kind:?}"),
                    None => error.to_string(),
                };
                *failures.entry(reason).or_insert(0) += 1;
            }
        }
    }
    println!("100 calls: succeeded by attempts made {attempts:?}, failed {failures:?}");

    // A POST is retried only with an idempotency key.
    let created: serde_json::Value = api
        .post_json_idempotent(
            "",
            &NewItem {
                name: "bolt",
                quantity: 40,
            },
            "create-bolt-1",
        )
        .await?;
    println!("POST {} -> {created}", api.base_url());

    let limiter = stack.rate_limit().stats();
    println!(
        "the upstream sent {} 429s; the limiter admitted {} ({} after waiting); {} retries",
        upstream
            .throttled
            .load(std::sync::atomic::Ordering::Relaxed),
        limiter.admitted,
        limiter.admitted_after_wait,
        stack.retry().stats().total_retries(),
    );
    Ok(())
}
