//! The Redis store decides exactly as the in-process one: the golden table, several quotas,
//! per-key state, key names and TTLs, leases.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed setup is a failed test"
)]

mod support;

use std::time::Duration;

use seawall_core::{ByHost, KeyExtractor};
use seawall_rate_limit::{Decision, RateStore};
use seawall_rate_limit_redis::RedisStore;
use support::{ask, connection, local_clock, quota, server, wait_ms};
use tokio::time::Instant;

#[tokio::test]
async fn the_golden_table_holds_against_redis() {
    let Some(server) = server() else { return };
    let store = local_clock(&server).connect().await.unwrap();
    support::golden_table_one_trip_a_step(&store).await;
}

#[tokio::test]
async fn the_window_golden_table_holds_against_redis() {
    let Some(server) = server() else { return };
    let store = local_clock(&server).connect().await.unwrap();
    support::window_golden_table_one_trip_a_step(&store).await;
}

#[tokio::test]
async fn every_quota_must_admit_and_a_refusal_takes_nothing() {
    let Some(server) = server() else { return };
    let store = local_clock(&server).connect().await.unwrap();
    let quotas = [quota(10, 5), quota(2, 2)];
    let slot = store.new_slot(&"two quotas");
    let start = Instant::now();
    assert_eq!(
        ask(&store, &slot, &quotas, 1, start, 0).await,
        Decision::Admitted
    );
    assert_eq!(
        ask(&store, &slot, &quotas, 1, start, 0).await,
        Decision::Admitted
    );
    // The slow quota refuses; the fast one keeps its tokens.
    assert_eq!(ask(&store, &slot, &quotas, 1, start, 0).await, wait_ms(500));
    assert_eq!(
        ask(&store, &slot, &quotas, 1, start, 400).await,
        wait_ms(100)
    );
    // Neither refusal took a token from the fast quota: its TAT is still 200 ms on, the slow
    // one's 1 s (in microseconds; the hash's fields are the quotas in order).
    let mut redis = connection(&server).await;
    let tats: Vec<f64> = redis::cmd("HMGET")
        .arg(format!("{}:quotas", slot.redis_key()))
        .arg(&["1", "2"])
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(tats[1] - tats[0], 800_000.0);
    assert_eq!(
        ask(&store, &slot, &quotas, 1, start, 500).await,
        Decision::Admitted
    );
    assert_eq!(
        ask(&store, &slot, &quotas, 1, start, 500).await,
        wait_ms(500)
    );
}

#[tokio::test]
async fn keys_are_named_with_a_hash_tag_and_expire_once_refilled() {
    let Some(server) = server() else { return };
    let store = local_clock(&server)
        .prefix("fleet")
        .connect()
        .await
        .unwrap();
    let request = http::Request::get("http://API.example:80/v1")
        .body(())
        .unwrap();
    let key = ByHost.extract_from(&request);
    let slot = store.new_slot(&key);
    assert_eq!(slot.redis_key(), "fleet:{0d9124653e935e6f11e03f939b85e9fa}");

    let quotas = [quota(10, 3)];
    let start = Instant::now();
    assert_eq!(
        ask(&store, &slot, &quotas, 2, start, 0).await,
        Decision::Admitted
    );
    let mut redis = connection(&server).await;
    let ttl: i64 = redis::cmd("PTTL")
        .arg(slot.redis_key())
        .query_async(&mut redis)
        .await
        .unwrap();
    // Two tokens of 100 ms: the burst is whole again 200 ms on, and the key goes with it.
    assert!((190..=201).contains(&ttl), "PTTL {ttl} ms");
}

#[tokio::test]
async fn one_key_spent_leaves_another_untouched() {
    let Some(server) = server() else { return };
    let store = local_clock(&server).connect().await.unwrap();
    let quotas = [quota(1, 1)];
    let (a, b) = (store.new_slot(&"host a"), store.new_slot(&"host b"));
    let start = Instant::now();
    assert_eq!(
        ask(&store, &a, &quotas, 1, start, 0).await,
        Decision::Admitted
    );
    assert_eq!(ask(&store, &a, &quotas, 1, start, 0).await, wait_ms(1_000));
    assert_eq!(
        ask(&store, &b, &quotas, 1, start, 0).await,
        Decision::Admitted
    );
}

#[tokio::test]
async fn two_stores_on_one_redis_share_one_quota() {
    let Some(server) = server() else { return };
    // Two connections and two stores, as two processes would have, on Redis's clock.
    let first = RedisStore::builder(&server.url()).connect().await.unwrap();
    let second = RedisStore::builder(&server.url()).connect().await.unwrap();
    let quotas = [quota(10, 2)];
    let (slot_1, slot_2) = (first.new_slot(&"shared"), second.new_slot(&"shared"));
    let now = Instant::now();
    assert_eq!(
        first.acquire(&slot_1, &quotas, 1, now).await.unwrap(),
        Decision::Admitted
    );
    assert_eq!(
        second.acquire(&slot_2, &quotas, 1, now).await.unwrap(),
        Decision::Admitted
    );
    for (store, slot) in [(&first, &slot_1), (&second, &slot_2)] {
        match store.acquire(slot, &quotas, 1, now).await.unwrap() {
            Decision::Wait(wait) => assert!(wait <= Duration::from_millis(100), "{wait:?}"),
            other => panic!("the shared burst of 2 is spent, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_server_clock_times_the_quota_by_default() {
    let Some(server) = server() else { return };
    let store = RedisStore::builder(&server.url()).connect().await.unwrap();
    let quotas = [quota(10, 3)];
    let slot = store.new_slot(&"server clock");
    let now = Instant::now();
    for _ in 0..3 {
        assert_eq!(
            store.acquire(&slot, &quotas, 1, now).await.unwrap(),
            Decision::Admitted
        );
    }
    // The burst is spent: the next token is at most one interval away on Redis's clock,
    // whatever instant this process passes.
    let later = now + Duration::from_secs(3_600);
    match store.acquire(&slot, &quotas, 1, later).await.unwrap() {
        Decision::Wait(wait) => assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        ),
        other => panic!("expected a wait, got {other:?}"),
    }
}

#[tokio::test]
async fn a_lease_takes_tokens_in_one_round_trip_and_spends_them_locally() {
    let Some(server) = server() else { return };
    let store = local_clock(&server).lease(10).connect().await.unwrap();
    let quotas = [quota(100, 20)];
    let slot = store.new_slot(&"leased");
    let start = Instant::now();
    for _ in 0..20 {
        assert_eq!(
            ask(&store, &slot, &quotas, 1, start, 0).await,
            Decision::Admitted
        );
    }
    let stats = store.stats();
    assert_eq!(stats.remote_calls, 2, "two leases of 10");
    assert_eq!(stats.lease_admitted, 18);
    assert_eq!(stats.leased_tokens, 18);
    // Redis's burst of 20 went in two leases; the 21st waits one interval.
    assert_eq!(ask(&store, &slot, &quotas, 1, start, 0).await, wait_ms(10));
    // A lease is capped by the burst: at 50 ms five tokens have come back, and are leased.
    assert_eq!(
        ask(&store, &slot, &quotas, 1, start, 50).await,
        Decision::Admitted
    );
    assert_eq!(
        store.peek(&slot, &quotas, 4, start + Duration::from_millis(50)),
        Some(Duration::ZERO)
    );
    assert_eq!(
        store.peek(&slot, &quotas, 5, start + Duration::from_millis(50)),
        None
    );
    assert_eq!(store.stats().leased_tokens, 22);
}

#[tokio::test]
async fn leased_tokens_lapse_after_the_time_they_took_to_earn() {
    let Some(server) = server() else { return };
    let store = local_clock(&server).lease(5).connect().await.unwrap();
    let start = Instant::now();
    let at = |ms| start + Duration::from_millis(ms);
    // Five tokens at 1/s take 5 s to earn: the lease lasts that long.
    let slow = [quota(1, 5)];
    let slot = store.new_slot(&"slow");
    assert_eq!(
        ask(&store, &slot, &slow, 1, start, 0).await,
        Decision::Admitted
    );
    assert_eq!(store.peek(&slot, &slow, 4, at(4_999)), Some(Duration::ZERO));
    assert_eq!(store.peek(&slot, &slow, 1, at(5_000)), None);
    // Five tokens at 100/s take 50 ms; a lease lasts a second at least.
    let fast = [quota(100, 5)];
    let slot = store.new_slot(&"fast");
    assert_eq!(
        ask(&store, &slot, &fast, 1, start, 0).await,
        Decision::Admitted
    );
    assert_eq!(store.peek(&slot, &fast, 4, at(999)), Some(Duration::ZERO));
    assert_eq!(store.peek(&slot, &fast, 1, at(1_000)), None);
}

#[tokio::test]
async fn bad_configs_name_their_field() {
    let url = "redis://127.0.0.1:1/";
    let cases = [
        (RedisStore::builder("http://not-redis"), "url"),
        (RedisStore::builder(url).prefix(""), "prefix"),
        (RedisStore::builder(url).prefix("a{b}"), "prefix"),
        (RedisStore::builder(url).timeout(Duration::ZERO), "timeout"),
        (
            RedisStore::builder(url).timeout(Duration::from_secs(11)),
            "timeout",
        ),
        (
            RedisStore::builder(url).recheck_after(Duration::ZERO),
            "recheck_after",
        ),
        (
            RedisStore::builder(url)
                .failure_policy(seawall_rate_limit_redis::FailurePolicy::FallBack { share: 0.0 }),
            "failure_policy",
        ),
        (
            RedisStore::builder(url).failure_policy(
                seawall_rate_limit_redis::FailurePolicy::FallBack { share: f64::NAN },
            ),
            "failure_policy",
        ),
        (RedisStore::builder(url).lease(1), "lease"),
        (RedisStore::builder(url).lease(70_000), "lease"),
        (RedisStore::builder(url).max_pending(0), "max_pending"),
        (
            RedisStore::builder(url).max_pending(10_000_001),
            "max_pending",
        ),
        (RedisStore::cluster_builder([""; 0]), "nodes"),
        (
            RedisStore::cluster_builder([url, "http://not-redis"]),
            "nodes",
        ),
        (RedisStore::cluster_builder([url]).lease(1), "lease"),
    ];
    for (builder, field) in cases {
        let error = builder.connect().await.unwrap_err();
        assert_eq!(error.field(), field, "{error}");
    }
}

/// The name of the Redis key a store with prefix `fleet` gives `key`.
async fn name_of(key: &dyn std::fmt::Debug) -> String {
    let store = RedisStore::builder("redis://127.0.0.1:1/")
        .prefix("fleet")
        .connect()
        .await
        .unwrap();
    store.new_slot(key).redis_key().to_owned()
}

#[tokio::test]
async fn distinct_keys_never_share_a_redis_key() {
    // Pairs that rendered alike when braces were swapped for parentheses (to keep the hash
    // tag whole): each pair would have shared one quota.
    for (a, b) in [("a{b", "a(b"), ("a}b", "a)b"), ("{x}", "(x)"), ("}{", ")(")] {
        assert_ne!(name_of(&a).await, name_of(&b).await, "{a:?} and {b:?}");
    }
    // A key spelled as another key's rendering, quotes and all, is still another key.
    assert_ne!(name_of(&"\"x\"").await, name_of(&"x").await);
    // Every name keeps one hash tag, so a limiter's keys stay on one Cluster slot.
    for key in ["a{b", "}{", "plain"] {
        let name = name_of(&key).await;
        assert_eq!(name.matches('{').count(), 1, "{name}");
        assert_eq!(name.matches('}').count(), 1, "{name}");
        assert!(name.starts_with("fleet:{") && name.ends_with('}'), "{name}");
    }
}

#[tokio::test]
async fn key_names_are_stable_and_carry_no_key_in_cleartext() {
    let request = http::Request::get("http://API.example:80/v1")
        .body(())
        .unwrap();
    let host = ByHost.extract_from(&request);
    // Golden names: a change here moves every fleet's quota state to new keys.
    // (The first 32 hex digits of the SHA-256 of `HostKey("http://api.example")` and of
    // `"tenant-42"`, quotes included: their `Debug` renderings.)
    assert_eq!(
        name_of(&host).await,
        "fleet:{0d9124653e935e6f11e03f939b85e9fa}"
    );
    assert_eq!(
        name_of(&"tenant-42").await,
        "fleet:{e1694e2a99a2e5ee9ce40f989efb83d7}"
    );
    // A key carrying a secret (a caller keying by API token, say) is not spelled out.
    let name = name_of(&"Bearer sk-live-hunter2").await;
    assert!(
        !name.contains("hunter2") && !name.contains("Bearer"),
        "{name}"
    );
}
