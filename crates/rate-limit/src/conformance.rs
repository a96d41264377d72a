//! The golden tables (GCRA, and a window quota) every [`RateStore`] must pass, so that the in-process store and a
//! shared store (Redis) decide alike. A store's own tests run it with [`run_golden_table`].

use std::time::Duration;

use crate::quota::Quota;
use crate::store::{Decision, RateStore};

/// One step: at `at_ms` after the start, a request of `cost` gets `expected`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Milliseconds since the first step.
    pub at_ms: u64,
    /// The request's cost.
    pub cost: u32,
    /// The store's expected answer.
    pub expected: Decision,
}

const fn step(at_ms: u64, cost: u32, expected: Decision) -> Step {
    Step {
        at_ms,
        cost,
        expected,
    }
}

const fn wait_ms(ms: u64) -> Decision {
    Decision::Wait(Duration::from_millis(ms))
}

const ADMITTED: Decision = Decision::Admitted;

/// The quota of the golden table: 10 per second (one per 100 ms), burst 3.
pub fn golden_quota() -> Quota {
    match Quota::per_second(10).and_then(|quota| quota.burst(3)) {
        Ok(quota) => quota,
        Err(_) => unreachable!("10/s with burst 3 is a valid quota"),
    }
}

/// Burst drain, exact recovery instants, weighted and oversize requests.
pub const GOLDEN_TABLE: [Step; 19] = [
    // A fresh key drains its burst of 3 at once.
    step(0, 1, ADMITTED),
    step(0, 1, ADMITTED),
    step(0, 1, ADMITTED),
    // Then one token per 100 ms, counted from the burst's end.
    step(0, 1, wait_ms(100)),
    step(50, 1, wait_ms(50)),
    step(100, 1, ADMITTED),
    step(100, 1, wait_ms(100)),
    step(150, 1, wait_ms(50)),
    step(200, 1, ADMITTED),
    // After 300 ms idle the burst is whole again.
    step(500, 1, ADMITTED),
    step(500, 1, ADMITTED),
    step(500, 1, ADMITTED),
    step(500, 1, wait_ms(100)),
    // Weighted: cost 3 takes the whole refilled burst; cost 2 then waits for two tokens.
    step(1_000, 3, ADMITTED),
    step(1_000, 2, wait_ms(200)),
    step(1_200, 2, ADMITTED),
    // More than the burst can ever hold.
    step(1_200, 4, Decision::Oversize),
    // Long idle refills to the burst, no further.
    step(5_000, 1, ADMITTED),
    step(5_000, 3, wait_ms(100)),
];

/// The quota of the window golden table: at most 3 in any second.
pub fn window_golden_quota() -> Quota {
    match Quota::window(3, Duration::from_secs(1)) {
        Ok(quota) => quota,
        Err(_) => unreachable!("3 in any second is a valid window"),
    }
}

/// A window of 3 in any second: the whole count at once, each wait ending exactly when the
/// oldest admission it needs gone leaves the window, weighted and oversize requests.
pub const WINDOW_GOLDEN_TABLE: [Step; 13] = [
    step(0, 1, ADMITTED),
    step(300, 1, ADMITTED),
    step(600, 1, ADMITTED),
    // Full: the admission at 0 leaves the window at 1,000.
    step(600, 1, wait_ms(400)),
    step(1_000, 1, ADMITTED),
    step(1_000, 1, wait_ms(300)),
    // Cost 2 at 1,300 (the admission at 300 has just left): the one at 600 must leave too.
    step(1_300, 2, wait_ms(300)),
    step(1_600, 2, ADMITTED),
    // More than the window can ever hold.
    step(1_600, 4, Decision::Oversize),
    step(1_600, 1, wait_ms(400)),
    step(2_000, 1, ADMITTED),
    // Long idle: the whole count again, at once.
    step(5_000, 3, ADMITTED),
    step(5_000, 1, wait_ms(1_000)),
];

/// Runs the window golden table against `store`, as [`run_golden_table`] runs the GCRA one.
pub async fn run_window_golden_table<St, F, Fut>(store: &St, advance: F) -> Result<(), String>
where
    St: RateStore,
    F: Fn(Duration) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let quotas = [window_golden_quota()];
    run_table(
        store,
        "golden-window",
        &quotas,
        &WINDOW_GOLDEN_TABLE,
        advance,
    )
    .await
}

/// Runs the golden table against `store`. Each attempt is given the step's instant (the
/// start plus `at_ms`) as its `now`; `advance` moves the store's own clock forward to match,
/// for a store that reads one (for the in-process store, `tokio::time::advance` on paused
/// time; a store that decides by the `now` it is given needs nothing). Returns the first step
/// that disagreed, with what the store said.
pub async fn run_golden_table<St, F, Fut>(store: &St, advance: F) -> Result<(), String>
where
    St: RateStore,
    F: Fn(Duration) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    run_table(store, "golden", &[golden_quota()], &GOLDEN_TABLE, advance).await
}

async fn run_table<St, F, Fut>(
    store: &St,
    name: &str,
    quotas: &[Quota],
    table: &[Step],
    advance: F,
) -> Result<(), String>
where
    St: RateStore,
    F: Fn(Duration) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let slot = store.new_slot(&name);
    let start = tokio::time::Instant::now();
    let mut elapsed_ms = 0;
    for (index, step) in table.iter().enumerate() {
        if step.at_ms > elapsed_ms {
            advance(Duration::from_millis(step.at_ms - elapsed_ms)).await;
            elapsed_ms = step.at_ms;
        }
        let decision = store
            .acquire(
                &slot,
                quotas,
                step.cost,
                start + Duration::from_millis(step.at_ms),
            )
            .await
            .map_err(|error| format!("step {index}: {error}"))?;
        if decision != step.expected {
            return Err(format!(
                "step {index} ({step:?}): the store answered {decision:?}"
            ));
        }
    }
    Ok(())
}
