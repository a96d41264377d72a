//! The limiter's figures: totals, and per key the tokens available and the queue depth of a
//! bounded number of keys, read at scrape time.

#![allow(
    clippy::unwrap_used,
    reason = "test fixtures: a bad fixture must fail the test loudly"
)]

use std::future::ready;

use http::{Request, Response};
use seawall_core::FigureSource;
use seawall_rate_limit::RateLimitLayer;
use tower::{Layer, Service, service_fn};

/// The figures of `source` whose name is one of `names`, as `(name, key label, value)`.
fn figures_named(source: &impl FigureSource, names: &[&str]) -> Vec<(String, String, f64)> {
    let mut out = Vec::new();
    source.figures(&mut |figure| {
        if names.contains(&figure.name) {
            let key = figure
                .labels
                .iter()
                .find(|(name, _)| *name == "key")
                .map_or(String::new(), |(_, value)| (*value).to_owned());
            out.push((figure.name.to_owned(), key, figure.value));
        }
    });
    out
}

fn to(host: &str) -> Request<()> {
    Request::builder()
        .uri(format!("http://{host}/"))
        .body(())
        .unwrap()
}

fn upstream()
-> impl Service<Request<()>, Response = Response<()>, Error = std::io::Error, Future: Send> + Clone
{
    service_fn(|_request: Request<()>| ready(Ok::<_, std::io::Error>(Response::new(()))))
}

#[tokio::test(start_paused = true)]
async fn the_most_pressed_keys_report_their_tokens_and_queue() {
    let layer = RateLimitLayer::builder()
        .per_second(1)
        .burst(3)
        .per_host()
        .figure_top_keys(2)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut service = layer.layer(upstream());
    // a: its burst spent and two waiting; b: one of three spent; c: its burst spent, none
    // waiting.
    let mut waiting = Vec::new();
    for _ in 0..3 {
        service.call(to("a.example")).await.unwrap();
        service.call(to("c.example")).await.unwrap();
    }
    service.call(to("b.example")).await.unwrap();
    for _ in 0..2 {
        waiting.push(service.call(to("a.example")));
    }
    let (a, c) = ("http://a.example".to_owned(), "http://c.example".to_owned());

    // At most two keys: a (two waiting) first, then c (no token left) before b (two left).
    assert_eq!(
        figures_named(
            &handle,
            &[
                "seawall_rate_limit_queue_depth",
                "seawall_rate_limit_tokens_available"
            ]
        ),
        [
            (
                "seawall_rate_limit_queue_depth".to_owned(),
                String::new(),
                2.0
            ),
            ("seawall_rate_limit_queue_depth".to_owned(), a.clone(), 2.0),
            ("seawall_rate_limit_queue_depth".to_owned(), c.clone(), 0.0),
            (
                "seawall_rate_limit_tokens_available".to_owned(),
                a.clone(),
                0.0
            ),
            (
                "seawall_rate_limit_tokens_available".to_owned(),
                c.clone(),
                0.0
            ),
        ]
    );

    // Two seconds on, both waiters went (one token each) and c has two tokens back.
    for call in waiting {
        call.await.unwrap();
    }
    assert_eq!(
        figures_named(
            &handle,
            &[
                "seawall_rate_limit_queue_depth",
                "seawall_rate_limit_tokens_available"
            ]
        )
        .into_iter()
        .filter(|(_, key, _)| *key == c)
        .collect::<Vec<_>>(),
        [
            ("seawall_rate_limit_queue_depth".to_owned(), c.clone(), 0.0),
            ("seawall_rate_limit_tokens_available".to_owned(), c, 2.0),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn no_key_series_without_keys_or_when_asked_for_none() {
    let names = [
        "seawall_rate_limit_queue_depth",
        "seawall_rate_limit_tokens_available",
    ];
    let single = RateLimitLayer::builder().per_second(1).build().unwrap();
    let handle = single.handle();
    let mut service = single.layer(upstream());
    service.call(to("a.example")).await.unwrap();
    assert_eq!(
        figures_named(&handle, &names),
        [(
            "seawall_rate_limit_queue_depth".to_owned(),
            String::new(),
            0.0
        )]
    );

    let none = RateLimitLayer::builder()
        .per_second(1)
        .per_host()
        .figure_top_keys(0)
        .build()
        .unwrap();
    let handle = none.handle();
    let mut service = none.layer(upstream());
    service.call(to("a.example")).await.unwrap();
    assert_eq!(
        figures_named(&handle, &names),
        [(
            "seawall_rate_limit_queue_depth".to_owned(),
            String::new(),
            0.0
        )]
    );
}

#[test]
fn figure_top_keys_is_bounded() {
    let error = RateLimitLayer::builder()
        .per_second(1)
        .per_host()
        .figure_top_keys(1_001)
        .build()
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid `figure_top_keys` = 1001: expected an integer from 0 to 1,000"
    );
    assert!(
        RateLimitLayer::builder()
            .per_second(1)
            .per_host()
            .figure_top_keys(1_000)
            .build()
            .is_ok()
    );
}
