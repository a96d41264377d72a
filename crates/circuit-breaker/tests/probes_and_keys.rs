//! Probes that are cancelled or hang, per-host isolation, and configuration errors.

mod support;

use std::future::Future;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use seawall_circuit_breaker::{CircuitBreakerLayer, Reason, State};
use support::*;
use tokio::time::{Instant, advance};
use tower::{Service, ServiceBuilder, ServiceExt};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_probe_gives_its_permit_back() {
    let layer = single()
        .consecutive_failures(1)
        .open_duration(secs(5))
        .half_open_permits(1)
        .half_open_successes(1)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut service = ServiceBuilder::new().layer(layer).service(upstream());
    send(&service, Script::Status(500)).await.unwrap();
    advance(secs(5)).await;

    // The only probe starts, is polled once, and is dropped by its caller.
    let mut probe = Box::pin(
        service
            .ready()
            .await
            .unwrap()
            .call(request(Script::After(secs(1), 200))),
    );
    assert!(matches!(
        probe.as_mut().poll(&mut Context::from_waker(Waker::noop())),
        Poll::Pending
    ));
    assert_eq!(handle.state(&()), State::HalfOpen);
    assert_eq!(handle.stats()[0].probe_permits_left, 0);
    assert!(
        send(&service, Script::Status(200)).await.is_err(),
        "no permit left"
    );
    drop(probe);
    assert_eq!(handle.stats()[0].probe_permits_left, 1, "permit returned");

    // The returned permit admits the next probe, which closes the breaker.
    assert_eq!(send(&service, Script::Status(200)).await.unwrap(), 200);
    assert_eq!(handle.state(&()), State::Closed);
}

/// A breaker probing with one permit for at most 30 s, open 5 s after each trip.
fn probing_layer(
    listener: impl Fn(&seawall_circuit_breaker::Transition<'_>) + Send + Sync + 'static,
) -> CircuitBreakerLayer {
    single()
        .consecutive_failures(1)
        .open_duration(secs(5))
        .half_open_permits(1)
        .half_open_successes(1)
        .half_open_max_wait(secs(30))
        .on_transition(listener)
        .build()
        .expect("a valid configuration")
}

#[tokio::test(start_paused = true)]
async fn a_hung_probe_reopens_the_breaker_at_the_max_wait_deadline() {
    let (events, listener) = recorder();
    let layer = probing_layer(listener);
    let handle = layer.handle();
    let service = ServiceBuilder::new().layer(layer).service(upstream());
    send(&service, Script::Status(500)).await.unwrap();
    advance(secs(5)).await;
    let deadline = Instant::now() + secs(30);
    let hung = tokio::spawn(service.clone().oneshot(request(Script::Hang)));
    tokio::task::yield_now().await;
    assert_eq!(handle.state(&()), State::HalfOpen);
    assert_eq!(
        take(&events),
        vec![
            (State::Closed, State::Open, Reason::ConsecutiveFailures(1)),
            (State::Open, State::HalfOpen, Reason::OpenElapsed),
        ]
    );

    // Refused in half-open, a caller is told when the breaker will next admit: after the
    // max wait has reopened it and the open time has passed, not at the deadline itself.
    advance(secs(10)).await;
    let refusal = send(&service, Script::Status(200)).await.unwrap_err();
    let open = refusal.as_open().unwrap();
    assert_eq!(open.state(), State::HalfOpen);
    assert_eq!(open.retry_at(), Some(deadline + secs(5)));

    // At the deadline the breaker is open, seen through the handle without any call, and
    // the transition is told once.
    advance(secs(20)).await;
    assert_eq!(Instant::now(), deadline);
    assert_eq!(handle.state(&()), State::Open);
    assert_eq!(
        take(&events),
        vec![(State::HalfOpen, State::Open, Reason::HalfOpenTimedOut)]
    );
    assert_eq!(handle.state(&()), State::Open);
    assert_eq!(handle.stats()[0].transitions, 3);
    // Closed to open and half-open to open: two trips; open to half-open is none.
    assert_eq!(handle.stats()[0].trips, 2);
    assert!(take(&events).is_empty());

    // It stays open for its open time from the deadline, refusing until exactly then.
    advance(secs(5) - Duration::from_millis(1)).await;
    let refusal = send(&service, Script::Status(200)).await.unwrap_err();
    let open = refusal.as_open().unwrap();
    assert_eq!(open.state(), State::Open);
    assert_eq!(open.retry_at(), Some(deadline + secs(5)));
    advance(Duration::from_millis(1)).await;
    assert_eq!(send(&service, Script::Status(200)).await.unwrap(), 200);
    assert_eq!(handle.state(&()), State::Closed);
    assert_eq!(
        take(&events),
        vec![
            (State::Open, State::HalfOpen, Reason::OpenElapsed),
            (State::HalfOpen, State::Closed, Reason::ProbesSucceeded),
        ]
    );
    // The hung call is still the caller's to cancel; dropping it changes nothing now.
    hung.abort();
    let _ = hung.await;
    assert_eq!(handle.state(&()), State::Closed);
    assert!(take(&events).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_probe_answering_after_the_max_wait_does_not_decide_the_reopened_breaker() {
    let (events, listener) = recorder();
    let layer = probing_layer(listener);
    let handle = layer.handle();
    let service = ServiceBuilder::new().layer(layer).service(upstream());
    send(&service, Script::Status(500)).await.unwrap();
    advance(secs(5)).await;
    let deadline = Instant::now() + secs(30);
    // The only probe answers 200, but only 40 s later; nothing looks at the breaker before.
    let late = tokio::spawn(
        service
            .clone()
            .oneshot(request(Script::After(secs(40), 200))),
    );
    tokio::task::yield_now().await;
    advance(secs(40)).await;
    assert_eq!(late.await.unwrap().unwrap().status(), 200);

    // The breaker reopened at the deadline; the late answer belongs to a probe round that
    // had ended and does not close it.
    assert_eq!(handle.state(&()), State::Open);
    let reasons: Vec<Reason> = take(&events).into_iter().map(|(_, _, r)| r).collect();
    assert_eq!(
        reasons,
        vec![
            Reason::ConsecutiveFailures(1),
            Reason::OpenElapsed,
            Reason::HalfOpenTimedOut,
        ]
    );
    // Its open time ran from the deadline and is over: the next call probes.
    assert!(Instant::now() >= deadline + secs(5));
    assert_eq!(send(&service, Script::Status(200)).await.unwrap(), 200);
    assert_eq!(handle.state(&()), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn host_a_open_does_not_affect_host_b() {
    let layer = CircuitBreakerLayer::builder()
        .per_host()
        .consecutive_failures(3)
        .build()
        .unwrap();
    let handle = layer.handle();
    let service = ServiceBuilder::new().layer(layer).service(upstream());
    for _ in 0..3 {
        service
            .clone()
            .oneshot(request_to("a.example", Script::Status(502)))
            .await
            .unwrap();
    }
    for _ in 0..10 {
        let response = service
            .clone()
            .oneshot(request_to("b.example", Script::Status(200)))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let refused = service
        .clone()
        .oneshot(request_to("a.example:80", Script::Status(200)))
        .await
        .unwrap_err();
    assert_eq!(refused.as_open().unwrap().state(), State::Open);
    assert_eq!(handle.state(&host("a.example")), State::Open);
    assert_eq!(handle.state(&host("b.example")), State::Closed);
    assert_eq!(handle.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn per_host_breakers_stay_within_max_keys() {
    let layer = CircuitBreakerLayer::builder()
        .per_host()
        .max_keys(50)
        .build()
        .unwrap();
    let handle = layer.handle();
    let service = ServiceBuilder::new().layer(layer).service(upstream());
    for i in 0..1_000 {
        service
            .clone()
            .oneshot(request_to(&format!("h{i}.example"), Script::Status(200)))
            .await
            .unwrap();
        assert!(handle.len() <= 50);
    }
}

#[test]
fn every_invalid_config_names_its_field() {
    let s = secs;
    let b = || CircuitBreakerLayer::builder();
    let cases = [
        (
            b().consecutive_failures(0).build().map(drop),
            "consecutive_failures",
        ),
        (b().failure_rate(0.0).build().map(drop), "failure_rate"),
        (b().failure_rate(100.5).build().map(drop), "failure_rate"),
        (b().failure_rate(f64::NAN).build().map(drop), "failure_rate"),
        (
            b().slow_calls(Duration::ZERO, 50.0).build().map(drop),
            "slow_call_duration",
        ),
        (
            b().slow_calls(s(1), -1.0).build().map(drop),
            "slow_call_rate",
        ),
        (b().count_window(0).build().map(drop), "window"),
        (b().count_window(10_001).build().map(drop), "window"),
        (
            b().time_window(Duration::from_millis(10), 10)
                .build()
                .map(drop),
            "window",
        ),
        (
            b().time_window(s(10), 1).build().map(drop),
            "window_buckets",
        ),
        (
            b().count_window(10).minimum_calls(11).build().map(drop),
            "minimum_calls",
        ),
        (b().minimum_calls(0).build().map(drop), "minimum_calls"),
        (
            b().no_consecutive_failures()
                .no_failure_rate()
                .build()
                .map(drop),
            "consecutive_failures",
        ),
        (
            b().open_duration(Duration::ZERO).build().map(drop),
            "open_duration",
        ),
        (
            b().open_backoff(s(10), s(1), 2.0, 0.1).build().map(drop),
            "max_open_duration",
        ),
        (
            b().open_backoff(s(1), s(10), 0.0, 0.1).build().map(drop),
            "open_multiplier",
        ),
        (
            b().open_backoff(s(1), s(10), 2.0, 1.5).build().map(drop),
            "open_jitter",
        ),
        (
            b().half_open_permits(0).build().map(drop),
            "half_open_permits",
        ),
        (
            b().half_open_permits(1_001).build().map(drop),
            "half_open_permits",
        ),
        (
            b().half_open_permits(2)
                .half_open_successes(3)
                .build()
                .map(drop),
            "half_open_successes",
        ),
        (
            b().half_open_max_wait(Duration::ZERO).build().map(drop),
            "half_open_max_wait",
        ),
        (b().per_host().max_keys(0).build().map(drop), "max_keys"),
        (
            b().per_host().figure_top_keys(1_001).build().map(drop),
            "figure_top_keys",
        ),
        (
            b().per_host().idle_after(Duration::ZERO).build().map(drop),
            "idle_after",
        ),
    ];
    for (result, field) in cases {
        let error = result.expect_err(field);
        assert_eq!(error.field(), field, "{error}");
        assert!(error.to_string().contains(field));
    }
}

#[tokio::test(start_paused = true)]
async fn an_idle_forced_open_host_is_not_forgotten() {
    let layer = CircuitBreakerLayer::builder()
        .per_host()
        .idle_after(secs(1))
        .build()
        .unwrap();
    let handle = layer.handle();
    let service = ServiceBuilder::new().layer(layer).service(upstream());
    handle.force_open(&host("a.example"));
    service
        .clone()
        .oneshot(request_to("b.example", Script::Status(200)))
        .await
        .unwrap();
    advance(secs(5)).await;
    // A new host triggers a sweep: b (closed, idle) goes, a (forced open) stays.
    service
        .clone()
        .oneshot(request_to("c.example", Script::Status(200)))
        .await
        .unwrap();
    assert_eq!(handle.len(), 2);
    assert_eq!(handle.state(&host("a.example")), State::ForcedOpen);
    let refused = service
        .clone()
        .oneshot(request_to("a.example", Script::Status(200)))
        .await
        .unwrap_err();
    assert_eq!(refused.as_open().unwrap().state(), State::ForcedOpen);
}
