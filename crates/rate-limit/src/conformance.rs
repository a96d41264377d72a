//! The GCRA golden table every [`RateStore`] must pass, so that the in-process store and a
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
    let quotas = [golden_quota()];
    let slot = store.new_slot(&"golden");
    let start = tokio::time::Instant::now();
    let mut elapsed_ms = 0;
    for (index, step) in GOLDEN_TABLE.iter().enumerate() {
        if step.at_ms > elapsed_ms {
            advance(Duration::from_millis(step.at_ms - elapsed_ms)).await;
            elapsed_ms = step.at_ms;
        }
        let decision = store
            .acquire(
                &slot,
                &quotas,
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
