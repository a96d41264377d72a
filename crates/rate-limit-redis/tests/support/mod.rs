//! What the Redis store's tests share: a store on a throwaway server, exact instants, and a
//! direct connection for looking at what the script left in Redis.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: a failed setup is a failed test"
)]

use std::io::Write;
use std::time::Duration;

use seawall_rate_limit::{Decision, Quota, RateStore, StoreError};
use seawall_rate_limit_redis::server::{RedisCluster, RedisServer};
use seawall_rate_limit_redis::{Clock, RedisSlot, RedisStore, RedisStoreBuilder};
use tokio::time::Instant;

/// The pause after a failed call before a key asks Redis again, in the outage tests.
pub(crate) const RECHECK: Duration = Duration::from_millis(100);
/// Far beyond any timeout here: an attempt still pending by then has hung.
pub(crate) const HANG: Duration = Duration::from_secs(5);

/// One admission of one token on `slot`, which must end within `HANG`.
pub(crate) async fn attempt(
    store: &RedisStore,
    slot: &RedisSlot,
    quotas: &[Quota],
) -> Result<Decision, StoreError> {
    tokio::time::timeout(HANG, store.acquire(slot, quotas, 1, Instant::now()))
        .await
        .expect("an admission attempt hung")
}

/// Asks again after each recheck pause until Redis itself admits; false if it never does
/// within `HANG`.
pub(crate) async fn resumes(store: &RedisStore, slot: &RedisSlot, quotas: &[Quota]) -> bool {
    let since = std::time::Instant::now();
    while since.elapsed() < HANG {
        tokio::time::sleep(RECHECK).await;
        let before = store.stats().remote_admitted;
        let _ = attempt(store, slot, quotas).await;
        if store.stats().remote_admitted > before {
            return true;
        }
    }
    false
}

/// A throwaway `redis-server` on a free port, or `None` when this machine has no
/// `redis-server`: the test then says so on the terminal and passes, unless it runs under CI
/// (`CI=true`), where a missing binary fails it.
pub(crate) fn server() -> Option<RedisServer> {
    match RedisServer::start() {
        Ok(server) => Some(server),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound && !under_ci() => {
            // Straight to the terminal: the test harness hides what a passing test prints.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {}: {error}; install that package to run it",
                std::thread::current().name().unwrap_or("a Redis test"),
            );
            None
        }
        Err(error) => panic!("{error}"),
    }
}

/// A throwaway Redis Cluster of `masters` masters with `replicas` replicas each on free
/// ports, or `None` (said on the terminal) when this machine has no `redis-server` or
/// `redis-cli` and the tests do not run under CI.
pub(crate) fn cluster(masters: usize, replicas: usize) -> Option<RedisCluster> {
    match RedisCluster::start(masters, replicas) {
        Ok(cluster) => Some(cluster),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound && !under_ci() => {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {}: {error}; install that package to run it",
                std::thread::current().name().unwrap_or("a Redis test"),
            );
            None
        }
        Err(error) => panic!("{error}"),
    }
}

/// Whether the tests run under CI, where nothing may be skipped.
pub(crate) fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true")
}

/// A builder for a store on `server` timed by the instants the test gives (exact answers).
pub(crate) fn local_clock(server: &RedisServer) -> RedisStoreBuilder {
    RedisStore::builder(&server.url()).clock(Clock::Local)
}

pub(crate) fn quota(per_second: u32, burst: u32) -> Quota {
    Quota::per_second(per_second).unwrap().burst(burst).unwrap()
}

/// Asks `store` for `cost` tokens of `slot` at `start + at_ms`.
pub(crate) async fn ask<St: RateStore>(
    store: &St,
    slot: &St::Slot,
    quotas: &[Quota],
    cost: u32,
    start: Instant,
    at_ms: u64,
) -> Decision {
    store
        .acquire(slot, quotas, cost, start + Duration::from_millis(at_ms))
        .await
        .unwrap()
}

pub(crate) fn wait_ms(ms: u64) -> Decision {
    Decision::Wait(Duration::from_millis(ms))
}

/// A plain connection to `server`, to look at or disturb it from outside the store.
pub(crate) async fn connection(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url().as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Yields until `done` holds; the tasks it waits on are driven by Redis's answers.
pub(crate) async fn until(mut done: impl FnMut() -> bool) {
    let since = std::time::Instant::now();
    while !done() {
        assert!(since.elapsed() < Duration::from_secs(5), "never happened");
        tokio::task::yield_now().await;
    }
}

/// The URL of a server that accepts connections and never says a word, as a hung Redis would.
pub(crate) fn hung_server() -> String {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let url = format!("redis://{}/", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().collect();
        drop(held);
    });
    url
}

/// Runs the GCRA golden table against `store` (timed by the table's own instants, so nothing
/// moves its clock) and checks it took one round trip a step, but for the oversize one, and
/// met no error.
pub(crate) async fn golden_table_one_trip_a_step(store: &RedisStore) {
    seawall_rate_limit::conformance::run_golden_table(store, |_| async {})
        .await
        .unwrap();
    let stats = store.stats();
    assert_eq!(
        stats.remote_calls, 18,
        "one round trip per step but the oversize one"
    );
    assert_eq!((stats.errors, stats.timeouts), (0, 0));
}

/// Runs the window golden table against `store`, as [`golden_table_one_trip_a_step`] runs
/// the GCRA one.
pub(crate) async fn window_golden_table_one_trip_a_step(store: &RedisStore) {
    seawall_rate_limit::conformance::run_window_golden_table(store, |_| async {})
        .await
        .unwrap();
    let stats = store.stats();
    assert_eq!(
        stats.remote_calls, 12,
        "one round trip per step but the oversize one"
    );
    assert_eq!((stats.errors, stats.timeouts), (0, 0));
}

/// Admits once through the store `builder` makes, on a runtime of its own that is then
/// dropped, and asks on another runtime until Redis admits again: as a user's test suite
/// does with one store and a runtime per test.
pub(crate) fn outlives_the_runtime_that_made_its_connection(builder: RedisStoreBuilder) {
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let quotas = [quota(1_000, 1_000)];
    let (store, slot) = runtime().block_on(async {
        let store = builder.connect().await.unwrap();
        let slot = store.new_slot(&"outliving");
        assert_eq!(
            attempt(&store, &slot, &quotas).await.unwrap(),
            Decision::Admitted
        );
        (store, slot)
    });
    // That runtime is gone, and with it the tasks that drove the connection.
    runtime().block_on(async {
        assert!(resumes(&store, &slot, &quotas).await, "{:?}", store.stats());
    });
}
