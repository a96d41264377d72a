//! Batching on paused time: which items share a batch, when each batch is sent, and what
//! each caller gets.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use seawall_batch::{BatchError, BatchLayer, BatchStats, BoxError, batch_fn};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

/// What the upstream saw: when each batch arrived (since `start`) and its items.
type Seen = Arc<Mutex<Vec<(Duration, Vec<u32>)>>>;

/// A batch endpoint answering `id * 10` for every id, recording each call.
fn upstream(
    start: Instant,
    seen: &Seen,
) -> impl Service<Vec<u32>, Response = Vec<u32>, Error = std::io::Error, Future = impl Send + 'static>
+ Send
+ 'static {
    let seen = Arc::clone(seen);
    service_fn(move |ids: Vec<u32>| {
        seen.lock()
            .expect("unpoisoned")
            .push((start.elapsed(), ids.clone()));
        async move { Ok(ids.iter().map(|id| id * 10).collect()) }
    })
}

fn times_ten(
    max_size: usize,
    max_delay: Duration,
) -> BatchLayer<
    impl seawall_batch::Batcher<Item = u32, Request = Vec<u32>, Response = Vec<u32>, Output = u32>,
> {
    BatchLayer::builder(batch_fn(
        |ids: &[u32]| Ok(ids.to_vec()),
        |values: Vec<u32>, _ids: &[u32]| values.into_iter().map(Ok).collect(),
    ))
    .max_size(max_size)
    .max_delay(max_delay)
    .build()
    .expect("valid config")
}

fn seen(seen: &Seen) -> Vec<(Duration, Vec<u32>)> {
    seen.lock().expect("unpoisoned").clone()
}

const MS: Duration = Duration::from_millis(1);

/// 100 callers within one 10 ms window, with `max_size`: the batches the upstream saw, and
/// every caller's own answer.
async fn hundred_callers(max_size: usize) -> (Vec<(Duration, Vec<u32>)>, BatchStats) {
    let start = Instant::now();
    let calls: Seen = Arc::default();
    let layer = times_ten(max_size, 10 * MS);
    let service = layer.layer(upstream(start, &calls));
    let mut answers = JoinSet::new();
    // Ten callers a millisecond, from 0 to 9 ms.
    for id in 0..100u32 {
        if id > 0 && id % 10 == 0 {
            tokio::time::sleep(MS).await;
        }
        let call = service.clone().oneshot(id);
        answers.spawn(async move { (id, call.await) });
    }
    for (id, answer) in answers.join_all().await {
        assert_eq!(answer.expect("an answer"), id * 10, "caller {id}");
    }
    (seen(&calls), layer.handle().stats())
}

#[tokio::test(start_paused = true)]
async fn a_hundred_callers_in_one_window_make_one_call() {
    // max_size 100: the batch is full, and sent, when the 100th item arrives at 9 ms;
    // max_size 1,000: it is sent when the window closes, 10 ms after the first item.
    for (max_size, sent) in [(100, 9 * MS), (1_000, 10 * MS)] {
        let (calls, stats) = hundred_callers(max_size).await;
        assert_eq!(
            calls,
            [(sent, (0..100).collect::<Vec<_>>())],
            "max_size {max_size}"
        );
        assert_eq!(
            stats,
            BatchStats {
                batches: 1,
                items: 100,
                discarded: 0
            }
        );
    }
}

#[tokio::test(start_paused = true)]
async fn with_max_size_25_a_hundred_callers_make_four_calls() {
    let (calls, stats) = hundred_callers(25).await;
    // A full batch goes at once: when its 25th item arrives.
    let expected: Vec<(Duration, Vec<u32>)> = (0..4)
        .map(|batch| {
            let first = batch * 25;
            let sent = Duration::from_millis(u64::from(first + 24) / 10);
            (sent, (first..first + 25).collect())
        })
        .collect();
    assert_eq!(calls, expected);
    assert_eq!((stats.batches, stats.items), (4, 100));
}

#[tokio::test(start_paused = true)]
async fn an_item_arriving_when_the_window_closes_goes_to_the_next_batch() {
    let start = Instant::now();
    let calls: Seen = Arc::default();
    let service = times_ten(100, 10 * MS).layer(upstream(start, &calls));
    let mut answers = JoinSet::new();
    // At 0, 9, 10 and 15 ms: the first window is [0, 10) ms, the second [10, 20) ms.
    for (id, at) in [(1u32, 0u64), (2, 9), (3, 10), (4, 15)] {
        tokio::time::sleep_until(start + Duration::from_millis(at)).await;
        let call = service.clone().oneshot(id);
        answers.spawn(call);
    }
    let mut values: Vec<u32> = answers
        .join_all()
        .await
        .into_iter()
        .map(|answer| answer.expect("an answer"))
        .collect();
    values.sort_unstable();
    assert_eq!(values, [10, 20, 30, 40]);
    assert_eq!(seen(&calls), [(10 * MS, vec![1, 2]), (20 * MS, vec![3, 4])]);
}

#[tokio::test(start_paused = true)]
async fn an_error_for_one_item_reaches_that_caller_only() {
    let calls: Seen = Arc::default();
    let layer = BatchLayer::builder(batch_fn(
        |ids: &[u32]| Ok(ids.to_vec()),
        |values: Vec<u32>, ids: &[u32]| {
            values
                .into_iter()
                .zip(ids)
                .map(|(value, id)| {
                    if id % 2 == 1 {
                        Err(BoxError::from(format!("no item {id}")))
                    } else {
                        Ok(value)
                    }
                })
                .collect()
        },
    ))
    .build()
    .expect("valid config");
    let service = layer.layer(upstream(Instant::now(), &calls));
    let answers = futures::future::join_all((0..4u32).map(|id| service.clone().oneshot(id))).await;
    let mut answers = answers.into_iter();
    assert_eq!(answers.next().map(|a| a.expect("item 0")), Some(0));
    match answers.next() {
        Some(Err(BatchError::Item(error))) => assert_eq!(error.to_string(), "no item 1"),
        other => panic!("expected item 1's own error, got {other:?}"),
    }
    assert_eq!(answers.next().map(|a| a.expect("item 2")), Some(20));
    assert!(matches!(answers.next(), Some(Err(BatchError::Item(_)))));
    assert_eq!(seen(&calls).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_callers_item_is_left_out() {
    let start = Instant::now();
    let calls: Seen = Arc::default();
    let layer = times_ten(100, 10 * MS);
    let mut service = layer.layer(upstream(start, &calls));
    let first = service.call(1);
    let gone = service.call(2);
    let third = service.call(3);
    tokio::time::sleep(5 * MS).await;
    drop(gone);
    let (first, third) = tokio::join!(first, third);
    assert_eq!((first.expect("1"), third.expect("3")), (10, 30));
    assert_eq!(seen(&calls), [(10 * MS, vec![1, 3])]);
    assert_eq!(
        layer.handle().stats(),
        BatchStats {
            batches: 1,
            items: 2,
            discarded: 1
        }
    );
}

#[tokio::test(start_paused = true)]
async fn the_handle_reports_its_figures_to_exporters() {
    use seawall_core::{FigureKind, FigureSource};
    let layer = times_ten(100, MS);
    let mut service = layer.layer(upstream(Instant::now(), &Seen::default()));
    drop(service.call(1));
    let (a, b) = tokio::join!(service.call(2), service.call(3));
    assert_eq!((a.expect("2"), b.expect("3")), (20, 30));
    let mut figures = Vec::new();
    layer.handle().figures(&mut |figure| {
        figures.push((figure.name, figure.kind, figure.value));
    });
    assert_eq!(
        figures,
        [
            ("seawall_batch_batches", FigureKind::Counter, 1.0),
            ("seawall_batch_items", FigureKind::Counter, 2.0),
            ("seawall_batch_discarded", FigureKind::Counter, 1.0),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_batch_of_callers_that_all_left_is_not_sent() {
    let calls: Seen = Arc::default();
    let layer = times_ten(100, 10 * MS);
    let mut service = layer.layer(upstream(Instant::now(), &calls));
    drop(service.call(1));
    drop(service.call(2));
    tokio::time::sleep(20 * MS).await;
    // The next item opens a new window and is answered.
    assert_eq!(service.call(3).await.expect("3"), 30);
    assert_eq!(seen(&calls), [(30 * MS, vec![3])]);
    assert_eq!(layer.handle().stats().discarded, 2);
}

#[tokio::test(start_paused = true)]
async fn an_upstream_error_reaches_every_caller_of_the_batch() {
    let failing = service_fn(|_ids: Vec<u32>| async {
        Err::<Vec<u32>, _>(std::io::Error::other("batch endpoint down"))
    });
    let mut service = times_ten(100, MS).layer(failing);
    let (a, b) = tokio::join!(service.call(1), service.call(2));
    for answer in [a, b] {
        match answer {
            Err(BatchError::Upstream(error)) => {
                assert_eq!(error.to_string(), "batch endpoint down")
            }
            other => panic!("expected the upstream error, got {other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_short_answer_leaves_the_last_callers_missing() {
    let layer = BatchLayer::builder(batch_fn(
        |ids: &[u32]| Ok(ids.to_vec()),
        // Answers the first id only.
        |values: Vec<u32>, _ids: &[u32]| values.into_iter().take(1).map(Ok).collect(),
    ))
    .build()
    .expect("valid config");
    let mut service = layer.layer(upstream(Instant::now(), &Seen::default()));
    let (a, b) = tokio::join!(service.call(1), service.call(2));
    assert_eq!(a.expect("first"), 10);
    assert!(matches!(b, Err(BatchError::Missing)), "{b:?}");
}

#[tokio::test(start_paused = true)]
async fn a_merge_error_reaches_every_caller_and_sends_nothing() {
    let calls: Seen = Arc::default();
    let layer = BatchLayer::builder(batch_fn(
        |_ids: &[u32]| Err::<Vec<u32>, _>(BoxError::from("ids too long for a URI")),
        |values: Vec<u32>, _ids: &[u32]| values.into_iter().map(Ok).collect(),
    ))
    .build()
    .expect("valid config");
    let mut service = layer.layer(upstream(Instant::now(), &calls));
    let (a, b) = tokio::join!(service.call(1), service.call(2));
    assert!(matches!(a, Err(BatchError::Merge(_))), "{a:?}");
    assert!(matches!(b, Err(BatchError::Merge(_))), "{b:?}");
    assert!(seen(&calls).is_empty());
}

#[tokio::test(start_paused = true)]
async fn dropping_the_service_sends_what_is_waiting_at_once() {
    let start = Instant::now();
    let calls: Seen = Arc::default();
    let mut service = times_ten(100, 10 * MS).layer(upstream(start, &calls));
    let first = service.call(1);
    let second = service.call(2);
    drop(service);
    let (first, second) = tokio::join!(first, second);
    assert_eq!((first.expect("1"), second.expect("2")), (10, 20));
    // Sent when the service went, not when the window would have closed.
    assert_eq!(seen(&calls), [(Duration::ZERO, vec![1, 2])]);
}

/// An upstream that takes one call at a time (tower's concurrency limit) and holds its first
/// until the test lets it answer: the next batch waits for it, and with `max_queued` 2 the
/// items waiting fill the queue, so a caller's `poll_ready` waits for room, and a call made
/// without it is refused, until the upstream takes the waiting batch.
#[tokio::test(start_paused = true)]
async fn a_full_queue_makes_callers_wait_for_room() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let held = Arc::clone(&gate);
    let upstream = tower::limit::ConcurrencyLimit::new(
        service_fn(move |ids: Vec<u32>| {
            let gate = Arc::clone(&held);
            async move {
                gate.acquire().await.expect("never closed").forget();
                Ok::<_, std::io::Error>(ids.iter().map(|id| id * 10).collect::<Vec<u32>>())
            }
        }),
        1,
    );
    let layer = BatchLayer::builder(batch_fn(
        |ids: &[u32]| Ok(ids.to_vec()),
        |values: Vec<u32>, _ids: &[u32]| values.into_iter().map(Ok).collect(),
    ))
    .max_size(1)
    .max_delay(MS)
    .max_queued(2)
    .build()
    .expect("valid config");
    assert_eq!(layer.max_queued(), 2);
    let mut service = layer.layer(upstream);
    let mut answers = JoinSet::new();
    // 1 is sent (and gives its place back) and holds the upstream; 2 waits for the upstream
    // in its batch, and 3 in the queue: two places, both taken.
    for id in 1..=3u32 {
        service.ready().await.expect("room");
        let answer = service.call(id);
        answers.spawn(async move { (id, answer.await) });
        tokio::time::sleep(MS).await;
    }
    let mut other = service.clone();
    let mut ready = std::pin::pin!(std::future::poll_fn(|cx| service.poll_ready(cx)));
    assert!(futures::poll!(ready.as_mut()).is_pending());
    let refused = other.call(4).await;
    assert!(
        matches!(refused, Err(BatchError::QueueFull { max_queued: 2 })),
        "{refused:?}"
    );
    // The upstream answers 1 and takes 2's batch: its place is free.
    gate.add_permits(1);
    tokio::time::sleep(MS).await;
    assert!(matches!(
        futures::poll!(ready.as_mut()),
        Poll::Ready(Ok(()))
    ));
    drop(other);
    let answer = service.call(5);
    answers.spawn(async move { (5, answer.await) });
    gate.add_permits(3);
    let mut answers: Vec<_> = answers
        .join_all()
        .await
        .into_iter()
        .map(|(id, answer)| (id, answer.expect("an answer")))
        .collect();
    answers.sort_unstable();
    assert_eq!(answers, [(1, 10), (2, 20), (3, 30), (5, 50)]);
}

#[test]
fn a_call_outside_a_runtime_fails_with_no_runtime() {
    let calls: Seen = Arc::default();
    let mut service = {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        let _context = runtime.enter();
        times_ten(10, MS).layer(upstream(Instant::now(), &calls))
    };
    let mut answer = std::pin::pin!(service.call(1));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(
        answer.as_mut().poll(&mut cx),
        Poll::Ready(Err(BatchError::NoRuntime))
    ));
}

#[test]
fn the_builder_names_the_field_it_refuses() {
    let batcher = || {
        batch_fn(
            |ids: &[u32]| Ok(ids.to_vec()),
            |values: Vec<u32>, _ids: &[u32]| values.into_iter().map(Ok).collect(),
        )
    };
    let err = BatchLayer::builder(batcher())
        .max_size(0)
        .build()
        .expect_err("0 items");
    assert_eq!(err.field(), "max_size");
    assert_eq!(
        err.to_string(),
        "invalid `max_size` = 0: expected an integer from 1 to 10000"
    );
    let err = BatchLayer::builder(batcher())
        .max_size(10_001)
        .build()
        .expect_err("too many");
    assert_eq!(err.field(), "max_size");
    let delay = ("max_delay", "a duration from 1 µs to 60 s");
    let queued = ("max_queued", "an integer from 1 to 10000000");
    for (builder, refused) in [
        (
            BatchLayer::builder(batcher()).max_delay(Duration::ZERO),
            delay,
        ),
        (
            BatchLayer::builder(batcher()).max_delay(Duration::from_secs(61)),
            delay,
        ),
        (BatchLayer::builder(batcher()).max_queued(0), queued),
        (
            BatchLayer::builder(batcher()).max_queued(10_000_001),
            queued,
        ),
        (
            BatchLayer::builder(batcher()).max_size(50).max_queued(49),
            ("max_queued", "at least `max_size`"),
        ),
    ] {
        let err = builder.build().expect_err("out of range");
        assert_eq!((err.field(), err.expected()), refused);
    }
    let layer = BatchLayer::builder(batcher())
        .max_size(1)
        .max_delay(Duration::from_secs(60))
        .build()
        .expect("bounds are valid");
    assert_eq!(
        (layer.max_size(), layer.max_delay()),
        (1, Duration::from_secs(60))
    );
}
