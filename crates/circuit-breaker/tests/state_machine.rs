//! State-machine scenarios in the style of Resilience4j's suite: the window's figures after
//! every call, every transition and its reason exactly once, on paused time.

mod support;

use std::io;
use std::time::Duration;

use seawall_circuit_breaker::{BreakerError, CircuitBreakerLayer, Reason, State};
use support::*;
use tokio::time::{Instant, advance};
use tower::ServiceBuilder;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[tokio::test(start_paused = true)]
async fn failure_rate_after_each_call_and_minimum_calls() {
    let (events, listener) = recorder();
    let layer = single()
        .no_consecutive_failures()
        .failure_rate(50.0)
        .count_window(10)
        .minimum_calls(5)
        .on_transition(listener)
        .build()
        .unwrap();
    let handle = layer.handle();
    let service = ServiceBuilder::new().layer(layer).service(upstream());

    // (answer, calls, failures, failure rate) after each call; below 5 calls nothing trips
    // even at 100 % failures.
    let steps = [
        (500, 1, 1, 100.0),
        (502, 2, 2, 100.0),
        (200, 3, 2, 66.666),
        (404, 4, 2, 50.0),
    ];
    for (status, calls, failures, rate) in steps {
        assert_eq!(
            send(&service, Script::Status(status)).await.unwrap(),
            status
        );
        let stats = &handle.stats()[0];
        assert_eq!(
            (stats.window.calls, stats.window.failures),
            (calls, failures)
        );
        let measured = stats.window.failure_rate().unwrap();
        assert!((measured - rate).abs() < 0.01, "rate {measured} != {rate}");
        assert_eq!(stats.state, State::Closed, "not enough calls yet");
    }
    // The fifth call, a connect error, makes 3 of 5: 60 % >= 50 %.
    let error = send(&service, Script::Error(io::ErrorKind::ConnectionRefused)).await;
    assert!(matches!(error, Err(BreakerError::Inner(_))));
    assert_eq!(handle.state(&()), State::Open);
    assert_eq!(
        take(&events),
        vec![(State::Closed, State::Open, Reason::FailureRate(60.0))]
    );
    let stats = &handle.stats()[0];
    assert_eq!(
        (stats.successes, stats.failures, stats.transitions),
        (2, 3, 1)
    );
    // The window starts afresh after the trip.
    assert_eq!(stats.window.calls, 0);
}

/// Failures below the minimum trip nothing; the success that brings the calls up to the
/// minimum (here the window's whole size) finds the rate over the threshold and trips.
#[tokio::test(start_paused = true)]
async fn the_success_that_reaches_the_minimum_trips_on_the_failures_before_it() {
    let (events, listener) = recorder();
    let layer = single()
        .no_consecutive_failures()
        .failure_rate(50.0)
        .count_window(4)
        .minimum_calls(4)
        .on_transition(listener)
        .build()
        .unwrap();
    let handle = layer.handle();
    let service = ServiceBuilder::new().layer(layer).service(upstream());
    for _ in 0..3 {
        assert_eq!(send(&service, Script::Status(503)).await.unwrap(), 503);
        assert_eq!(handle.state(&()), State::Closed, "not enough calls yet");
    }
    assert_eq!(send(&service, Script::Status(200)).await.unwrap(), 200);
    assert_eq!(handle.state(&()), State::Open);
    assert_eq!(
        take(&events),
        vec![(State::Closed, State::Open, Reason::FailureRate(75.0))]
    );
}

#[tokio::test(start_paused = true)]
async fn count_window_truly_slides() {
    let layer = single()
        .no_consecutive_failures()
        .failure_rate(50.0)
        .count_window(100)
        .minimum_calls(100)
        .build()
        .unwrap();
    let handle = layer.handle();
    let service = ServiceBuilder::new().layer(layer).service(upstream());
    for _ in 0..1_000 {
        send(&service, Script::Status(200)).await.unwrap();
    }
    for failure in 1..=50 {
        send(&service, Script::Status(500)).await.unwrap();
        let expected = if failure < 50 {
            State::Closed
        } else {
            State::Open
        };
        assert_eq!(handle.state(&()), expected, "after {failure} failures");
        if failure < 50 {
            assert_eq!(handle.stats()[0].window.failures, failure);
            assert_eq!(handle.stats()[0].window.calls, 100);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_reset_on_success() {
    let (events, listener) = recorder();
    let layer = single()
        .consecutive_failures(3)
        .no_failure_rate()
        .on_transition(listener)
        .build()
        .unwrap();
    let handle = layer.handle();
    let service = ServiceBuilder::new().layer(layer).service(upstream());
    for status in [500, 500, 200, 500, 500] {
        send(&service, Script::Status(status)).await.unwrap();
        assert_eq!(handle.state(&()), State::Closed);
    }
    send(&service, Script::Error(io::ErrorKind::TimedOut))
        .await
        .unwrap_err();
    assert_eq!(handle.state(&()), State::Open);
    assert_eq!(
        take(&events),
        vec![(State::Closed, State::Open, Reason::ConsecutiveFailures(3))]
    );
}

#[tokio::test(start_paused = true)]
async fn half_open_permits_and_success_threshold() {
    let (events, listener) = recorder();
    let layer = single()
        .consecutive_failures(1)
        .open_duration(secs(10))
        .half_open_permits(3)
        .half_open_successes(2)
        .on_transition(listener)
        .build()
        .unwrap();
    let handle = layer.handle();
    let service = ServiceBuilder::new().layer(layer).service(upstream());

    send(&service, Script::Status(500)).await.unwrap();
    let tripped_at = Instant::now();
    let refusal = send(&service, Script::Status(200)).await.unwrap_err();
    let open = *refusal.as_open().unwrap();
    assert_eq!(open.state(), State::Open);
    assert_eq!(open.retry_at(), Some(tripped_at + secs(10)));
    advance(secs(10)).await;

    // Exactly three probes are let through, each answering after 1 s.
    let probes: Vec<_> = (0..3)
        .map(|_| tokio::spawn(send_owned(service.clone(), Script::After(secs(1), 200))))
        .collect();
    tokio::task::yield_now().await;
    assert_eq!(handle.state(&()), State::HalfOpen);
    assert_eq!(handle.stats()[0].probe_permits_left, 0);
    let refusal = send(&service, Script::Status(200)).await.unwrap_err();
    assert_eq!(refusal.as_open().unwrap().state(), State::HalfOpen);

    advance(secs(1)).await;
    for probe in probes {
        assert_eq!(probe.await.unwrap().unwrap(), 200);
    }
    // Two successes closed it; the third probe's outcome arrived late and was ignored.
    assert_eq!(handle.state(&()), State::Closed);
    assert_eq!(
        take(&events),
        vec![
            (State::Closed, State::Open, Reason::ConsecutiveFailures(1)),
            (State::Open, State::HalfOpen, Reason::OpenElapsed),
            (State::HalfOpen, State::Closed, Reason::ProbesSucceeded),
        ]
    );
    assert_eq!(handle.stats()[0].rejected, 2);
}

async fn send_owned<S>(service: S, script: Script) -> Result<u16, BreakerError<io::Error>>
where
    S: tower::Service<
            http::Request<Script>,
            Response = http::Response<()>,
            Error = BreakerError<io::Error>,
        > + Clone,
{
    send(&service, script).await
}

#[tokio::test(start_paused = true)]
async fn half_open_failure_reopens_for_longer() {
    let (events, listener) = recorder();
    let layer = single()
        .consecutive_failures(1)
        .open_backoff(secs(10), secs(60), 2.0, 0.0)
        .half_open_permits(1)
        .half_open_successes(1)
        .on_transition(listener)
        .build()
        .unwrap();
    let handle = layer.handle();
    let service = ServiceBuilder::new().layer(layer).service(upstream());
    send(&service, Script::Status(503)).await.unwrap();
    // 10, 20, 40, then capped at 60.
    for open_for in [10, 20, 40, 60, 60] {
        let refusal = send(&service, Script::Status(200)).await.unwrap_err();
        assert_eq!(
            refusal.as_open().unwrap().retry_at(),
            Some(Instant::now() + secs(open_for))
        );
        advance(secs(open_for)).await;
        send(&service, Script::Status(500)).await.unwrap();
        assert_eq!(handle.state(&()), State::Open);
    }
    let transitions = take(&events);
    assert_eq!(transitions.len(), 1 + 2 * 5);
    assert_eq!(
        transitions[1..3],
        [
            (State::Open, State::HalfOpen, Reason::OpenElapsed),
            (State::HalfOpen, State::Open, Reason::ProbeFailed),
        ]
    );
    // A success closes and resets the growth.
    advance(secs(60)).await;
    send(&service, Script::Status(200)).await.unwrap();
    assert_eq!(handle.state(&()), State::Closed);
    send(&service, Script::Status(500)).await.unwrap();
    let refusal = send(&service, Script::Status(200)).await.unwrap_err();
    assert_eq!(
        refusal.as_open().unwrap().retry_at(),
        Some(Instant::now() + secs(10))
    );
}

#[tokio::test(start_paused = true)]
async fn forced_disabled_and_metrics_only_modes() {
    let (events, listener) = recorder();
    let layer = single()
        .consecutive_failures(2)
        .on_transition(listener)
        .build()
        .unwrap();
    let handle = layer.handle();
    let service = ServiceBuilder::new().layer(layer).service(upstream());

    handle.force_open(&());
    let refusal = send(&service, Script::Status(200)).await.unwrap_err();
    let open = refusal.as_open().unwrap();
    assert_eq!((open.state(), open.retry_at()), (State::ForcedOpen, None));
    advance(secs(3_600)).await;
    assert!(
        send(&service, Script::Status(200)).await.is_err(),
        "stays forced open"
    );

    handle.disable(&());
    for _ in 0..5 {
        send(&service, Script::Status(500)).await.unwrap();
    }
    assert_eq!(handle.state(&()), State::Disabled);
    assert_eq!(
        handle.stats()[0].window.calls,
        0,
        "disabled records nothing"
    );

    handle.metrics_only(&());
    for _ in 0..5 {
        send(&service, Script::Status(500)).await.unwrap();
    }
    assert_eq!(handle.state(&()), State::MetricsOnly);
    assert_eq!(
        handle.stats()[0].window.failures,
        5,
        "recorded, never opened"
    );

    handle.reset(&());
    handle.reset(&());
    assert_eq!(handle.state(&()), State::Closed);
    assert_eq!(handle.stats()[0].window.calls, 0);
    assert_eq!(
        take(&events),
        vec![
            (State::Closed, State::ForcedOpen, Reason::Manual),
            (State::ForcedOpen, State::Disabled, Reason::Manual),
            (State::Disabled, State::MetricsOnly, Reason::Manual),
            (State::MetricsOnly, State::Closed, Reason::Manual),
        ],
        "each once; resetting a closed breaker is no transition"
    );
}

#[tokio::test(start_paused = true)]
async fn open_duration_growth_stays_in_bounds_over_20_trips() {
    let layer = CircuitBreakerLayer::builder()
        .jitter_seed(42)
        .consecutive_failures(1)
        .open_backoff(secs(1), secs(120), 2.0, 0.5)
        .half_open_permits(1)
        .half_open_successes(1)
        .build()
        .unwrap();
    let service = ServiceBuilder::new().layer(layer).service(upstream());
    let backoff =
        seawall_circuit_breaker::OpenBackoff::exponential(secs(1), secs(120), 2.0, 0.5).unwrap();
    send(&service, Script::Status(500)).await.unwrap();
    let mut seen = Vec::new();
    for trip in 1..=20 {
        let refusal = send(&service, Script::Status(200)).await.unwrap_err();
        let open_for = refusal.as_open().unwrap().retry_at().unwrap() - Instant::now();
        assert!(
            backoff.floor(trip) <= open_for && open_for <= backoff.ceiling(trip),
            "trip {trip}: {open_for:?} outside {:?}..={:?}",
            backoff.floor(trip),
            backoff.ceiling(trip)
        );
        assert!(open_for <= secs(120));
        seen.push(open_for);
        advance(open_for).await;
        send(&service, Script::Status(500)).await.unwrap();
    }
    // Jitter is applied: the capped trips do not all get the same duration.
    seen.sort();
    seen.dedup();
    assert!(seen.len() > 15, "{} distinct durations", seen.len());
}

#[tokio::test(start_paused = true)]
async fn retry_after_on_503_sets_the_open_duration() {
    let layer = single()
        .consecutive_failures(1)
        .open_duration(secs(60))
        .build()
        .unwrap();
    let service = ServiceBuilder::new().layer(layer).service(upstream());
    let answer = Script::WithHeaders(503, vec![("retry-after", "7")]);
    assert_eq!(send(&service, answer).await.unwrap(), 503);
    let refusal = send(&service, Script::Status(200)).await.unwrap_err();
    assert_eq!(
        refusal.as_open().unwrap().retry_at(),
        Some(Instant::now() + secs(7))
    );
}

#[tokio::test(start_paused = true)]
async fn throttling_is_ignored_unless_configured() {
    let layer = single().consecutive_failures(2).build().unwrap();
    let handle = layer.handle();
    let service = ServiceBuilder::new().layer(layer).service(upstream());
    for _ in 0..10 {
        send(&service, Script::Status(429)).await.unwrap();
    }
    assert_eq!(handle.state(&()), State::Closed);
    assert_eq!(handle.stats()[0].ignored, 10);

    let layer = single()
        .consecutive_failures(2)
        .throttled_is_failure(true)
        .build()
        .unwrap();
    let handle = layer.handle();
    let service = ServiceBuilder::new().layer(layer).service(upstream());
    send(&service, Script::Status(429)).await.unwrap();
    send(&service, Script::Status(429)).await.unwrap();
    assert_eq!(handle.state(&()), State::Open);
}

#[tokio::test(start_paused = true)]
async fn slow_calls_trip_and_exclude_queue_wait() {
    let layer = single()
        .no_consecutive_failures()
        .no_failure_rate()
        .slow_calls(secs(1), 50.0)
        .count_window(2)
        .minimum_calls(2)
        .build()
        .unwrap();
    let handle = layer.handle();
    // An upstream answering after 2 s, of which 1.5 s were spent in a rate limiter's queue.
    let queued = tower::service_fn(|_req: http::Request<()>| async {
        tokio::time::sleep(secs(2)).await;
        let mut response = http::Response::new(());
        response
            .extensions_mut()
            .insert(seawall_core::QueueWait(Duration::from_millis(1_500)));
        Ok::<_, io::Error>(response)
    });
    let service = ServiceBuilder::new().layer(layer.clone()).service(queued);
    for _ in 0..2 {
        tower::ServiceExt::oneshot(service.clone(), http::Request::new(()))
            .await
            .unwrap();
    }
    assert_eq!(
        handle.stats()[0].window.slow,
        0,
        "0.5 s upstream time is not slow"
    );
    assert_eq!(handle.state(&()), State::Closed);

    // Without a queue wait, 2 s is slow.
    handle.reset(&());
    let service = ServiceBuilder::new().layer(layer).service(upstream());
    send(&service, Script::After(secs(2), 200)).await.unwrap();
    assert_eq!(handle.stats()[0].window.slow, 1);
    assert_eq!(handle.state(&()), State::Closed, "below minimum calls");
    send(&service, Script::After(secs(2), 200)).await.unwrap();
    assert_eq!(handle.state(&()), State::Open);
}

/// A breaker that opened on slow calls probes an upstream that still answers as slowly: the
/// probe's success does not close it (it would admit full traffic until the window tripped
/// again); a prompt probe does.
#[tokio::test(start_paused = true)]
async fn a_slow_probe_reopens_a_breaker_that_counts_slow_calls() {
    let (events, listener) = recorder();
    let layer = single()
        .no_consecutive_failures()
        .no_failure_rate()
        .slow_calls(secs(1), 50.0)
        .count_window(2)
        .minimum_calls(2)
        .open_duration(secs(10))
        .half_open_permits(1)
        .half_open_successes(1)
        .on_transition(listener)
        .build()
        .unwrap();
    let handle = layer.handle();
    let service = ServiceBuilder::new().layer(layer).service(upstream());
    for _ in 0..2 {
        send(&service, Script::After(secs(2), 200)).await.unwrap();
    }
    assert_eq!(handle.state(&()), State::Open);
    advance(secs(10)).await;
    assert_eq!(
        send(&service, Script::After(secs(2), 200)).await.unwrap(),
        200,
        "the probe's answer reaches its caller"
    );
    assert_eq!(handle.state(&()), State::Open);
    advance(secs(10)).await;
    send(&service, Script::After(Duration::from_millis(100), 200))
        .await
        .unwrap();
    assert_eq!(handle.state(&()), State::Closed);
    assert_eq!(
        take(&events),
        [
            (State::Closed, State::Open, Reason::SlowCallRate(100.0)),
            (State::Open, State::HalfOpen, Reason::OpenElapsed),
            (State::HalfOpen, State::Open, Reason::ProbeSlow),
            (State::Open, State::HalfOpen, Reason::OpenElapsed),
            (State::HalfOpen, State::Closed, Reason::ProbesSucceeded),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn time_window_forgets_old_failures() {
    let layer = single()
        .no_consecutive_failures()
        .failure_rate(50.0)
        .time_window(secs(10), 10)
        .minimum_calls(4)
        .build()
        .unwrap();
    let handle = layer.handle();
    let service = ServiceBuilder::new().layer(layer).service(upstream());
    for _ in 0..3 {
        send(&service, Script::Status(500)).await.unwrap();
    }
    advance(secs(10)).await;
    // The three failures left the window: 1 failure of 4 calls is 25 %.
    send(&service, Script::Status(500)).await.unwrap();
    for _ in 0..3 {
        send(&service, Script::Status(200)).await.unwrap();
    }
    let stats = &handle.stats()[0];
    assert_eq!((stats.window.calls, stats.window.failures), (4, 1));
    assert_eq!(stats.state, State::Closed);
}

/// Successes on two other threads while the window is clean (each counted in its own
/// thread's cell), then failures here: every success counts toward the minimum and the rate,
/// so the breaker trips at exactly the failure that makes half of the last 10 calls fail.
#[tokio::test(start_paused = true)]
async fn clean_window_successes_on_other_threads_count_toward_rate_and_minimum() {
    let (events, listener) = recorder();
    let layer = single()
        .no_consecutive_failures()
        .failure_rate(50.0)
        .count_window(10)
        .minimum_calls(8)
        .on_transition(listener)
        .build()
        .unwrap();
    let handle = layer.handle();
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                for _ in 0..3 {
                    let guard = layer.guard(&()).unwrap();
                    guard.record_outcome(seawall_core::Outcome::Success);
                }
            });
        }
    });
    assert_eq!(handle.stats()[0].window.calls, 6);
    assert_eq!(handle.stats()[0].successes, 6);
    let service = ServiceBuilder::new().layer(layer).service(upstream());
    // (calls, failures) after each failure: 7 and 8 calls are under 50 %; the ninth call
    // makes 3 of 9, the tenth 4 of 10; the eleventh slides a success out: 5 of 10.
    let steps = [(7, 1), (8, 2), (9, 3), (10, 4)];
    for (calls, failures) in steps {
        assert_eq!(send(&service, Script::Status(500)).await.unwrap(), 500);
        let stats = &handle.stats()[0];
        assert_eq!(
            (stats.window.calls, stats.window.failures),
            (calls, failures)
        );
        assert_eq!(stats.state, State::Closed);
    }
    assert_eq!(send(&service, Script::Status(500)).await.unwrap(), 500);
    assert_eq!(handle.state(&()), State::Open);
    assert_eq!(
        take(&events),
        vec![(State::Closed, State::Open, Reason::FailureRate(50.0))]
    );
    let stats = &handle.stats()[0];
    assert_eq!((stats.successes, stats.failures), (6, 5));
}

/// The minimum counts the clean window's successes from every thread: with 3 successes on
/// other threads and a minimum of 4, the first failure is judged on 4 calls (25 %), and the
/// second on 5 (40 %); at a 40 % threshold it trips there.
#[tokio::test(start_paused = true)]
async fn the_minimum_counts_clean_window_successes_from_every_thread() {
    let (events, listener) = recorder();
    let layer = single()
        .no_consecutive_failures()
        .failure_rate(40.0)
        .count_window(10)
        .minimum_calls(4)
        .on_transition(listener)
        .build()
        .unwrap();
    let handle = layer.handle();
    std::thread::scope(|scope| {
        for successes in [1, 2] {
            let layer = &layer;
            scope.spawn(move || {
                for _ in 0..successes {
                    let guard = layer.guard(&()).unwrap();
                    guard.record_outcome(seawall_core::Outcome::Success);
                }
            });
        }
    });
    let service = ServiceBuilder::new().layer(layer).service(upstream());
    assert_eq!(send(&service, Script::Status(503)).await.unwrap(), 503);
    assert_eq!(handle.state(&()), State::Closed, "1 of 4: 25 %");
    assert_eq!(send(&service, Script::Status(503)).await.unwrap(), 503);
    assert_eq!(
        take(&events),
        vec![(State::Closed, State::Open, Reason::FailureRate(40.0))]
    );
}

/// A time window's success that expires older successes can raise the rate over the
/// threshold: it is evaluated whenever the window holds a failure.
#[tokio::test(start_paused = true)]
async fn a_time_window_success_that_expires_older_successes_trips() {
    let (events, listener) = recorder();
    let layer = single()
        .no_consecutive_failures()
        .failure_rate(50.0)
        .time_window(secs(10), 10)
        .minimum_calls(2)
        .on_transition(listener)
        .build()
        .unwrap();
    let handle = layer.handle();
    let service = ServiceBuilder::new().layer(layer).service(upstream());
    for _ in 0..2 {
        assert_eq!(send(&service, Script::Status(200)).await.unwrap(), 200);
    }
    advance(secs(5)).await;
    assert_eq!(send(&service, Script::Status(500)).await.unwrap(), 500);
    assert_eq!(handle.state(&()), State::Closed, "1 of 3: 33 %");
    // At 10 s the two successes of second 0 leave the window: this success is judged with
    // the failure, 1 of 2.
    advance(secs(5)).await;
    assert_eq!(send(&service, Script::Status(200)).await.unwrap(), 200);
    assert_eq!(handle.state(&()), State::Open);
    assert_eq!(
        take(&events),
        vec![(State::Closed, State::Open, Reason::FailureRate(50.0))]
    );
}
