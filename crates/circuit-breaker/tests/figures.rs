//! The figures a keyed breaker reports to a metrics exporter: an aggregate over every key,
//! then the keys with the most failures, so that the series count stays bounded however many
//! hosts are called.

mod support;

use seawall_circuit_breaker::{CircuitBreakerBuilder, CircuitBreakerHandle, State};
use seawall_core::{ByHost, FigureKind, FigureSource, HostKey, KeyLabel};
use support::*;
use tower::{ServiceBuilder, ServiceExt};

/// One reported value: its name, key label (`None` for the aggregate), other labels, value.
type Reported = (
    &'static str,
    Option<String>,
    Vec<(&'static str, String)>,
    f64,
);

fn reported(handle: &CircuitBreakerHandle<HostKey>) -> Vec<Reported> {
    let mut all = Vec::new();
    handle.figures(&mut |figure| {
        let key = figure
            .labels
            .iter()
            .find(|(name, _)| *name == "key")
            .map(|(_, value)| (*value).to_owned());
        let others = figure
            .labels
            .iter()
            .filter(|(name, _)| *name != "key")
            .map(|(name, value)| (*name, (*value).to_owned()))
            .collect();
        assert!(matches!(
            figure.kind,
            FigureKind::Counter | FigureKind::Gauge
        ));
        all.push((figure.name, key, others, figure.value));
    });
    all
}

/// The keys of the series of `name` with the labels `others`, in the order reported.
fn keys_of(all: &[Reported], name: &str, others: &[(&str, &str)]) -> Vec<(Option<String>, f64)> {
    all.iter()
        .filter(|(n, _, labels, _)| {
            *n == name
                && labels.len() == others.len()
                && others
                    .iter()
                    .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, key, _, value)| (key.clone(), *value))
        .collect()
}

/// Calls `hosts` hosts; host `i` answers one success and then `i` failures. No trips: the
/// rate needs 100 calls and consecutive failures are off.
async fn call_hosts(
    builder: CircuitBreakerBuilder<seawall_core::HttpClassifier, ByHost>,
    hosts: u32,
) -> CircuitBreakerHandle<HostKey> {
    let layer = builder
        .no_consecutive_failures()
        .minimum_calls(100)
        .build()
        .expect("a valid configuration");
    let handle = layer.handle();
    let service = ServiceBuilder::new().layer(layer).service(upstream());
    for i in 0..hosts {
        let host = format!("h{i}.example");
        let calls = std::iter::once(200).chain(std::iter::repeat_n(500, i as usize));
        for status in calls {
            let response = service
                .clone()
                .oneshot(request_to(&host, Script::Status(status)))
                .await
                .expect("the breaker stays closed");
            assert_eq!(response.status().as_u16(), status);
        }
    }
    assert_eq!(handle.len(), hosts as usize);
    handle
}

fn label(i: u32) -> Option<String> {
    Some(host(&format!("h{i}.example")).label())
}

/// The series expected for `shown`: the aggregate (no key), then each host, with `value`.
fn expected(
    shown: &[u32],
    aggregate: f64,
    value: impl Fn(u32) -> f64,
) -> Vec<(Option<String>, f64)> {
    std::iter::once((None, aggregate))
        .chain(shown.iter().map(|&i| (label(i), value(i))))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn by_default_figures_carry_the_aggregate_and_the_ten_keys_with_most_failures() {
    let handle = call_hosts(per_host(), 30).await;
    let all = reported(&handle);
    // Hosts 29 down to 20 failed most: 29 failures, 28, ... 20.
    let top: Vec<u32> = (20..30).rev().collect();
    let failures_total = f64::from((0..30).sum::<u32>());
    assert_eq!(
        keys_of(
            &all,
            "seawall_circuit_breaker_calls",
            &[("outcome", "failure")]
        ),
        expected(&top, failures_total, f64::from)
    );
    assert_eq!(
        keys_of(
            &all,
            "seawall_circuit_breaker_calls",
            &[("outcome", "success")]
        ),
        expected(&top, 30.0, |_| 1.0)
    );
    // The aggregate state is the number of breakers in each state.
    assert_eq!(
        keys_of(
            &all,
            "seawall_circuit_breaker_state",
            &[("state", "closed")]
        ),
        expected(&top, 30.0, |_| 1.0)
    );
    assert_eq!(
        keys_of(&all, "seawall_circuit_breaker_state", &[("state", "open")]),
        expected(&top, 0.0, |_| 0.0)
    );
    for name in [
        "seawall_circuit_breaker_slow_calls",
        "seawall_circuit_breaker_rejected",
        "seawall_circuit_breaker_transitions",
        "seawall_circuit_breaker_trips",
    ] {
        assert_eq!(
            keys_of(&all, name, &[]),
            expected(&top, 0.0, |_| 0.0),
            "{name}"
        );
    }
    // Exactly the aggregate and ten keys' series, nothing for the other twenty hosts.
    let series = (1 + 10) * (State::ALL.len() + 3 + 4);
    assert_eq!(all.len(), series);
}

#[tokio::test(start_paused = true)]
async fn figure_top_keys_sets_how_many_keys_get_their_own_series() {
    let handle = call_hosts(per_host().figure_top_keys(3), 30).await;
    let all = reported(&handle);
    assert_eq!(
        keys_of(
            &all,
            "seawall_circuit_breaker_calls",
            &[("outcome", "failure")]
        ),
        expected(&[29, 28, 27], f64::from((0..30).sum::<u32>()), f64::from)
    );
    assert_eq!(all.len(), (1 + 3) * (State::ALL.len() + 3 + 4));

    // None: the aggregate alone.
    let handle = call_hosts(per_host().figure_top_keys(0), 5).await;
    let all = reported(&handle);
    assert_eq!(
        keys_of(
            &all,
            "seawall_circuit_breaker_calls",
            &[("outcome", "failure")]
        ),
        vec![(None, 10.0)]
    );
    assert_eq!(all.len(), State::ALL.len() + 3 + 4);
}

#[tokio::test(start_paused = true)]
async fn figure_every_key_gives_every_key_its_series_most_failures_first() {
    let handle = call_hosts(per_host().figure_every_key(), 30).await;
    let all = reported(&handle);
    let every: Vec<u32> = (0..30).rev().collect();
    assert_eq!(
        keys_of(
            &all,
            "seawall_circuit_breaker_calls",
            &[("outcome", "failure")]
        ),
        expected(&every, f64::from((0..30).sum::<u32>()), f64::from)
    );
    assert_eq!(all.len(), (1 + 30) * (State::ALL.len() + 3 + 4));
}

#[tokio::test(start_paused = true)]
async fn the_aggregate_counts_open_breakers_and_a_tripped_key_leads() {
    // Host 0 trips on its first failure; nine others only succeed.
    let layer = per_host()
        .consecutive_failures(1)
        .figure_top_keys(2)
        .build()
        .expect("a valid configuration");
    let handle = layer.handle();
    let service = ServiceBuilder::new().layer(layer).service(upstream());
    for i in 0..10 {
        let status = if i == 0 { 503 } else { 200 };
        service
            .clone()
            .oneshot(request_to(&format!("h{i}.example"), Script::Status(status)))
            .await
            .expect("admitted");
    }
    let all = reported(&handle);
    let open = keys_of(&all, "seawall_circuit_breaker_state", &[("state", "open")]);
    assert_eq!(open[0], (None, 1.0));
    assert_eq!(open[1], (label(0), 1.0));
    assert_eq!(
        keys_of(
            &all,
            "seawall_circuit_breaker_state",
            &[("state", "closed")]
        )[0],
        (None, 9.0)
    );
    assert_eq!(
        keys_of(&all, "seawall_circuit_breaker_transitions", &[])[..2],
        [(None, 1.0), (label(0), 1.0)]
    );
    assert_eq!(
        keys_of(&all, "seawall_circuit_breaker_trips", &[])[..2],
        [(None, 1.0), (label(0), 1.0)]
    );
}

#[test]
fn a_single_breaker_reports_its_figures_without_a_key() {
    let handle = seawall_circuit_breaker::CircuitBreakerLayer::builder()
        .build()
        .expect("a valid configuration")
        .handle();
    let mut keys = Vec::new();
    let mut count = 0;
    handle.figures(&mut |figure| {
        count += 1;
        keys.extend(
            figure
                .labels
                .iter()
                .filter(|(name, _)| *name == "key")
                .map(|_| ()),
        );
    });
    assert_eq!(count, State::ALL.len() + 3 + 4);
    assert!(keys.is_empty());
}

fn per_host() -> CircuitBreakerBuilder<seawall_core::HttpClassifier, ByHost> {
    seawall_circuit_breaker::CircuitBreakerLayer::builder().per_host()
}

#[tokio::test(start_paused = true)]
async fn the_aggregate_never_goes_down_when_idle_keys_are_dropped() {
    let layer = per_host()
        .idle_after(std::time::Duration::from_secs(1))
        .build()
        .expect("a valid configuration");
    let handle = layer.handle();
    let service = ServiceBuilder::new().layer(layer).service(upstream());
    let call = |host: &'static str, status: u16| {
        service
            .clone()
            .oneshot(request_to(host, Script::Status(status)))
    };
    call("a.example", 500).await.expect("admitted");
    call("a.example", 200).await.expect("admitted");
    call("b.example", 200).await.expect("admitted");
    let aggregate = |outcome: &str| {
        keys_of(
            &reported(&handle),
            "seawall_circuit_breaker_calls",
            &[("outcome", outcome)],
        )[0]
        .clone()
    };
    assert_eq!(aggregate("failure"), (None, 1.0));
    assert_eq!(aggregate("success"), (None, 2.0));

    tokio::time::advance(std::time::Duration::from_secs(5)).await;
    // A new host, answering 429 (neither a success nor a failure), triggers a sweep: a and
    // b, closed and idle, are dropped.
    call("c.example", 429).await.expect("admitted");
    assert_eq!(handle.len(), 1);

    // The dropped keys' calls still count in the aggregate.
    assert_eq!(aggregate("failure"), (None, 1.0));
    assert_eq!(aggregate("success"), (None, 2.0));
    assert_eq!(aggregate("ignored"), (None, 1.0));
    let all = reported(&handle);
    assert_eq!(
        keys_of(
            &all,
            "seawall_circuit_breaker_state",
            &[("state", "closed")]
        )[0],
        (None, 1.0),
        "the state gauge counts the breakers held"
    );
}

#[test]
fn a_key_whose_label_is_empty_is_counted_in_the_aggregate_only() {
    // Its series would carry no key label, the same series as the aggregate's.
    let handle = seawall_circuit_breaker::CircuitBreakerLayer::builder()
        .key_by(|_: &seawall_core::RequestHead<'_>| String::new())
        .build()
        .expect("a valid configuration")
        .handle();
    handle.force_open(&String::new());
    handle.force_open(&"x".to_owned());
    let mut open = Vec::new();
    handle.figures(&mut |figure| {
        if figure.name == "seawall_circuit_breaker_state"
            && figure.labels.contains(&("state", "forced_open"))
        {
            let key = figure.labels.iter().find(|(name, _)| *name == "key");
            open.push((key.map(|(_, value)| (*value).to_owned()), figure.value));
        }
    });
    assert_eq!(open, vec![(None, 2.0), (Some("x".to_owned()), 1.0)]);
}
