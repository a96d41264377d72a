//! The body of the `builder_configs` fuzz target, also run by `cargo test` over the seeds in
//! `fuzz/seeds/builder_configs` (`tests/tests/fuzz_seeds.rs`).
//!
//! Feeds arbitrary settings to every builder of the standard stack. The input is read in
//! 9-byte steps: one byte picks a setting, eight give its value (as an integer, a duration in
//! nanoseconds or seconds, or the bits of a float). Building must return the stack or a
//! `ConfigError` naming one of the stack's settings; it must never panic.

use std::time::Duration;

/// One setting and its raw value.
#[derive(Clone, Copy)]
struct Step {
    setting: u8,
    value: u64,
}

impl Step {
    fn int(self) -> u32 {
        self.value as u32
    }

    fn size(self) -> usize {
        self.value as usize
    }

    fn duration(self) -> Duration {
        // Odd settings read seconds, so the far end of `Duration` is reached too.
        if self.setting & 1 == 1 {
            Duration::new(self.value, ((self.value >> 32) as u32) % 1_000_000_000)
        } else {
            Duration::from_nanos(self.value)
        }
    }

    fn float(self) -> f64 {
        f64::from_bits(self.value)
    }
}

/// Every setting a builder of the standard stack can refuse, as `ConfigError::field` names it.
const FIELDS: [&str; 34] = [
    // Rate limiter.
    "rate",
    "burst",
    "period",
    "quota",
    "max_waiting",
    "max_wait",
    "max_keys",
    "idle_after",
    // Server hints.
    "max_delay",
    "ignore_above",
    // Circuit breaker.
    "consecutive_failures",
    "failure_rate",
    "minimum_calls",
    "window",
    "window_buckets",
    "slow_call_duration",
    "slow_call_rate",
    "open_duration",
    "max_open_duration",
    "open_multiplier",
    "open_jitter",
    "half_open_permits",
    "half_open_successes",
    "half_open_max_wait",
    // Retry.
    "max_attempts",
    "backoff_base",
    "backoff_cap",
    "deadline",
    "budget_ttl",
    "budget_percent",
    "budget_min_per_sec",
    "max_replay_bytes",
    // Metrics.
    "buckets",
    // The stack.
    "attempt_timeout",
];

fn steps(data: &[u8]) -> Vec<Step> {
    data.chunks(9)
        .filter_map(|chunk| {
            let (&setting, rest) = chunk.split_first()?;
            let mut value = [0u8; 8];
            value[..rest.len()].copy_from_slice(rest);
            Some(Step {
                setting,
                value: u64::from_le_bytes(value),
            })
        })
        .collect()
}

/// Builds the stack from the settings `data` encodes; panics if building panics or refuses
/// with an error that names no known setting.
pub(crate) fn run(data: &[u8]) {
    let steps = steps(data);
    let by_layer = |layer: u8| -> Vec<Step> {
        steps
            .iter()
            .copied()
            .filter(|step| step.setting % 5 == layer)
            .map(|step| Step {
                setting: step.setting / 5,
                value: step.value,
            })
            .collect()
    };
    let (limit, breaker, retry, metrics, stack) = (
        by_layer(0),
        by_layer(1),
        by_layer(2),
        by_layer(3),
        by_layer(4),
    );
    let mut builder = seawall::stack()
        .rate_limit(move |mut l| {
            for s in limit {
                l = match s.setting % 10 {
                    0 => l.per_second(s.int()),
                    1 => l.per_minute(s.int()),
                    2 => l.per_hour(s.int()),
                    3 => l.per(s.int(), s.duration()),
                    4 => l.burst(s.int()),
                    5 => l.wait(s.size(), s.duration()),
                    6 => l.fail_fast(),
                    7 => l.max_keys(s.size()),
                    8 => l.idle_after(s.duration()),
                    _ => l.obey_server(None),
                };
            }
            l
        })
        .circuit_breaker(move |mut b| {
            for s in breaker {
                b = match s.setting % 14 {
                    0 => b.consecutive_failures(s.int()),
                    1 => b.failure_rate(s.float()),
                    2 => b.slow_calls(s.duration(), s.float()),
                    3 => b.count_window(s.int()),
                    4 => b.time_window(s.duration(), s.int()),
                    5 => b.minimum_calls(s.int()),
                    6 => b.open_duration(s.duration()),
                    7 => b.half_open_permits(s.int()),
                    8 => b.half_open_successes(s.int()),
                    9 => b.half_open_max_wait(s.duration()),
                    10 => b.max_keys(s.size()),
                    11 => b.idle_after(s.duration()),
                    12 => b.no_consecutive_failures(),
                    _ => b.no_failure_rate(),
                };
            }
            b
        })
        .retry(move |mut r| {
            for s in retry {
                r = match s.setting % 9 {
                    0 => r.max_attempts(s.int()),
                    1 => r.exponential_backoff(s.duration(), Duration::from_nanos(s.value >> 7)),
                    2 => r.linear_backoff(Duration::from_nanos(s.value >> 7), s.duration()),
                    3 => r.fixed_backoff(s.duration()),
                    4 => r.deadline(s.duration()),
                    5 => r.budget(s.duration(), s.int(), s.float()),
                    6 => r.max_replay_bytes(s.size()),
                    7 => r.no_budget(),
                    _ => r.seed(s.value),
                };
            }
            r
        })
        .metrics(move |m| {
            let bounds: Vec<f64> = metrics.iter().map(|s| s.float()).collect();
            if bounds.is_empty() {
                m
            } else {
                m.buckets(bounds)
            }
        });
    for s in stack {
        builder = builder.attempt_timeout(s.duration());
    }
    if let Err(error) = builder.build() {
        assert!(
            FIELDS.contains(&error.field()),
            "the error names no setting of the stack: {error:?}"
        );
        assert!(
            error.to_string().contains(error.field()),
            "the message does not name the field: {error}"
        );
    }
}
