//! The cache's Redis store against a real `redis-server` on a free loopback port: answers
//! shared by two layers (as by two processes), and a connection gone silent given up after
//! one timeout.
#![cfg(feature = "redis")]
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "a failed setup is a failed test"
)]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use seawall_cache::{CacheLayer, CacheStatus, RedisStore};
use seawall_rate_limit_redis::server::{RedisServer, SilencingProxy};
use tower::{Layer, Service, ServiceExt, service_fn};

/// An upstream whose answers may be kept a minute, each body naming the call it came from.
fn upstream(
    calls: Arc<AtomicUsize>,
) -> impl Service<
    Request<Empty<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    service_fn(move |_request: Request<Empty<Bytes>>| {
        let call = calls.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            Ok::<_, Infallible>(
                Response::builder()
                    .header("cache-control", "max-age=60")
                    .body(Full::new(Bytes::from(format!("call {call}"))))
                    .unwrap(),
            )
        }
    })
}

/// Sends a GET of `/item` through `layer` over `upstream`: how it was answered, and the body.
async fn get(layer: &CacheLayer<RedisStore>, calls: &Arc<AtomicUsize>) -> (CacheStatus, String) {
    let request = Request::get("http://api.test/item")
        .body(Empty::new())
        .unwrap();
    let response = layer
        .layer(upstream(Arc::clone(calls)))
        .oneshot(request)
        .await
        .unwrap();
    let status = *response.extensions().get::<CacheStatus>().unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

fn layer(url: &str, timeout: Duration) -> CacheLayer<RedisStore> {
    CacheLayer::builder()
        .store(RedisStore::with_options(url, "test:", timeout).unwrap())
        .build()
        .unwrap()
}

#[tokio::test]
async fn two_layers_on_one_redis_share_an_answer() {
    let server =
        RedisServer::start().expect("redis-server on the PATH (Debian's redis-server package)");
    let calls = Arc::new(AtomicUsize::new(0));
    // Two processes, each with its own layer and connection.
    let first = layer(&server.url(), Duration::from_secs(1));
    let second = layer(&server.url(), Duration::from_secs(1));
    assert_eq!(
        get(&first, &calls).await,
        (CacheStatus::Miss, "call 1".into())
    );
    assert_eq!(
        get(&second, &calls).await,
        (CacheStatus::Hit, "call 1".into())
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(second.handle().stats().store_errors, 0);
}

#[tokio::test]
async fn a_connection_gone_silent_costs_one_timeout_then_a_new_one_is_made() {
    let server =
        RedisServer::start().expect("redis-server on the PATH (Debian's redis-server package)");
    let proxy = SilencingProxy::start(&server).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let cache = layer(proxy.url(), Duration::from_millis(100));
    assert_eq!(get(&cache, &calls).await.0, CacheStatus::Miss);
    assert_eq!(get(&cache, &calls).await.0, CacheStatus::Hit);
    assert_eq!(proxy.accepted(), 1);

    proxy.silence();
    // The lookup times out on the silent connection: a miss, answered by the upstream, whose
    // answer is stored over a new connection.
    assert_eq!(
        get(&cache, &calls).await,
        (CacheStatus::Miss, "call 2".into())
    );
    assert_eq!(cache.handle().stats().store_errors, 1);
    assert_eq!(
        get(&cache, &calls).await,
        (CacheStatus::Hit, "call 2".into())
    );
    assert_eq!(proxy.accepted(), 2);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_answer_varying_on_a_header_that_is_not_utf8_is_found_again() {
    let server =
        RedisServer::start().expect("redis-server on the PATH (Debian's redis-server package)");
    let calls = Arc::new(AtomicUsize::new(0));
    let cache = layer(&server.url(), Duration::from_secs(1));
    // An upstream whose answers vary on `x-variant`, which a caller sends as Latin-1 bytes.
    let upstream = service_fn({
        let calls = Arc::clone(&calls);
        move |_request: Request<Empty<Bytes>>| {
            calls.fetch_add(1, Ordering::SeqCst);
            async {
                Ok::<_, Infallible>(
                    Response::builder()
                        .header("cache-control", "max-age=60")
                        .header("vary", "x-variant")
                        .body(Full::new(Bytes::from_static(b"caf\xc3\xa9")))
                        .unwrap(),
                )
            }
        }
    });
    let variant = http::HeaderValue::from_bytes(b"caf\xe9").unwrap();
    let request = |own_directives: bool| {
        let mut builder = Request::get("http://api.test/menu").header("x-variant", variant.clone());
        if own_directives {
            // The request's own directives have the stored policy weigh it, varied header
            // and all.
            builder = builder.header("cache-control", "max-age=60");
        }
        builder.body(Empty::new()).unwrap()
    };
    let mut statuses = Vec::new();
    for own_directives in [false, false, true] {
        let response = cache
            .layer(upstream.clone())
            .oneshot(request(own_directives))
            .await
            .unwrap();
        statuses.push(*response.extensions().get::<CacheStatus>().unwrap());
    }
    assert_eq!(
        statuses,
        [CacheStatus::Miss, CacheStatus::Hit, CacheStatus::Hit]
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_entry_of_another_layout_is_a_miss_not_a_store_error() {
    let server =
        RedisServer::start().expect("redis-server on the PATH (Debian's redis-server package)");
    let calls = Arc::new(AtomicUsize::new(0));
    let cache = layer(&server.url(), Duration::from_secs(1));
    assert_eq!(
        get(&cache, &calls).await,
        (CacheStatus::Miss, "call 1".into())
    );
    // A process of an earlier version wrote its own layout (version 1) under the same key.
    let client = redis::Client::open(server.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("test:*")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1);
    let () = redis::cmd("SET")
        .arg(&keys[0])
        .arg(&[1u8, 2, 0, 0, 0, b'{', b'}'][..])
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(
        get(&cache, &calls).await,
        (CacheStatus::Miss, "call 2".into())
    );
    assert_eq!(
        get(&cache, &calls).await,
        (CacheStatus::Hit, "call 2".into())
    );
    assert_eq!(cache.handle().stats().store_errors, 0);
}
