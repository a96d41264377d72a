//! Redis killed, hung, restarted or flushed mid-run: each failure policy answers as
//! documented within the timeout, nothing hangs, and admission resumes when Redis is back.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed setup is a failed test"
)]

mod support;

use std::time::Duration;

use seawall_rate_limit::{Decision, RateStore};
use seawall_rate_limit_redis::server::{RedisServer, SilencingProxy};
use seawall_rate_limit_redis::{FailurePolicy, RedisStore};
use support::{HANG, RECHECK, attempt, connection, hung_server, quota, resumes, server, until};
use tokio::time::Instant;

async fn store(server: &RedisServer, policy: FailurePolicy) -> RedisStore {
    RedisStore::builder(&server.url())
        .failure_policy(policy)
        .recheck_after(RECHECK)
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn fail_closed_refuses_while_redis_is_down_and_resumes_when_it_is_back() {
    let Some(server) = server() else { return };
    let port = server.port();
    let store = store(&server, FailurePolicy::FailClosed).await;
    let quotas = [quota(1_000, 100)];
    let slot = store.new_slot(&"closed");
    assert_eq!(
        attempt(&store, &slot, &quotas).await.unwrap(),
        Decision::Admitted
    );

    server.kill().unwrap();
    let error = attempt(&store, &slot, &quotas).await.unwrap_err();
    assert!(error.to_string().contains("Redis"), "{error}");
    let stats = store.stats();
    assert_eq!(stats.errors + stats.timeouts, 1);
    assert_eq!((stats.closed_refused, stats.outages), (1, 1));
    assert!(stats.unavailable);

    // Within the recheck pause the policy answers without a round trip.
    attempt(&store, &slot, &quotas).await.unwrap_err();
    let stats = store.stats();
    assert_eq!(
        (stats.remote_calls, stats.skipped, stats.closed_refused),
        (2, 1, 2)
    );

    let _server = RedisServer::start_on(port).unwrap();
    assert!(
        resumes(&store, &slot, &quotas).await,
        "no admission after Redis came back"
    );
    let stats = store.stats();
    assert!(!stats.unavailable);
    assert_eq!(stats.outages, 1, "one outage, counted once");
}

#[tokio::test]
async fn fail_open_admits_while_redis_is_down() {
    let Some(server) = server() else { return };
    let port = server.port();
    let store = store(&server, FailurePolicy::FailOpen).await;
    let quotas = [quota(1, 1)];
    let slot = store.new_slot(&"open");
    assert_eq!(
        attempt(&store, &slot, &quotas).await.unwrap(),
        Decision::Admitted
    );

    server.kill().unwrap();
    // Redis's quota is spent, but Redis cannot say so: everything goes.
    for _ in 0..3 {
        assert_eq!(
            attempt(&store, &slot, &quotas).await.unwrap(),
            Decision::Admitted
        );
    }
    let stats = store.stats();
    assert_eq!((stats.open_admitted, stats.skipped), (3, 2));

    let _server = RedisServer::start_on(port).unwrap();
    // The restarted Redis is empty, so it admits at once: a fresh burst.
    assert!(resumes(&store, &slot, &quotas).await);
}

#[tokio::test]
async fn fallback_limits_locally_at_its_share_of_the_quota() {
    let Some(server) = server() else { return };
    // A quarter of 40/s with a burst of 8: 10/s with a burst of 2.
    let store = store(&server, FailurePolicy::FallBack { share: 0.25 }).await;
    let quotas = [quota(40, 8)];
    let slot = store.new_slot(&"fallback");
    server.kill().unwrap();

    // The first attempt finds Redis gone; the local limiter answers it and the next two.
    assert_eq!(
        attempt(&store, &slot, &quotas).await.unwrap(),
        Decision::Admitted
    );
    let now = Instant::now();
    let at = |ms| now + Duration::from_millis(ms);
    let decisions = [
        store.acquire(&slot, &quotas, 1, at(0)).await.unwrap(),
        store.acquire(&slot, &quotas, 1, at(0)).await.unwrap(),
    ];
    assert_eq!(decisions[0], Decision::Admitted);
    match decisions[1] {
        Decision::Wait(wait) => assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "one interval of the local 10/s at most: {wait:?}"
        ),
        other => panic!("the local burst of 2 is spent, got {other:?}"),
    }
    let stats = store.stats();
    assert_eq!((stats.fallback_admitted, stats.fallback_refused), (2, 1));
    assert_eq!(stats.remote_admitted, 0);
}

#[tokio::test]
async fn a_redis_that_never_answers_costs_one_timeout_then_the_policy_answers() {
    let url = hung_server();
    let store = RedisStore::builder(&url)
        .timeout(Duration::from_millis(50))
        .recheck_after(Duration::from_secs(60))
        .connect()
        .await
        .unwrap();
    let quotas = [quota(10, 1)];
    let slot = store.new_slot(&"hung");
    let started = std::time::Instant::now();
    let error = attempt(&store, &slot, &quotas).await.unwrap_err();
    assert!(error.to_string().contains("50ms"), "{error}");
    let stats = store.stats();
    assert_eq!(
        (stats.timeouts, stats.errors, stats.closed_refused),
        (1, 0, 1)
    );
    // Every request after it is refused without waiting on the silent server again.
    for _ in 0..100 {
        attempt(&store, &slot, &quotas).await.unwrap_err();
    }
    assert_eq!(store.stats().skipped, 100);
    assert!(started.elapsed() < HANG);
}

#[tokio::test]
async fn admissions_queued_behind_a_hung_call_share_its_one_timeout() {
    let url = hung_server();
    let store = RedisStore::builder(&url)
        .timeout(Duration::from_millis(50))
        .failure_policy(FailurePolicy::FailOpen)
        .connect()
        .await
        .unwrap();
    let quotas = [quota(10, 1)];
    let slot = store.new_slot(&"hung");
    let started = std::time::Instant::now();
    let now = Instant::now();
    // Five go out together; five more queue while that call hangs.
    let mut attempts: Vec<_> = (0..5)
        .map(|_| store.acquire(&slot, &quotas, 1, now))
        .collect();
    until(|| store.stats().remote_calls == 1).await;
    attempts.extend((0..5).map(|_| store.acquire(&slot, &quotas, 1, now)));
    let answers = tokio::time::timeout(HANG, futures::future::join_all(attempts))
        .await
        .expect("an admission attempt hung");
    assert!(
        answers
            .iter()
            .all(|answer| matches!(answer, Ok(Decision::Admitted)))
    );
    let stats = store.stats();
    // One call, one timeout: the five behind it were answered when it failed, unsent.
    assert_eq!(
        (stats.remote_calls, stats.answered_calls, stats.timeouts),
        (1, 0, 1)
    );
    assert_eq!((stats.open_admitted, stats.skipped), (10, 5));
    assert!(started.elapsed() < HANG);
}

#[tokio::test]
async fn script_flush_mid_run_is_survived_transparently() {
    let Some(server) = server() else { return };
    let store = store(&server, FailurePolicy::FailClosed).await;
    let quotas = [quota(1_000, 10)];
    let slot = store.new_slot(&"flushed");
    let mut redis = connection(&server).await;
    for round in 0..3 {
        assert_eq!(
            attempt(&store, &slot, &quotas).await.unwrap(),
            Decision::Admitted
        );
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut redis)
            .await
            .unwrap();
        assert_eq!(
            attempt(&store, &slot, &quotas).await.unwrap(),
            Decision::Admitted,
            "round {round}"
        );
    }
    let stats = store.stats();
    assert_eq!(
        (stats.remote_admitted, stats.errors, stats.timeouts),
        (6, 0, 0)
    );
}

#[test]
fn a_sending_task_dropped_before_it_ran_answers_and_hands_its_key_back() {
    let Some(server) = server() else { return };
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = first.block_on(store(&server, FailurePolicy::FailOpen));
    let quotas = [quota(10, 5)];
    let slot = store.new_slot(&"orphaned");
    // Queued inside the first runtime, whose shutdown drops the key's sending task unpolled.
    let queued = {
        let _inside = first.enter();
        store.acquire(&slot, &quotas, 1, Instant::now())
    };
    drop(first);
    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let answer = second
        .block_on(async { tokio::time::timeout(HANG, queued).await })
        .expect("a queued admission hung after its task was dropped");
    assert_eq!(
        answer.unwrap(),
        Decision::Admitted,
        "the fail-open policy's answer"
    );
    assert_eq!(store.stats().open_admitted, 1);
    // The key was handed back: the next admission starts a task of its own and is answered.
    let again = second
        .block_on(async {
            let attempt = store.acquire(&slot, &quotas, 1, Instant::now());
            tokio::time::timeout(HANG, attempt).await
        })
        .expect("the key stayed stuck");
    assert_eq!(again.unwrap(), Decision::Admitted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_and_restarted_mid_run_resumes_with_the_same_store() {
    let Some(server) = server() else { return };
    let port = server.port();
    let store = store(&server, FailurePolicy::FailClosed).await;
    let quotas = [quota(100, 10)];
    let slot = store.new_slot(&"mid-run");
    let begun = std::time::Instant::now();
    let ms = move || u64::try_from(begun.elapsed().as_millis()).unwrap();
    let over = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let (store, over) = (store.clone(), std::sync::Arc::clone(&over));
        tokio::spawn(async move {
            let (mut admitted, mut refused) = (Vec::new(), Vec::new());
            while !over.load(std::sync::atomic::Ordering::Relaxed) {
                match store.acquire(&slot, &quotas, 1, Instant::now()).await {
                    Ok(Decision::Admitted) => admitted.push(ms()),
                    Ok(Decision::Wait(wait)) => tokio::time::sleep(wait).await,
                    Ok(other) => return Err(format!("answered {other:?}")),
                    Err(_) => {
                        refused.push(ms());
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            Ok((admitted, refused))
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.kill().unwrap();
    let killed_ms = ms();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _server = RedisServer::start_on(port).unwrap();
    let restarted_ms = ms();
    tokio::time::sleep(Duration::from_secs(2)).await;
    over.store(true, std::sync::atomic::Ordering::Relaxed);
    let (admitted, refused) = sender.await.expect("the sender panicked").unwrap();
    let end_ms = ms();

    let last_refused = *refused
        .last()
        .expect("nothing was refused while Redis was down");
    let resumed = admitted
        .iter()
        .copied()
        .find(|&at| at > last_refused)
        .expect("no admission after Redis came back");
    eprintln!(
        "single node: killed at {killed_ms} ms, restarted at {restarted_ms} ms, first refusal \
         at {} ms, admitted again at {resumed} ms ({} ms after the restart)",
        refused[0],
        resumed - restarted_ms
    );
    assert!(
        refused[0] >= killed_ms && last_refused >= restarted_ms.saturating_sub(100),
        "refused from {} ms to {last_refused} ms",
        refused[0]
    );
    assert!(
        resumed >= restarted_ms && resumed - restarted_ms <= 1_000,
        "admission resumed {} ms after the restart",
        resumed - restarted_ms
    );
    // The restarted Redis is empty: a fresh burst, then the rate.
    let after = admitted.iter().filter(|&&at| at >= resumed).count() as u64;
    let earned = 10 + 100 * (end_ms - resumed) / 1_000;
    assert!(
        after <= earned + 1 && after * 100 >= earned * 97,
        "{after} admitted after the restart, {earned} earned"
    );
}

#[tokio::test]
async fn a_connection_gone_silent_is_dropped_after_a_timeout_and_admission_resumes() {
    let Some(server) = server() else { return };
    let proxy = SilencingProxy::start(&server).unwrap();
    let store = RedisStore::builder(proxy.url())
        .timeout(Duration::from_millis(50))
        .failure_policy(FailurePolicy::FailClosed)
        .recheck_after(RECHECK)
        .connect()
        .await
        .unwrap();
    let quotas = [quota(1_000, 1_000)];
    let slot = store.new_slot(&"silenced");
    assert!(matches!(
        attempt(&store, &slot, &quotas).await,
        Ok(Decision::Admitted)
    ));
    assert_eq!(proxy.accepted(), 1);
    proxy.silence();
    // The next call times out on the silent connection; one after the recheck pause goes
    // out on a new connection and is admitted by Redis.
    assert!(resumes(&store, &slot, &quotas).await, "{:?}", store.stats());
    // One timeout, counted as one (whichever of the store's timer and the redis crate's
    // fired first), and no error: the first call after the pause made a new connection.
    let stats = store.stats();
    assert_eq!((stats.timeouts, stats.errors), (1, 0), "{stats:?}");
    assert_eq!(proxy.accepted(), 2);
}

#[test]
fn a_store_outlives_the_runtime_that_made_its_connection() {
    let Some(server) = server() else { return };
    let store = RedisStore::builder(&server.url())
        .failure_policy(FailurePolicy::FailClosed)
        .recheck_after(RECHECK);
    support::outlives_the_runtime_that_made_its_connection(store);
}
