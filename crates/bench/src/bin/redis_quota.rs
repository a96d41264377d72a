//! The Redis store against Redis itself: admissions per second and their latency, a lease's
//! speed-up, and how far leases let a fleet run ahead of its quota.
//!
//! `cargo run --release -p seawall-bench --bin redis_quota -- --json`
//!
//! Starts its own `redis-server` on a free port. Each throughput figure is `CONCURRENCY`
//! tasks on one connection for `MEASURE`:
//! - `raw_evalsha_per_sec`: a script that only returns 1, sent the same way the store sends
//!   its own (`EVALSHA` on a connection manager with the store's timeouts), one call each.
//! - `exact_admissions_per_sec`, `exact_p99_us`: the store's admissions (one round trip
//!   each) on one key with a quota that never binds, and the 99th percentile of their latency;
//!   `exact_admissions_per_call`: how many admissions each script call carried on average
//!   (the store coalesces a key's admissions that queue while its previous call is out).
//! - `lease_admissions_per_sec`: the same with `lease(LEASE)`.
//! - `cross_process_over_admission`: `PROCESSES` OS processes with `lease(CROSS_LEASE)` share
//!   100/s (burst 10) for `CROSS_RUN`; the most admissions in any 1 s window beyond what the
//!   quota allows in one (burst + 100), against the documented bound `lease × processes`
//!   (`over_admission_bound`).
//! - `cluster_exact_admissions_per_sec`, `cluster_exact_p99_us`, `cluster_lease_admissions_per_sec`:
//!   the exact and lease figures again on a Redis Cluster of three masters (one key, so one
//!   master serves it; the point is what the cluster client costs), and
//!   `cluster_exact_vs_exact`, their ratio to the single node's exact figure in the same run.
//! - `failover_gap_s`: on a cluster of three masters with a replica each, one task admitting
//!   on one key (fail-closed, `recheck_after` 100 ms) while the key's master is killed; the
//!   longest time the key went without an admission, until its replica had taken over.
//!
//! The last line is the JSON object.

use std::future::ready;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{Request, Response};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use seawall_rate_limit::{Decision, Quota, RateLimitLayer, RateStore};
use seawall_rate_limit_redis::RedisStore;
use seawall_rate_limit_redis::server::{RedisCluster, RedisServer};
use serde_json::json;
use tower::{ServiceBuilder, ServiceExt, service_fn};

const CONCURRENCY: usize = 64;
const MEASURE: Duration = Duration::from_secs(3);
const LEASE: u32 = 1_000;
const PROCESSES: usize = 4;
const CROSS_LEASE: u32 = 10;
const CROSS_RATE: u32 = 100;
const CROSS_BURST: u32 = 10;
const CROSS_RUN: Duration = Duration::from_secs(5);
const WINDOW: Duration = Duration::from_secs(1);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|arg| arg == "--worker") {
        let (url, start) = (&args[at + 1], args[at + 2].parse()?);
        return worker(url, start);
    }
    let json_only = args.iter().any(|arg| arg == "--json");
    let server = RedisServer::start()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (raw, exact, lease) = runtime.block_on(async {
        let raw = raw_evalsha(&server.url()).await?;
        let exact = admissions(RedisStore::builder(&server.url()), true).await?;
        let lease = admissions(RedisStore::builder(&server.url()).lease(LEASE), false).await?;
        Ok::<_, BoxError>((raw, exact, lease))
    })?;
    let (exact, exact_p99_us, exact_per_call) = (exact.rate, exact.p99_us, exact.per_call);
    let lease = lease.rate;
    let over = cross_process(&server.url())?;
    drop(server);
    let (cluster_exact, cluster_lease) = {
        let cluster = RedisCluster::start(3, 0)?;
        runtime.block_on(async {
            let exact = admissions(RedisStore::cluster_builder(cluster.urls()), true).await?;
            let lease = admissions(
                RedisStore::cluster_builder(cluster.urls()).lease(LEASE),
                false,
            )
            .await?;
            Ok::<_, BoxError>((exact, lease))
        })?
    };
    let failover_gap = {
        let mut cluster = RedisCluster::start(3, 1)?;
        runtime.block_on(failover_gap(&mut cluster))?
    };
    let cluster_exact_p99_us = cluster_exact.p99_us;
    let (cluster_exact, cluster_lease) = (cluster_exact.rate, cluster_lease.rate);
    let bound = u64::from(CROSS_LEASE) * PROCESSES as u64;
    let summary = json!({
        "raw_evalsha_per_sec": raw.round(),
        "exact_admissions_per_sec": exact.round(),
        "exact_p99_us": exact_p99_us,
        "exact_admissions_per_call": (exact_per_call * 10.0).round() / 10.0,
        "lease_admissions_per_sec": lease.round(),
        "cross_process_over_admission": over,
        "over_admission_bound": bound,
        "exact_vs_raw": (exact / raw * 1000.0).round() / 1000.0,
        "lease_vs_exact": (lease / exact * 10.0).round() / 10.0,
        "cluster_exact_admissions_per_sec": cluster_exact.round(),
        "cluster_exact_p99_us": cluster_exact_p99_us,
        "cluster_lease_admissions_per_sec": cluster_lease.round(),
        "cluster_exact_vs_exact": (cluster_exact / exact * 1000.0).round() / 1000.0,
        "failover_gap_s": (failover_gap.as_secs_f64() * 1000.0).round() / 1000.0,
        "concurrency": CONCURRENCY,
        "seconds": MEASURE.as_secs(),
        "lease": LEASE,
        "processes": PROCESSES,
        "cross_lease": CROSS_LEASE,
    });
    if !json_only {
        println!("raw EVALSHA            {raw:>12.0} /s");
        println!(
            "exact admissions       {exact:>12.0} /s  (p99 {exact_p99_us} µs, {exact_per_call:.1} per call)"
        );
        println!("lease({LEASE}) admissions {lease:>12.0} /s");
        println!(
            "over-admission ({PROCESSES} processes, lease {CROSS_LEASE}): {over} (bound {bound})"
        );
        println!(
            "cluster exact          {cluster_exact:>12.0} /s  (p99 {cluster_exact_p99_us} µs)"
        );
        println!("cluster lease({LEASE})   {cluster_lease:>12.0} /s");
        println!(
            "failover gap           {:>12.3} s",
            failover_gap.as_secs_f64()
        );
    }
    println!("{summary}");
    Ok(())
}

/// Runs `CONCURRENCY` copies of `call` for `MEASURE`; returns calls per second and, when
/// `timed`, every call's latency in microseconds. The end is a flag set by a timer, so that an
/// untimed run reads no clock per call: at millions of calls per second the harness's own
/// clock reads would be a large share of what is measured.
async fn saturate<F, Fut>(call: F, timed: bool) -> Result<(f64, Vec<u64>), BoxError>
where
    F: Fn() -> Fut + Clone + 'static,
    Fut: Future<Output = Result<(), BoxError>>,
{
    let start = Instant::now();
    let over = Arc::new(AtomicBool::new(false));
    let timer = {
        let over = Arc::clone(&over);
        tokio::spawn(async move {
            tokio::time::sleep(MEASURE).await;
            over.store(true, Ordering::Relaxed);
        })
    };
    let tasks = (0..CONCURRENCY).map(|_| {
        let (call, over) = (call.clone(), Arc::clone(&over));
        async move {
            let mut calls = 0_u64;
            let mut latencies = Vec::with_capacity(if timed { 1 << 16 } else { 0 });
            while !over.load(Ordering::Relaxed) {
                if timed {
                    let begun = Instant::now();
                    call().await?;
                    latencies.push(u64::try_from(begun.elapsed().as_micros()).unwrap_or(u64::MAX));
                } else {
                    call().await?;
                }
                calls += 1;
            }
            Ok::<_, BoxError>((calls, latencies))
        }
    });
    let mut calls = 0;
    let mut latencies = Vec::new();
    for task in futures::future::join_all(tasks).await {
        let (n, mut each) = task?;
        calls += n;
        latencies.append(&mut each);
    }
    timer.await?;
    let rate = calls as f64 / start.elapsed().as_secs_f64();
    Ok((rate, latencies))
}

async fn raw_evalsha(url: &str) -> Result<f64, BoxError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(50)))
        .set_response_timeout(Some(Duration::from_millis(50)));
    let connection = ConnectionManager::new_with_config(redis::Client::open(url)?, config).await?;
    let script = Arc::new(redis::Script::new("return 1"));
    let (rate, _) = saturate(
        move || {
            let (script, mut connection) = (Arc::clone(&script), connection.clone());
            async move {
                let one: i64 = script.invoke_async(&mut connection).await?;
                assert_eq!(one, 1);
                Ok(())
            }
        },
        false,
    )
    .await?;
    Ok(rate)
}

/// What one run of [`admissions`] measured.
struct Admissions {
    rate: f64,
    p99_us: u64,
    per_call: f64,
}

async fn admissions(
    builder: seawall_rate_limit_redis::RedisStoreBuilder,
    timed: bool,
) -> Result<Admissions, BoxError> {
    let store = Arc::new(builder.connect().await?);
    let figures = Arc::clone(&store);
    // A quota that never binds at these rates: every attempt is an admission.
    let quotas: Arc<[Quota]> = Arc::new([Quota::per_second(1_000_000_000)?.burst(1_000_000)?]);
    let slot = Arc::new(store.new_slot(&"bench"));
    let (rate, mut latencies) = saturate(
        move || {
            let (store, slot, quotas) =
                (Arc::clone(&store), Arc::clone(&slot), Arc::clone(&quotas));
            async move {
                let now = tokio::time::Instant::now();
                match store.acquire(&slot, &quotas, 1, now).await? {
                    Decision::Admitted => Ok(()),
                    other => Err(format!("the quota should not bind: {other:?}").into()),
                }
            }
        },
        timed,
    )
    .await?;
    latencies.sort_unstable();
    let p99_us = latencies
        .get(latencies.len().saturating_mul(99) / 100)
        .copied()
        .unwrap_or(0);
    let stats = figures.stats();
    let per_call = stats.remote_admitted as f64 / stats.remote_calls.max(1) as f64;
    Ok(Admissions {
        rate,
        p99_us,
        per_call,
    })
}

/// How long one key goes without an admission while its master is killed and a replica takes
/// over: one task admits as fast as a quota of 1,000/s allows, the master is killed after a
/// second, and the run ends at the first admission after the failover (or after 30 s).
async fn failover_gap(cluster: &mut RedisCluster) -> Result<Duration, BoxError> {
    let store = RedisStore::cluster_builder(cluster.urls())
        .recheck_after(Duration::from_millis(100))
        .connect()
        .await?;
    let quotas = [Quota::per_second(1_000)?.burst(100)?];
    let slot = store.new_slot(&"failover");
    let master = cluster.master_of(slot.redis_key())?;
    let begun = Instant::now();
    let mut last = Instant::now();
    let mut killed = None;
    let mut gap = Duration::ZERO;
    let mut failed_since_kill = false;
    while begun.elapsed() < Duration::from_secs(30) {
        if killed.is_none() && begun.elapsed() >= Duration::from_secs(1) {
            cluster.kill(master)?;
            killed = Some(Instant::now());
        }
        match store
            .acquire(&slot, &quotas, 1, tokio::time::Instant::now())
            .await
        {
            Ok(Decision::Admitted) => {
                gap = gap.max(last.elapsed());
                last = Instant::now();
                if failed_since_kill {
                    return Ok(gap);
                }
            }
            Ok(Decision::Wait(wait)) => tokio::time::sleep(wait).await,
            Ok(other) => return Err(format!("a quota of 1,000/s answered {other:?}").into()),
            Err(_) => {
                failed_since_kill |= killed.is_some();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    Err("the key never resumed after its master was killed".into())
}

fn epoch_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
        })
}

/// Runs the worker processes and returns the largest excess of any 1 s window over the
/// quota's allowance for one.
fn cross_process(url: &str) -> Result<i64, BoxError> {
    let start = epoch_micros() + 2_000_000;
    let workers = (0..PROCESSES)
        .map(|_| {
            Command::new(std::env::current_exe()?)
                .args(["--worker", url, &start.to_string()])
                .stdout(Stdio::piped())
                .spawn()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut admitted = Vec::new();
    for worker in workers {
        let output = worker.wait_with_output()?;
        if !output.status.success() {
            return Err(format!("a worker failed: {:?}", output.status).into());
        }
        let stdout = String::from_utf8(output.stdout)?;
        let line = stdout.lines().last().unwrap_or_default();
        for at in line.split(',').filter(|s| !s.is_empty()) {
            admitted.push(at.parse::<u64>()?);
        }
    }
    admitted.sort_unstable();
    let window = u64::try_from(WINDOW.as_micros())?;
    let mut most = 0;
    let mut first = 0;
    for last in 0..admitted.len() {
        while admitted[last] - admitted[first] >= window {
            first += 1;
        }
        most = most.max(last - first + 1);
    }
    let allowed = CROSS_BURST + CROSS_RATE * u32::try_from(WINDOW.as_secs())?;
    Ok(i64::try_from(most)? - i64::from(allowed))
}

/// One process of the fleet: sends through a leasing Redis-backed limiter from `start` (µs
/// since the epoch) for `CROSS_RUN` and prints when each request reached the upstream.
fn worker(url: &str, start: u64) -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let end = start + u64::try_from(CROSS_RUN.as_micros())?;
    let admitted = Arc::new(Mutex::new(Vec::new()));
    runtime.block_on(async {
        let store = RedisStore::builder(url)
            .lease(CROSS_LEASE)
            .connect()
            .await?;
        let layer = RateLimitLayer::builder()
            .per_second(CROSS_RATE)
            .burst(CROSS_BURST)
            .wait(CROSS_LEASE as usize, Duration::from_secs(60))
            .store(store)
            .build_with_store()?;
        let log = Arc::clone(&admitted);
        let upstream = service_fn(move |_request: Request<()>| {
            let now = epoch_micros();
            if now < end {
                log.lock().map(|mut log| log.push(now)).ok();
            }
            ready(Ok::<_, std::io::Error>(Response::new(())))
        });
        let client = ServiceBuilder::new().layer(layer).service(upstream);
        tokio::time::sleep(Duration::from_micros(start.saturating_sub(epoch_micros()))).await;
        let senders = (0..CROSS_LEASE).map(|_| {
            let client = client.clone();
            async move {
                while epoch_micros() < end {
                    if client.clone().oneshot(Request::new(())).await.is_err() {
                        break;
                    }
                }
            }
        });
        let left = Duration::from_micros(end.saturating_sub(epoch_micros()));
        let _ = tokio::time::timeout(left, futures::future::join_all(senders)).await;
        Ok::<_, BoxError>(())
    })?;
    let admitted = admitted.lock().map_err(|_| "the log was poisoned")?;
    let line: Vec<String> = admitted.iter().map(u64::to_string).collect();
    println!("{}", line.join(","));
    Ok(())
}
