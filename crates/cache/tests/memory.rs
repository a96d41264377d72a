//! The in-process store stays within its bound in bytes under 100,000 distinct URLs.
#![allow(clippy::unwrap_used, reason = "a failed setup is a failed test")]

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use seawall_cache::{CacheLayer, CacheStatus, MemoryStore};
use tower::{Layer, ServiceExt, service_fn};

#[tokio::test]
async fn a_hundred_thousand_urls_stay_within_the_bound() {
    const BOUND: u64 = 4 << 20;
    const URLS: u64 = 100_000;
    let body = Bytes::from(vec![b'x'; 1024]);
    let upstream = service_fn(move |_request: Request<()>| {
        let body = body.clone();
        async move {
            Ok::<_, Infallible>(
                Response::builder()
                    .header("cache-control", "max-age=3600")
                    .body(Full::new(body))
                    .unwrap(),
            )
        }
    });
    let layer = CacheLayer::builder()
        .store(MemoryStore::new(BOUND).unwrap())
        .build()
        .unwrap();
    let handle = layer.handle();
    let cache = layer.layer(upstream);

    for n in 0..URLS {
        let request = Request::get(format!("https://api.example.com/items/{n}"))
            .body(())
            .unwrap();
        let response = cache.clone().oneshot(request).await.unwrap();
        assert_eq!(
            response.extensions().get::<CacheStatus>(),
            Some(&CacheStatus::Miss)
        );
        if n % 10_000 == 9_999 {
            layer.store().run_pending_tasks();
            let held = handle.stats().bytes_held.unwrap();
            assert!(held <= BOUND, "{held} bytes held after {} URLs", n + 1);
        }
    }
    layer.store().run_pending_tasks();
    let stats = handle.stats();
    assert_eq!((stats.misses, stats.stored), (URLS, URLS));
    let held = stats.bytes_held.unwrap();
    assert!(held <= BOUND, "{held} bytes held");
    // Each entry weighs over a kilobyte, so the bound holds at most a few thousand of them:
    // the rest were evicted.
    let entries = layer.store().entry_count();
    assert!(entries > 0 && entries < 4_096, "{entries} entries");
    assert!(
        layer.store().evictions() >= URLS - 4_096,
        "{} evictions",
        layer.store().evictions()
    );
    // The store is still filled close to its bound, not emptied.
    assert!(held > BOUND / 2, "{held} bytes held");

    // The most recent URL, if kept, answers from the cache; a long-evicted one does not.
    let first = Request::get("https://api.example.com/items/0")
        .body(())
        .unwrap();
    let response = cache.clone().oneshot(first).await.unwrap();
    assert_eq!(
        response.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Miss)
    );
}
