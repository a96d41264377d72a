//! Backoff as configured through the builder: proportional jitter (±p %) and the growth factor
//! of exponential backoff, with exact bounds over many seeded draws and exact curves.

use std::time::Duration;

use seawall_retry::{Backoff, Jitter, RetryBuilder, RetryLayer, Rng};

const MS: Duration = Duration::from_millis(1);

fn backoff(builder: RetryBuilder) -> Backoff {
    *builder.build().expect("valid config").policy().backoff()
}

/// `d × (1 ± p %)` in whole nanoseconds: the lowest and the highest delay allowed.
fn bounds(d: Duration, percent: u32) -> (Duration, Duration) {
    let nanos = d.as_nanos() as u64;
    let spread = nanos * u64::from(percent) / 100;
    (
        Duration::from_nanos(nanos - spread),
        Duration::from_nanos(nanos + spread),
    )
}

#[test]
fn proportional_jitter_stays_within_p_percent_of_the_delay_over_many_draws() {
    for percent in [25, 10, 100, 1] {
        let backoff = backoff(
            RetryLayer::builder()
                .fixed_backoff(100 * MS)
                .jitter(Jitter::Proportional(f64::from(percent))),
        );
        let (low, high) = bounds(100 * MS, percent);
        let mut rng = Rng::new(u64::from(percent));
        let draws: Vec<Duration> = (0..10_000)
            .map(|_| backoff.delay(1, Duration::ZERO, &mut rng))
            .collect();
        for delay in &draws {
            assert!(
                (low..=high).contains(delay),
                "±{percent} %: {delay:?} outside [{low:?}, {high:?}]"
            );
        }
        // The draws reach both ends (within 0.1 % of the spread), not one point.
        let spread = high - low;
        let (min, max) = (
            *draws.iter().min().expect("draws"),
            *draws.iter().max().expect("draws"),
        );
        assert!(min - low <= spread / 1_000, "±{percent} %: lowest {min:?}");
        assert!(
            high - max <= spread / 1_000,
            "±{percent} %: highest {max:?}"
        );
    }
}

#[test]
fn proportional_jitter_spreads_around_the_capped_curve() {
    // Exponential from 100 ms, capped at 1 s: 100, 200, 400, 800, 1000, 1000 ms.
    let backoff = backoff(
        RetryLayer::builder()
            .exponential_backoff(100 * MS, 1_000 * MS)
            .jitter(Jitter::Proportional(25.0)),
    );
    let curve = [100, 200, 400, 800, 1_000, 1_000];
    let mut rng = Rng::new(7);
    let mut at_cap = Vec::new();
    for _ in 0..2_000 {
        for (n, ms) in (1..).zip(curve) {
            let (low, high) = bounds(ms * MS, 25);
            let delay = backoff.delay(n, Duration::ZERO, &mut rng);
            assert!(
                (low..=high).contains(&delay),
                "retry {n}: {delay:?} vs {ms} ms ± 25 %"
            );
            if n >= 5 {
                at_cap.push(delay);
            }
        }
    }
    // At the cap the draws spread on both sides of it rather than piling up on it.
    let above = at_cap.iter().filter(|d| **d > 1_000 * MS).count();
    let below = at_cap.iter().filter(|d| **d < 1_000 * MS).count();
    assert_eq!(above + below, at_cap.len());
    assert!(
        above > 1_800 && below > 1_800,
        "{above} above, {below} below"
    );
}

#[test]
fn a_growth_factor_of_1_5_gives_the_exact_curve_capped() {
    let backoff = backoff(
        RetryLayer::builder()
            .exponential_backoff(100 * MS, 1_000 * MS)
            .backoff_factor(1.5)
            .jitter(Jitter::None),
    );
    assert_eq!(backoff.factor(), 1.5);
    let mut rng = Rng::new(1);
    let delays: Vec<Duration> = (1..=9)
        .map(|n| backoff.delay(n, Duration::ZERO, &mut rng))
        .collect();
    assert_eq!(
        delays,
        [
            Duration::from_nanos(100_000_000),
            Duration::from_nanos(150_000_000),
            Duration::from_nanos(225_000_000),
            Duration::from_nanos(337_500_000),
            Duration::from_nanos(506_250_000),
            Duration::from_nanos(759_375_000),
            1_000 * MS,
            1_000 * MS,
            1_000 * MS,
        ]
    );
    // Far past any exponent the curve stays at the cap.
    assert_eq!(
        backoff.delay(u32::MAX, Duration::ZERO, &mut rng),
        1_000 * MS
    );
}

#[test]
fn the_default_growth_factor_doubles() {
    let backoff = backoff(
        RetryLayer::builder()
            .exponential_backoff(100 * MS, 10_000 * MS)
            .jitter(Jitter::None),
    );
    assert_eq!(backoff.factor(), 2.0);
    let mut rng = Rng::new(1);
    let delays: Vec<Duration> = (1..=5)
        .map(|n| backoff.delay(n, Duration::ZERO, &mut rng))
        .collect();
    assert_eq!(delays, [100 * MS, 200 * MS, 400 * MS, 800 * MS, 1_600 * MS]);
}

#[test]
fn invalid_jitter_percent_and_growth_factor_name_the_field_and_range() {
    for percent in [0.0, -5.0, 100.5, f64::NAN, f64::INFINITY] {
        let err = RetryLayer::builder()
            .jitter(Jitter::Proportional(percent))
            .build()
            .expect_err("invalid percent");
        assert_eq!(err.field(), "jitter_percent", "{percent}");
        assert_eq!(err.expected(), "a percentage above 0 and at most 100");
    }
    for factor in [1.0, 0.5, -2.0, f64::NAN, f64::INFINITY] {
        let err = RetryLayer::builder()
            .backoff_factor(factor)
            .build()
            .expect_err("invalid factor");
        assert_eq!(err.field(), "backoff_factor", "{factor}");
        assert_eq!(err.expected(), "a finite number above 1");
    }
    // The accepted ends.
    for percent in [100.0, 0.001] {
        RetryLayer::builder()
            .jitter(Jitter::Proportional(percent))
            .build()
            .expect("valid percent");
    }
    RetryLayer::builder()
        .backoff_factor(1.000_001)
        .build()
        .expect("valid factor");
}
