//! Many single-item lookups merged into calls to a batch endpoint.
//!
//! `cargo run -p seawall-examples --example batch_items`
//!
//! A local server offers `GET /items?ids=1,2,3`, answering a JSON object from id to name.
//! The program looks 200 items up one at a time, as independent parts of an application
//! would; `BatchLayer` merges the lookups that arrive within 5 ms of each other (up to 50)
//! into one call, and hands each lookup its own item, or its own error for an id the server
//! does not know.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use seawall_batch::{BatchError, BatchLayer, BoxError, batch_fn};
use seawall_examples::Upstream;
use tokio::task::JoinSet;
use tower::{Layer, ServiceExt, service_fn};

/// Ids the server knows: 1 to 190.
const KNOWN: u32 = 190;

/// One GET to the batch endpoint, its body read whole.
async fn fetch(
    client: Client<HttpConnector, Empty<Bytes>>,
    request: Request<Empty<Bytes>>,
) -> Result<Bytes, BoxError> {
    let response = client.request(request).await?;
    Ok(response.into_body().collect().await?.to_bytes())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let upstream = Upstream::start(move |request| {
        counted.fetch_add(1, Ordering::SeqCst);
        let ids = request
            .uri()
            .query()
            .and_then(|query| query.strip_prefix("ids="))
            .unwrap_or_default()
            .to_owned();
        async move {
            let found: HashMap<&str, String> = ids
                .split(',')
                .filter(|id| id.parse::<u32>().is_ok_and(|id| (1..=KNOWN).contains(&id)))
                .map(|id| (id, format!("item {id}")))
                .collect();
            let json = serde_json::to_vec(&found).unwrap_or_default();
            Response::new(Full::new(Bytes::from(json)))
        }
    })
    .await?;

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let endpoint = service_fn(move |request| fetch(client.clone(), request));

    let base = upstream.url("/items");
    let layer = BatchLayer::builder(batch_fn(
        // Merge: the ids, in arrival order, as one query.
        move |ids: &[u32]| {
            let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
            Ok(Request::get(format!("{base}?ids={}", ids.join(","))).body(Empty::<Bytes>::new())?)
        },
        // Split: each id's name, or an error for an id the answer leaves out.
        |body: Bytes, ids: &[u32]| match serde_json::from_slice::<HashMap<String, String>>(&body) {
            Ok(mut names) => ids
                .iter()
                .map(|id| {
                    names
                        .remove(&id.to_string())
                        .ok_or_else(|| BoxError::from(format!("no item {id}")))
                })
                .collect(),
            Err(error) => {
                let error = error.to_string();
                ids.iter().map(|_| Err(error.clone().into())).collect()
            }
        },
    ))
    .max_size(50)
    .max_delay(Duration::from_millis(5))
    .build()?;
    let handle = layer.handle();
    let items = layer.layer(endpoint);

    // 200 lookups in four bursts, 20 ms apart.
    let mut lookups = JoinSet::new();
    for burst in 0..4u32 {
        for id in burst * 50 + 1..=burst * 50 + 50 {
            let lookup = items.clone().oneshot(id);
            lookups.spawn(async move { (id, lookup.await) });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (mut found, mut missing) = (0, 0);
    for (id, result) in lookups.join_all().await {
        match result {
            Ok(name) if name == format!("item {id}") => found += 1,
            Ok(name) => return Err(format!("id {id} answered {name}").into()),
            Err(BatchError::Item(_)) if id > KNOWN => missing += 1,
            Err(error) => return Err(error.into()),
        }
    }

    let upstream_calls = calls.load(Ordering::SeqCst);
    println!("200 single lookups: {found} found, {missing} unknown (ids above {KNOWN})");
    println!("upstream calls made: {upstream_calls}");
    println!("{:?}", handle.stats());
    if found != KNOWN || missing != 200 - KNOWN || upstream_calls >= 200 {
        return Err("the lookups were not batched as expected".into());
    }
    Ok(())
}
