//! States and transition events.

use std::fmt;
use std::time::Duration;

/// The state of one breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Calls pass and their outcomes are recorded.
    Closed,
    /// Calls are rejected until the open duration has passed.
    Open,
    /// A limited number of probe calls pass; their outcomes decide between closed and open.
    HalfOpen,
    /// Every call is rejected until the state is changed through the handle.
    ForcedOpen,
    /// Every call passes and nothing is recorded.
    Disabled,
    /// Calls pass and outcomes are recorded, but the breaker never opens.
    MetricsOnly,
}

impl State {
    /// A stable label: `closed`, `open`, `half_open`, `forced_open`, `disabled`, `metrics_only`.
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::ForcedOpen => "forced_open",
            State::Disabled => "disabled",
            State::MetricsOnly => "metrics_only",
        }
    }

    /// Every state, in a fixed order (for per-state figures).
    pub const ALL: [State; 6] = [
        State::Closed,
        State::Open,
        State::HalfOpen,
        State::ForcedOpen,
        State::Disabled,
        State::MetricsOnly,
    ];

    pub(crate) const fn code(self) -> u64 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
            State::ForcedOpen => 3,
            State::Disabled => 4,
            State::MetricsOnly => 5,
        }
    }

    pub(crate) const fn from_code(code: u64) -> State {
        match code {
            1 => State::Open,
            2 => State::HalfOpen,
            3 => State::ForcedOpen,
            4 => State::Disabled,
            5 => State::MetricsOnly,
            _ => State::Closed,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a transition happened.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reason {
    /// This many failures in a row reached the threshold.
    ConsecutiveFailures(u32),
    /// The failure rate over the window (percent) reached the threshold.
    FailureRate(f64),
    /// The slow-call rate over the window (percent) reached the threshold.
    SlowCallRate(f64),
    /// The open duration passed; probing starts.
    OpenElapsed,
    /// Enough half-open probes succeeded.
    ProbesSucceeded,
    /// A half-open probe failed.
    ProbeFailed,
    /// A half-open probe succeeded, but took longer than the slow-call threshold.
    ProbeSlow,
    /// Half-open probes did not finish within the maximum wait.
    HalfOpenTimedOut,
    /// Changed through the handle.
    Manual,
}

/// One state transition, given to listeners and logged through `tracing`.
#[derive(Debug, Clone, Copy)]
pub struct Transition<'a> {
    /// The key of the breaker (`()` for a single breaker).
    pub key: &'a dyn fmt::Debug,
    /// The state left.
    pub from: State,
    /// The state entered.
    pub to: State,
    /// Why.
    pub reason: Reason,
    /// For a transition to open: how long it stays open.
    pub open_for: Option<Duration>,
}
