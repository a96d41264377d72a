//! Credentials in the Redis URL never reach a `Debug` rendering, an error or a log line.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed setup is a failed test"
)]

mod support;

use std::net::TcpListener;
use std::time::Duration;

use seawall_rate_limit::RateStore;
use seawall_rate_limit_redis::{FailurePolicy, RedisStore};
use support::quota;
use tokio::time::Instant;

const SECRET: &str = "s3cret-pw";

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn assert_redacted(what: &str, text: &str) {
    assert!(!text.contains(SECRET), "{what} shows the password: {text}");
    assert!(
        !text.contains("alice"),
        "{what} shows the user name: {text}"
    );
}

#[tokio::test]
async fn the_builder_and_the_store_never_show_the_urls_credentials() {
    let url = format!("redis://alice:{SECRET}@127.0.0.1:{}/0", closed_port());
    let builder = RedisStore::builder(&url);
    let shown = format!("{builder:?}");
    assert_redacted("the builder's Debug", &shown);
    assert!(
        shown.contains("127.0.0.1"),
        "the host is still shown: {shown}"
    );
    let store = builder.connect().await.unwrap();
    assert_redacted("the store's Debug", &format!("{store:?}"));
}

#[tokio::test]
async fn a_cluster_builder_never_shows_its_nodes_credentials() {
    let url = format!("redis://alice:{SECRET}@127.0.0.1:{}/", closed_port());
    let builder = RedisStore::cluster_builder([url.as_str(), url.as_str()]);
    let shown = format!("{builder:?}");
    assert_redacted("the cluster builder's Debug", &shown);
    assert!(
        shown.contains("127.0.0.1"),
        "the hosts are still shown: {shown}"
    );
    let error = RedisStore::cluster_builder([url.as_str(), "http://alice:s3cret-pw@host/"])
        .connect()
        .await
        .unwrap_err();
    assert_eq!(error.field(), "nodes");
    assert_redacted("the cluster builder's error", &error.to_string());
}

#[tokio::test]
async fn config_errors_about_the_url_never_show_its_credentials() {
    for url in [
        format!("redis://alice:{SECRET}@127.0.0.1:notaport/"),
        format!("http://alice:{SECRET}@127.0.0.1/"),
        format!("alice:{SECRET}@127.0.0.1"),
        format!("redis://alice:{SECRET}@127.0.0.1/not-a-db"),
        format!("redis://127.0.0.1/not-a-db?password={SECRET}&user=alice"),
    ] {
        let error = RedisStore::builder(&url).connect().await.unwrap_err();
        assert_eq!(error.field(), "url");
        assert_redacted("the error", &format!("{error} {error:?}"));
    }
}

#[tokio::test]
async fn store_errors_from_an_unreachable_redis_never_show_the_credentials() {
    let url = format!("redis://alice:{SECRET}@127.0.0.1:{}/", closed_port());
    // Time enough for the refusal to come back as Redis's own error, not a timeout.
    let store = RedisStore::builder(&url)
        .timeout(Duration::from_secs(2))
        .failure_policy(FailurePolicy::FailClosed)
        .connect()
        .await
        .unwrap();
    let quotas = [quota(10, 5)];
    let slot = store.new_slot(&"redacted");
    // The first finds the port closed; the second is refused in the pause after it.
    for attempt in 0..2 {
        let error = store
            .acquire(&slot, &quotas, 1, Instant::now())
            .await
            .unwrap_err();
        let text = format!("{error} {error:?}");
        assert_redacted(&format!("error {attempt}"), &text);
    }
    let stats = store.stats();
    assert_eq!((stats.errors, stats.closed_refused), (1, 2));
}
