//! The store on a Redis Cluster started by the test: the golden table, keys spread over every
//! master with coalescing and leases still per key, and a master killed mid-run (only its
//! keys follow the failure policy, and they resume once its replica has taken over).

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: a failed setup is a failed test"
)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use seawall_rate_limit::{Decision, RateStore};
use seawall_rate_limit_redis::server::{RedisCluster, SilencingProxy};
use seawall_rate_limit_redis::{Clock, FailurePolicy, RedisSlot, RedisStore, RedisStoreBuilder};
use support::{cluster, quota};
use tokio::time::Instant;

/// The clock of the node on `port` (Redis `TIME`), in microseconds.
async fn server_time_us(port: u16) -> u64 {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let (seconds, micros): (u64, u64) = redis::cmd("TIME")
        .query_async(&mut connection)
        .await
        .unwrap();
    seconds * 1_000_000 + micros
}

/// One key of `store` for each master of `cluster`, in the order of `masters`.
fn key_per_master(
    store: &RedisStore,
    cluster: &RedisCluster,
    masters: usize,
) -> Vec<(RedisSlot, u16)> {
    let mut keys: Vec<(RedisSlot, u16)> = Vec::new();
    for n in 0.. {
        let slot = store.new_slot(&format!("key-{n}"));
        let master = cluster.master_of(slot.redis_key()).unwrap();
        if keys.iter().all(|(_, seen)| *seen != master) {
            keys.push((slot, master));
        }
        if keys.len() == masters {
            break;
        }
    }
    keys
}

#[tokio::test]
async fn a_cluster_store_is_built_while_no_node_answers_and_its_policy_answers_meanwhile() {
    let closed = || {
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        format!("redis://127.0.0.1:{port}/")
    };
    let store = RedisStore::cluster_builder([closed(), closed()])
        .failure_policy(FailurePolicy::FailOpen)
        .connect()
        .await
        .unwrap();
    let slot = store.new_slot(&"nobody home");
    let decision = store
        .acquire(&slot, &[quota(1, 1)], 1, Instant::now())
        .await
        .unwrap();
    assert_eq!(decision, Decision::Admitted);
    let stats = store.stats();
    assert_eq!(
        (
            stats.remote_calls,
            stats.errors + stats.timeouts,
            stats.open_admitted
        ),
        (1, 1, 1)
    );
    assert_eq!((stats.outages, stats.unavailable), (1, true));
}

#[tokio::test]
async fn a_store_built_while_one_master_is_down_reaches_the_others_at_once() {
    let Some(mut cluster) = cluster(3, 0) else {
        return;
    };
    let probe = RedisStore::cluster_builder(cluster.urls())
        .connect()
        .await
        .unwrap();
    let dead = key_per_master(&probe, &cluster, 3)[0].1;
    // The dead master's URL first among those the store is given.
    let mut urls = cluster.urls();
    urls.sort_by_key(|url| !url.contains(&format!(":{dead}/")));
    // The store makes its connection on its first call, after the kill.
    let store = RedisStore::cluster_builder(urls)
        .clock(Clock::Local)
        .connect()
        .await
        .unwrap();
    let keys = key_per_master(&store, &cluster, 3);
    assert_eq!(keys[0].1, dead);
    cluster.kill(dead).unwrap();
    let quotas = [quota(100, 10)];
    let now = Instant::now();
    for (slot, _) in &keys[1..] {
        assert_eq!(
            store.acquire(slot, &quotas, 1, now).await.unwrap(),
            Decision::Admitted
        );
    }
    let stats = store.stats();
    assert_eq!(
        (stats.errors, stats.timeouts, stats.remote_admitted),
        (0, 0, 2)
    );
}

#[tokio::test]
async fn the_golden_table_holds_on_a_three_master_cluster() {
    let Some(cluster) = cluster(3, 0) else { return };
    let store = RedisStore::cluster_builder(cluster.urls())
        .clock(Clock::Local)
        .connect()
        .await
        .unwrap();
    support::golden_table_one_trip_a_step(&store).await;
}

/// How many keys the node on `port` holds in the slot of `key`.
async fn keys_in_slot_of(port: u16, key: &str) -> i64 {
    let mut connection = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let slot: i64 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(&mut connection)
        .await
        .unwrap();
    redis::cmd("CLUSTER")
        .arg("COUNTKEYSINSLOT")
        .arg(slot)
        .query_async(&mut connection)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_slot_moving_to_another_master_is_followed_through_ask_and_moved_with_its_state() {
    let Some(cluster) = cluster(3, 0) else { return };
    let store = RedisStore::cluster_builder(cluster.urls())
        .clock(Clock::Local)
        .connect()
        .await
        .unwrap();
    let quotas = [quota(10, 2)];
    let slot = store.new_slot(&"moving");
    let now = Instant::now();
    for _ in 0..2 {
        assert_eq!(
            store.acquire(&slot, &quotas, 1, now).await.unwrap(),
            Decision::Admitted
        );
    }
    let from = cluster.master_of(slot.redis_key()).unwrap();
    // Every node of a cluster without replicas is a master.
    let to = cluster
        .ports()
        .iter()
        .copied()
        .find(|&port| port != from)
        .unwrap();
    // Half-moved: the key is on the new master, the old one still owns the slot and answers
    // ASK; the client asks the new one, where the burst is still spent.
    cluster.migrate_slot_of(slot.redis_key(), to).unwrap();
    assert_eq!(cluster.master_of(slot.redis_key()).unwrap(), from);
    assert_eq!(keys_in_slot_of(from, slot.redis_key()).await, 0);
    assert_eq!(keys_in_slot_of(to, slot.redis_key()).await, 1);
    assert_eq!(
        store.acquire(&slot, &quotas, 1, now).await.unwrap(),
        support::wait_ms(100)
    );
    // Moved: the old master answers MOVED, and the client follows it.
    cluster.move_slot_of(slot.redis_key(), to).unwrap();
    assert_eq!(cluster.master_of(slot.redis_key()).unwrap(), to);
    let later = now + Duration::from_millis(100);
    assert_eq!(
        store.acquire(&slot, &quotas, 1, later).await.unwrap(),
        Decision::Admitted
    );
    assert_eq!(
        store.acquire(&slot, &quotas, 1, later).await.unwrap(),
        support::wait_ms(100)
    );
    let stats = store.stats();
    assert_eq!((stats.errors, stats.timeouts, stats.outages), (0, 0, 0));
    assert_eq!(stats.answered_calls, 5);
}

#[tokio::test]
async fn keys_on_every_master_are_coalesced_and_leased_each_on_its_own() {
    let Some(cluster) = cluster(3, 0) else { return };
    let exact = RedisStore::cluster_builder(cluster.urls())
        .clock(Clock::Local)
        .connect()
        .await
        .unwrap();
    let quotas = [quota(100, 10)];
    let keys = key_per_master(&exact, &cluster, 3);
    let now = Instant::now();
    // Twenty admissions of each key queue before any call is out: one call per key decides
    // its twenty, the burst of ten admitted and the rest told to wait.
    let attempts: Vec<_> = keys
        .iter()
        .flat_map(|(slot, _)| (0..20).map(|_| exact.acquire(slot, &quotas, 1, now)))
        .collect();
    let decisions = futures::future::join_all(attempts).await;
    for (key, decisions) in decisions.chunks(20).enumerate() {
        let admitted = decisions
            .iter()
            .filter(|decision| matches!(decision, Ok(Decision::Admitted)))
            .count();
        let waits = decisions
            .iter()
            .filter(|decision| matches!(decision, Ok(Decision::Wait(_))))
            .count();
        assert_eq!((admitted, waits), (10, 10), "key {key}: {decisions:?}");
    }
    let stats = exact.stats();
    assert_eq!((stats.remote_calls, stats.answered_calls), (3, 3));

    // A lease of 5 per key: each key's first admission leases for that key alone.
    let leasing = RedisStore::cluster_builder(cluster.urls())
        .clock(Clock::Local)
        .prefix("leasing")
        .lease(5)
        .connect()
        .await
        .unwrap();
    let keys = key_per_master(&leasing, &cluster, 3);
    for (slot, _) in &keys {
        // The third leaves two of the four leased tokens: no refill yet.
        for _ in 0..3 {
            assert_eq!(
                leasing.acquire(slot, &quotas, 1, now).await.unwrap(),
                Decision::Admitted
            );
        }
    }
    let stats = leasing.stats();
    assert_eq!(
        (
            stats.remote_calls,
            stats.remote_admitted,
            stats.lease_admitted
        ),
        (3, 3, 6),
        "one round trip per key; its two other admissions spend that key's lease"
    );
    assert_eq!(stats.leased_tokens, 12);
}

const RATE: u32 = 100;
const BURST: u32 = 10;
const RUN: Duration = Duration::from_secs(8);
const KILL_AT: Duration = Duration::from_secs(2);
const RECHECK: Duration = Duration::from_millis(100);
const LEASE: u32 = 10;

/// What one key's sender saw, in milliseconds since the run began.
#[derive(Debug, Default)]
struct Seen {
    admitted: Vec<u64>,
    failed: Vec<u64>,
}

impl Seen {
    /// The longest time between two admissions (and from the last to `end_ms`).
    fn longest_gap_ms(&self, end_ms: u64) -> u64 {
        let mut gap = 0;
        let mut last = 0;
        for &at in self.admitted.iter().chain([&end_ms]) {
            gap = gap.max(at - last);
            last = at;
        }
        gap
    }
}

/// Asks for one token of `slot` as fast as the quota allows until `over`, waiting as told
/// and pausing 10 ms after a refusal by the failure policy.
async fn send(
    store: RedisStore,
    slot: RedisSlot,
    begun: std::time::Instant,
    over: Arc<AtomicBool>,
) -> Seen {
    let quotas = [quota(RATE, BURST)];
    let mut seen = Seen::default();
    let ms = || u64::try_from(begun.elapsed().as_millis()).unwrap();
    while !over.load(Ordering::Relaxed) {
        match store.acquire(&slot, &quotas, 1, Instant::now()).await {
            Ok(Decision::Admitted) => seen.admitted.push(ms()),
            Ok(Decision::Wait(wait)) => tokio::time::sleep(wait).await,
            Ok(other) => panic!("a quota of {RATE}/s answered {other:?}"),
            Err(_) => {
                seen.failed.push(ms());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_fails_only_its_own_keys_and_they_resume_once_its_replica_takes_over() {
    let Some(mut cluster) = cluster(3, 1) else {
        return;
    };
    // A timeout well above a loaded machine's stalls: a refusal must come from the kill.
    let store = RedisStore::cluster_builder(cluster.urls())
        .timeout(Duration::from_millis(250))
        .recheck_after(RECHECK)
        .connect()
        .await
        .unwrap();
    let keys = key_per_master(&store, &cluster, 3);
    let killed = keys[0].1;
    // A leasing store's key on the same master: its pool may run ahead of the quota by one
    // lease, and no further.
    let leasing = RedisStore::cluster_builder(cluster.urls())
        .prefix("leasing")
        .lease(LEASE)
        .timeout(Duration::from_millis(250))
        .recheck_after(RECHECK)
        .connect()
        .await
        .unwrap();
    let (leased_key, _) = key_per_master(&leasing, &cluster, 3)
        .into_iter()
        .find(|(_, master)| *master == killed)
        .unwrap();
    // The live masters' own clocks, which their scripts' GCRA runs on: their keys are held to
    // what those clocks say passed (a loaded machine's wall clock, which Redis reads, need
    // not keep step with the test's monotonic one).
    let live: Vec<u16> = keys.iter().skip(1).map(|(_, master)| *master).collect();
    let mut live_began = Vec::new();
    for &master in &live {
        live_began.push(server_time_us(master).await);
    }
    let begun = std::time::Instant::now();
    let over = Arc::new(AtomicBool::new(false));
    let leased_sender = tokio::spawn(send(leasing.clone(), leased_key, begun, Arc::clone(&over)));
    let senders: Vec<_> = keys
        .into_iter()
        .map(|(slot, _)| tokio::spawn(send(store.clone(), slot, begun, Arc::clone(&over))))
        .collect();
    tokio::time::sleep(KILL_AT).await;
    cluster.kill(killed).unwrap();
    let kill_ms = u64::try_from(begun.elapsed().as_millis()).unwrap();
    tokio::time::sleep(RUN.saturating_sub(begun.elapsed())).await;
    over.store(true, Ordering::Relaxed);
    let mut seen = Vec::new();
    for sender in senders {
        seen.push(sender.await.expect("a sender panicked"));
    }
    let leased = leased_sender.await.expect("a sender panicked");
    let end_ms = u64::try_from(begun.elapsed().as_millis()).unwrap();

    let allowed = u64::from(BURST) + u64::from(RATE) * end_ms / 1_000 + 1;
    for (key, seen) in seen.iter().enumerate().skip(1) {
        assert_eq!(
            seen.failed, [0_u64; 0],
            "key {key} lives on a master still up"
        );
        let master = live[key - 1];
        let span_us = server_time_us(master).await - live_began[key - 1];
        let allowed = u64::from(BURST) + u64::from(RATE) * span_us / 1_000_000 + 1;
        let admitted = seen.admitted.len() as u64;
        assert!(
            admitted <= allowed && admitted * 100 >= allowed * 98,
            "key {key}: {admitted} admitted in {span_us} µs of its master's clock, the quota \
             allows {allowed}"
        );
    }
    let affected = &seen[0];
    let first_failure = affected.failed.first().copied().unwrap();
    let last_failure = affected.failed.last().copied().unwrap();
    let resumed = affected
        .admitted
        .iter()
        .copied()
        .find(|&at| at > last_failure)
        .expect("the killed master's key never resumed");
    let gap = affected.longest_gap_ms(end_ms);
    let admitted = affected.admitted.len() as u64;
    eprintln!(
        "failover: master killed at {kill_ms} ms; its key first refused at {first_failure} ms, \
         last refused at {last_failure} ms, admitted again at {resumed} ms \
         ({} ms after the kill); longest time without an admission {gap} ms; \
         {} refusals; {admitted} admitted of {allowed} allowed in {end_ms} ms",
        resumed - kill_ms,
        affected.failed.len(),
    );
    assert!(first_failure >= kill_ms, "no failure before the kill");
    assert!(gap <= 10_000, "the key went {gap} ms without an admission");
    assert!(
        admitted <= allowed,
        "{admitted} admitted, the quota allows {allowed}: the failover doubled admissions"
    );
    // Once back, the key runs at its full rate again: nothing of its quota was lost.
    let after = affected
        .admitted
        .iter()
        .filter(|&&at| at >= resumed)
        .count() as u64;
    let earned = u64::from(RATE) * (end_ms - resumed) / 1_000;
    assert!(
        after * 100 >= earned * 98,
        "{after} admitted in the {} ms after the failover, {earned} earned",
        end_ms - resumed
    );
    let leased_admitted = leased.admitted.len() as u64;
    let leased_last_failure = leased.failed.last().copied().unwrap();
    eprintln!(
        "failover with lease({LEASE}): first refused at {} ms, admitted again at {} ms; \
         {leased_admitted} admitted of {allowed} allowed",
        leased.failed[0],
        leased
            .admitted
            .iter()
            .find(|&&at| at > leased_last_failure)
            .expect("the leasing key never resumed"),
    );
    assert!(
        leased_admitted <= allowed + u64::from(LEASE),
        "{leased_admitted} admitted with lease({LEASE}), the quota allows {allowed} plus one lease"
    );
    let stats = store.stats();
    assert_eq!(
        stats.closed_refused,
        affected.failed.len() as u64,
        "every refusal was the failure policy's, for the killed master's key"
    );
}

/// A three-master cluster with its first master reached only through a proxy that can
/// silence it (as a NAT or a load balancer that dropped its flows would, or a host gone
/// without a reset), a fail-closed store on it, and one key per master with the master's
/// announced port (the proxy's for the first).
async fn store_with_a_proxied_master() -> Option<(
    RedisCluster,
    SilencingProxy,
    RedisStore,
    Vec<(RedisSlot, u16)>,
)> {
    let cluster = cluster(3, 0)?;
    let proxy = cluster.proxy_node(cluster.ports()[0]).unwrap();
    let store = fail_closed(&cluster).connect().await.unwrap();
    let keys = key_per_master(&store, &cluster, 3);
    Some((cluster, proxy, store, keys))
}

/// A fail-closed store on `cluster`, with a timeout long enough for a busy machine and the
/// outage tests' recheck pause.
fn fail_closed(cluster: &RedisCluster) -> RedisStoreBuilder {
    RedisStore::cluster_builder(cluster.urls())
        .timeout(Duration::from_millis(250))
        .failure_policy(FailurePolicy::FailClosed)
        .recheck_after(support::RECHECK)
        .clock(Clock::Local)
}

/// Six rounds, each a call for every key at once (the other masters' calls in flight while
/// the gone master's is) and a recheck pause: the keys of the master on `gone` are refused
/// by the failure policy, the others admitted by Redis.
async fn every_key_at_once_for_six_rounds(
    store: &RedisStore,
    keys: &[(RedisSlot, u16)],
    gone: u16,
) {
    let quotas = [quota(1_000, 1_000)];
    for round in 0..6 {
        let answers = futures::future::join_all(
            keys.iter()
                .map(|(slot, _)| support::attempt(store, slot, &quotas)),
        )
        .await;
        for ((_, port), answer) in keys.iter().zip(answers) {
            if *port == gone {
                assert!(answer.is_err(), "round {round}: {answer:?}");
            } else {
                assert_eq!(answer.unwrap(), Decision::Admitted, "round {round}");
            }
        }
        tokio::time::sleep(support::RECHECK).await;
    }
}

#[tokio::test]
async fn a_master_s_connection_gone_silent_is_remade_and_the_other_masters_keep_answering() {
    let Some((_cluster, proxy, store, keys)) = store_with_a_proxied_master().await else {
        return;
    };
    let silent = keys.iter().position(|(_, port)| *port == proxy.port());
    let silent = &keys[silent.unwrap()].0;
    let quotas = [quota(1_000, 1_000)];
    for (slot, _) in &keys {
        assert_eq!(
            support::attempt(&store, slot, &quotas).await.unwrap(),
            Decision::Admitted
        );
    }
    // Through the proxy: the cluster connection's to that master, and the check, on a
    // connection of its own, that the master answers.
    assert_eq!(proxy.accepted(), 2);
    proxy.silence();
    // The silent master's key times out; a new cluster connection is made in the
    // background, and a call after it took the old one's place is admitted by Redis.
    assert!(
        support::resumes(&store, silent, &quotas).await,
        "{:?}",
        store.stats()
    );
    // One new cluster connection, and its check.
    assert_eq!(proxy.accepted(), 4);
    // The other masters answered throughout and answer still.
    for (slot, port) in &keys {
        if *port != proxy.port() {
            assert_eq!(
                support::attempt(&store, slot, &quotas).await.unwrap(),
                Decision::Admitted
            );
        }
    }
    // A timeout or two (one more if a call came before the new connection was in place),
    // no error, and every admission Redis's.
    let stats = store.stats();
    assert!(stats.timeouts >= 1, "{stats:?}");
    assert_eq!((stats.errors, stats.remote_admitted), (0, 6), "{stats:?}");
}

#[tokio::test]
async fn a_master_gone_for_good_fails_only_its_own_keys_while_a_new_connection_is_tried() {
    let Some((_cluster, proxy, store, keys)) = store_with_a_proxied_master().await else {
        return;
    };
    let quotas = [quota(1_000, 1_000)];
    for (slot, _) in &keys {
        assert_eq!(
            support::attempt(&store, slot, &quotas).await.unwrap(),
            Decision::Admitted
        );
    }
    // Its flows and every new connection to it stay silent, so each new cluster connection
    // waits out its connection timeout and lacks it.
    proxy.silence_all();
    every_key_at_once_for_six_rounds(&store, &keys, proxy.port()).await;
    let stats = store.stats();
    assert_eq!(stats.remote_admitted, 3 + 6 * 2, "{stats:?}");
}

#[tokio::test]
async fn a_store_whose_first_connection_meets_a_master_gone_serves_the_others() {
    let Some((_cluster, proxy, store, keys)) = store_with_a_proxied_master().await else {
        return;
    };
    // Gone before the store's first call: the first connection is made without it, after
    // waiting out its connection timeout (as long as a call's).
    proxy.silence_all();
    let quotas = [quota(1_000, 1_000)];
    let (first, _) = keys.iter().find(|(_, port)| *port != proxy.port()).unwrap();
    assert!(
        support::resumes(&store, first, &quotas).await,
        "{:?}",
        store.stats()
    );
    every_key_at_once_for_six_rounds(&store, &keys, proxy.port()).await;
    let stats = store.stats();
    assert_eq!(stats.remote_admitted, 1 + 6 * 2, "{stats:?}");
}

#[test]
fn a_cluster_store_outlives_the_runtime_that_made_its_connection() {
    let Some(cluster) = cluster(3, 0) else { return };
    support::outlives_the_runtime_that_made_its_connection(fail_closed(&cluster));
}
