//! The cache over the rest of the stack: stale-if-error while a real circuit breaker below
//! is open, against a hyper server on 127.0.0.1; and the Redis store shared by two caches
//! (as by two processes) on a throwaway `redis-server`.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "a failed setup is a failed test"
)]

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use seawall_cache::{CacheLayer, CacheStatus, RedisStore};
use seawall_circuit_breaker::{BreakerError, CircuitBreakerLayer, State};
use seawall_examples::{Upstream, respond};
use seawall_rate_limit_redis::server::RedisServer;
use tower::{ServiceBuilder, ServiceExt, service_fn};

fn get(url: &str) -> Request<Empty<Bytes>> {
    Request::get(url).body(Empty::new()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_stale_answer_stands_in_while_the_breaker_below_is_open() {
    // The server answers its first call per path, then fails with 503s.
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let server = Upstream::start(move |request| {
        let call = counted.fetch_add(1, Ordering::SeqCst);
        async move {
            match (request.uri().path(), call) {
                ("/fresh", _) => respond(200, &[("cache-control", "max-age=3600")], "fresh"),
                ("/item", 0) => respond(
                    200,
                    &[("cache-control", "max-age=10, stale-if-error=300")],
                    "v1",
                ),
                _ => respond(503, &[], "unavailable"),
            }
        }
    })
    .await
    .unwrap();

    let breaker = CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .open_duration(Duration::from_secs(3600))
        .build()
        .unwrap();
    let breaker_handle = breaker.handle();
    let cache = CacheLayer::builder().build().unwrap();
    let cache_handle = cache.handle();
    let client = ServiceBuilder::new()
        .layer(cache)
        .layer(breaker)
        .service(Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>());

    let status_of = |response: &Response<_>| *response.extensions().get::<CacheStatus>().unwrap();

    let first = client
        .clone()
        .oneshot(get(&server.url("/item")))
        .await
        .unwrap();
    assert_eq!(status_of(&first), CacheStatus::Miss);
    let fresh = client
        .clone()
        .oneshot(get(&server.url("/fresh")))
        .await
        .unwrap();
    assert_eq!(status_of(&fresh), CacheStatus::Miss);
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // Stale at 20 s: the upstream's 503 trips the breaker, and the stale answer stands in.
    tokio::time::advance(Duration::from_secs(20)).await;
    let response = client
        .clone()
        .oneshot(get(&server.url("/item")))
        .await
        .unwrap();
    assert_eq!(status_of(&response), CacheStatus::Stale);
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "v1"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(breaker_handle.state(&()), State::Open);

    // The breaker now refuses without calling the server; the cache answers stale again.
    tokio::time::advance(Duration::from_secs(1)).await;
    let response = client
        .clone()
        .oneshot(get(&server.url("/item")))
        .await
        .unwrap();
    assert_eq!(status_of(&response), CacheStatus::Stale);
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "v1"
    );
    // A fresh entry answers without meeting the breaker at all.
    let response = client
        .clone()
        .oneshot(get(&server.url("/fresh")))
        .await
        .unwrap();
    assert_eq!(status_of(&response), CacheStatus::Hit);
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    // Past the allowance (10 s fresh + 300 s), the breaker's refusal reaches the caller.
    tokio::time::advance(Duration::from_secs(300)).await;
    match client.clone().oneshot(get(&server.url("/item"))).await {
        Err(BreakerError::Open(open)) => assert_eq!(open.state(), State::Open),
        other => panic!(
            "expected the breaker's refusal, got {:?}",
            other.map(|r| r.status())
        ),
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    let stats = cache_handle.stats();
    assert_eq!(
        (stats.hits, stats.misses, stats.stale_served),
        (1, 3, 2),
        "{stats:?}"
    );
}

/// A throwaway `redis-server`, or `None` (said on the terminal) when this machine has none
/// and the tests do not run under CI.
fn redis_server() -> Option<RedisServer> {
    match RedisServer::start() {
        Ok(server) => Some(server),
        Err(error)
            if error.kind() == std::io::ErrorKind::NotFound
                && std::env::var("CI").map_or(true, |ci| ci != "true") =>
        {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: {error}; install redis-server to run it"
            );
            None
        }
        Err(error) => panic!("{error}"),
    }
}

// Real time: the Redis client's timeouts are tokio timers, which paused time would fire
// while a reply is on its way. The second cache's clock is set 100 s ahead instead, as a
// process that reads the shared entries later.
#[tokio::test]
async fn two_caches_share_answers_through_redis() {
    let Some(server) = redis_server() else { return };
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let upstream = service_fn(move |request: Request<Empty<Bytes>>| {
        let call = counted.fetch_add(1, Ordering::SeqCst);
        let authorized = request.headers().contains_key("authorization");
        async move {
            let response = if call == 0 && authorized {
                Response::builder()
                    .header("cache-control", "private, max-age=60, stale-if-error=300")
                    .header("vary", "authorization")
                    .body(Full::new(Bytes::from_static(b"the answer")))
            } else {
                Response::builder()
                    .status(500)
                    .body(Full::new(Bytes::from_static(b"down")))
            };
            Ok::<_, std::io::Error>(response.unwrap())
        }
    });
    let now = SystemTime::now();
    let first = CacheLayer::builder()
        .store(RedisStore::new(&server.url()).unwrap())
        .system_time_origin(now)
        .build()
        .unwrap();
    let later = CacheLayer::builder()
        .store(RedisStore::new(&server.url()).unwrap())
        .system_time_origin(now + Duration::from_secs(100))
        .build()
        .unwrap();
    let request = || {
        Request::get("https://api.example.com/v1/me")
            .header("authorization", "Bearer s3cret-token")
            .body(Empty::<Bytes>::new())
            .unwrap()
    };

    let one = ServiceBuilder::new()
        .layer(first.clone())
        .service(upstream.clone());
    let response = one.clone().oneshot(request()).await.unwrap();
    assert_eq!(response.extensions().get(), Some(&CacheStatus::Miss));
    // The same process: a hit from Redis.
    let response = one.clone().oneshot(request()).await.unwrap();
    assert_eq!(response.extensions().get(), Some(&CacheStatus::Hit));
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "the answer"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Another credential has no entry.
    let other = Request::get("https://api.example.com/v1/me")
        .header("authorization", "Bearer someone-else")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = one.clone().oneshot(other).await.unwrap();
    assert_eq!(response.extensions().get(), Some(&CacheStatus::Miss));
    assert_eq!(response.status(), 500);
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // The other cache, 100 s later: the shared entry is stale, the upstream fails, and the
    // entry answers within its stale-if-error allowance, with its age.
    let two = ServiceBuilder::new().layer(later.clone()).service(upstream);
    let response = two.oneshot(request()).await.unwrap();
    assert_eq!(response.extensions().get(), Some(&CacheStatus::Stale));
    assert_eq!(response.headers()["age"], "100");
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "the answer"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(first.handle().stats().stored, 1);
    assert_eq!(later.handle().stats().stale_served, 1);
    assert_eq!(first.handle().stats().store_errors, 0);

    // In Redis: one entry, kept for its freshness plus its allowance, whose key and value
    // hold no credential.
    let mut redis = redis::Client::open(server.url().as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].starts_with("seawall:cache:"));
    let ttl_ms: i64 = redis::cmd("PTTL")
        .arg(&keys[0])
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!((355_000..=360_000).contains(&ttl_ms), "{ttl_ms} ms");
    let value: Vec<u8> = redis::cmd("GET")
        .arg(&keys[0])
        .query_async(&mut redis)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&value);
    assert!(!text.contains("s3cret") && !keys[0].contains("s3cret"));
    assert!(text.ends_with("the answer"));
}

#[tokio::test]
async fn an_unreachable_redis_is_a_miss_not_a_failure() {
    // A port nothing listens on: every store call is refused at once.
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = RedisStore::new(&format!("redis://127.0.0.1:{port}/")).unwrap();
    let layer = CacheLayer::builder().store(store).build().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let upstream = service_fn(move |_request: Request<Empty<Bytes>>| {
        counted.fetch_add(1, Ordering::SeqCst);
        async {
            Ok::<_, std::io::Error>(
                Response::builder()
                    .header("cache-control", "max-age=60")
                    .body(Full::new(Bytes::from_static(b"answer")))
                    .unwrap(),
            )
        }
    });
    let client = ServiceBuilder::new().layer(layer.clone()).service(upstream);
    for _ in 0..2 {
        let response = client
            .clone()
            .oneshot(get("https://api.example.com/x"))
            .await
            .unwrap();
        assert_eq!(response.extensions().get(), Some(&CacheStatus::Miss));
        assert_eq!(
            response.into_body().collect().await.unwrap().to_bytes(),
            "answer"
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let stats = layer.handle().stats();
    // Each request: a failed lookup and a failed write.
    assert_eq!((stats.store_errors, stats.stored, stats.misses), (4, 0, 2));
}
