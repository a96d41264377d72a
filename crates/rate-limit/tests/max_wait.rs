//! `max_wait` is a promise: a request is refused at once only if it really would wait
//! longer (each quota's burst and the queue ahead counted), and a waiter that a later pause
//! pushes past it is refused when it runs out, not held longer. On paused time.

#![allow(
    clippy::unwrap_used,
    reason = "test fixtures: a poisoned log or bad fixture must fail the test loudly"
)]

use std::future::ready;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use http::{Request, Response, StatusCode};
use seawall_rate_limit::{RateLimitError, RateLimitLayer, Rejected};
use tokio::time::Instant;
use tower::{Layer, Service, service_fn};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// How a request ended, and when.
#[derive(Debug, PartialEq)]
enum Ending {
    Sent(Duration),
    TooLong {
        predicted: Duration,
        max_wait: Duration,
        at: Duration,
    },
    Other(String),
}

fn ending<E: std::fmt::Display>(
    result: Result<Response<()>, RateLimitError<E>>,
    at: Duration,
) -> Ending {
    match result {
        Ok(_) => Ending::Sent(at),
        Err(RateLimitError::Rejected(Rejected::WaitTooLong {
            predicted,
            max_wait,
        })) => Ending::TooLong {
            predicted,
            max_wait,
            at,
        },
        Err(other) => Ending::Other(other.to_string()),
    }
}

#[tokio::test(start_paused = true)]
async fn the_prediction_counts_each_quotas_burst_and_the_queue_ahead() {
    let start = Instant::now();
    let arrivals: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let log = Arc::clone(&arrivals);
    let upstream = service_fn(move |_request: Request<()>| {
        log.lock().unwrap().push(start.elapsed());
        ready(Ok::<_, std::io::Error>(Response::new(())))
    });
    // 10 a second, strictly paced, and 20 a minute with a burst of 20: the first 20 go at
    // the per-second pace, the 21st when the per-minute schedule allows (3 s), the 22nd at 6 s.
    let layer = RateLimitLayer::builder()
        .per_second(10)
        .per_minute(20)
        .burst(20)
        .wait(100, Duration::from_secs(6))
        .build()
        .unwrap();
    let mut service = layer.layer(upstream);
    let calls: Vec<_> = (0..23)
        .map(|_| {
            let call = service.call(Request::new(()));
            async move {
                let result = call.await;
                ending(result, start.elapsed())
            }
        })
        .collect();
    let endings = join_all(calls).await;
    let mut expected: Vec<Ending> = (0..20).map(|i| Ending::Sent(ms(100 * i))).collect();
    expected.push(Ending::Sent(ms(3_000)));
    expected.push(Ending::Sent(ms(6_000)));
    // The 23rd would go at 9 s: refused at once, with that wait.
    expected.push(Ending::TooLong {
        predicted: ms(9_000),
        max_wait: ms(6_000),
        at: Duration::ZERO,
    });
    assert_eq!(endings, expected);
    assert_eq!(arrivals.lock().unwrap().len(), 22);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_a_later_pause_pushes_past_max_wait_is_refused_when_it_runs_out() {
    let start = Instant::now();
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    // The first answer is a 429 asking for 10 s; the rest are 200.
    let upstream = service_fn(move |_request: Request<()>| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let mut response = Response::new(());
        if n == 0 {
            *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
            response
                .headers_mut()
                .insert("retry-after", http::HeaderValue::from_static("10"));
        }
        ready(Ok::<_, std::io::Error>(response))
    });
    let layer = RateLimitLayer::builder()
        .per_second(1)
        .wait(100, Duration::from_secs(5))
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut service = layer.layer(upstream);
    let first = service.call(Request::new(()));
    // Joins with a 1 s wait, well within its 5 s.
    let second = service.call(Request::new(()));
    let second = tokio::spawn(async move {
        let result = second.await;
        ending(result, start.elapsed())
    });
    // The first answer pauses the key for 10 s after the second joined.
    let answer = first.await.unwrap();
    assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        second.await.unwrap(),
        Ending::TooLong {
            predicted: ms(10_000),
            max_wait: ms(5_000),
            at: ms(5_000),
        }
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let stats = handle.stats();
    assert_eq!(
        (
            stats.rejected_wait_too_long,
            stats.queue_depth,
            stats.cancelled
        ),
        (1, 0, 0)
    );
}
