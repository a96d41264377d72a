//! The validated configuration of a circuit breaker.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use seawall_core::{ConfigError, HintPolicy, KeyLimits, check_range};

use crate::backoff::OpenBackoff;
use crate::event::Transition;

/// Which recent calls the failure and slow-call rates are computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The last `n` calls (1 to 10,000), sliding one call at a time.
    Count(u32),
    /// The calls of the last `duration`, in `buckets` equal slices (2 to 1,000).
    Time {
        /// The window's length (100 ms to 1 h).
        duration: Duration,
        /// How many slices the window slides by.
        buckets: u32,
    },
}

/// Which keys of a keyed layer get their own series in the figures it reports (the
/// aggregate over every key is always reported).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FigureKeys {
    /// The keys with the most failures, at most this many.
    Top(usize),
    /// Every key held.
    All,
}

/// The most keys [`FigureKeys::Top`] may name.
pub(crate) const MAX_FIGURE_TOP_KEYS: usize = 1_000;

/// Called once for every state transition.
pub type TransitionListener = Arc<dyn Fn(&Transition<'_>) + Send + Sync>;

/// Everything a breaker decides by. Built by [`CircuitBreakerLayer::builder`].
///
/// [`CircuitBreakerLayer::builder`]: crate::CircuitBreakerLayer::builder
#[derive(Clone)]
pub struct Config {
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) failure_rate: Option<f64>,
    pub(crate) slow_call: Option<(Duration, f64)>,
    pub(crate) window: Window,
    pub(crate) minimum_calls: u32,
    pub(crate) open: OpenBackoff,
    pub(crate) retry_after_sets_open: bool,
    pub(crate) hint_policy: HintPolicy,
    pub(crate) half_open_permits: u32,
    pub(crate) half_open_successes: u32,
    pub(crate) half_open_max_wait: Duration,
    pub(crate) throttled_is_failure: bool,
    pub(crate) key_limits: KeyLimits,
    pub(crate) figure_keys: FigureKeys,
    pub(crate) listeners: Vec<TransitionListener>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("consecutive_failures", &self.consecutive_failures)
            .field("failure_rate", &self.failure_rate)
            .field("slow_call", &self.slow_call)
            .field("window", &self.window)
            .field("minimum_calls", &self.minimum_calls)
            .field("open", &self.open)
            .field("retry_after_sets_open", &self.retry_after_sets_open)
            .field("half_open_permits", &self.half_open_permits)
            .field("half_open_successes", &self.half_open_successes)
            .field("half_open_max_wait", &self.half_open_max_wait)
            .field("throttled_is_failure", &self.throttled_is_failure)
            .field("key_limits", &self.key_limits)
            .field("figure_keys", &self.figure_keys)
            .field("listeners", &self.listeners.len())
            .finish()
    }
}

impl Default for Config {
    /// Trips at 5 consecutive failures or 50 % of the last 100 calls (at least 20 calls);
    /// open 60 s, doubling per repeated trip up to 5 min with 20 % jitter; 3 half-open probes,
    /// all of which must succeed, released after 2 min if they hang; 429 ignored; a keyed
    /// layer's figures name the 10 keys with the most failures.
    fn default() -> Self {
        Self {
            consecutive_failures: Some(5),
            failure_rate: Some(50.0),
            slow_call: None,
            window: Window::Count(100),
            minimum_calls: 20,
            open: OpenBackoff::default(),
            retry_after_sets_open: true,
            hint_policy: HintPolicy::default(),
            half_open_permits: 3,
            half_open_successes: 3,
            half_open_max_wait: Duration::from_secs(120),
            throttled_is_failure: false,
            key_limits: KeyLimits::default(),
            figure_keys: FigureKeys::Top(10),
            listeners: Vec::new(),
        }
    }
}

/// The most half-open permits; they are counted in 12 bits of the breaker's state word.
pub(crate) const MAX_PERMITS: u32 = 1_000;

impl Config {
    pub(crate) fn validate(self) -> Result<Self, ConfigError> {
        if let Some(n) = self.consecutive_failures {
            check_range(
                "consecutive_failures",
                n,
                1,
                1_000_000,
                "an integer from 1 to 1,000,000",
            )?;
        }
        if let Some(rate) = self.failure_rate {
            check_percent("failure_rate", rate)?;
        }
        if let Some((threshold, rate)) = self.slow_call {
            check_range(
                "slow_call_duration",
                threshold,
                Duration::from_millis(1),
                Duration::from_secs(3_600),
                "a duration from 1 ms to 1 h",
            )?;
            check_percent("slow_call_rate", rate)?;
        }
        match self.window {
            Window::Count(n) => {
                check_range(
                    "window",
                    n,
                    1,
                    10_000,
                    "a count window of 1 to 10,000 calls",
                )?;
            }
            Window::Time { duration, buckets } => {
                check_range(
                    "window",
                    duration,
                    Duration::from_millis(100),
                    Duration::from_secs(3_600),
                    "a time window from 100 ms to 1 h",
                )?;
                check_range(
                    "window_buckets",
                    buckets,
                    2,
                    1_000,
                    "an integer from 2 to 1,000",
                )?;
            }
        }
        let window_calls = match self.window {
            Window::Count(n) => n,
            Window::Time { .. } => u32::MAX,
        };
        check_range(
            "minimum_calls",
            self.minimum_calls,
            1,
            window_calls,
            "an integer from 1 to the count window's size",
        )?;
        if self.consecutive_failures.is_none()
            && self.failure_rate.is_none()
            && self.slow_call.is_none()
        {
            return Err(ConfigError::new(
                "consecutive_failures",
                "none",
                "at least one trip policy: consecutive failures, a failure rate or a slow-call rate",
            ));
        }
        check_range(
            "half_open_permits",
            self.half_open_permits,
            1,
            MAX_PERMITS,
            "an integer from 1 to 1,000",
        )?;
        check_range(
            "half_open_successes",
            self.half_open_successes,
            1,
            self.half_open_permits,
            "an integer from 1 to `half_open_permits`",
        )?;
        check_range(
            "half_open_max_wait",
            self.half_open_max_wait,
            Duration::from_millis(1),
            Duration::from_secs(86_400),
            "a duration from 1 ms to 1 day",
        )?;
        if let FigureKeys::Top(n) = self.figure_keys {
            check_range(
                "figure_top_keys",
                n,
                0,
                MAX_FIGURE_TOP_KEYS,
                "an integer from 0 to 1,000",
            )?;
        }
        Ok(self)
    }
}

fn check_percent(field: &'static str, value: f64) -> Result<f64, ConfigError> {
    if value.is_finite() && value > 0.0 && value <= 100.0 {
        Ok(value)
    } else {
        Err(ConfigError::new(
            field,
            value,
            "a percentage above 0 and at most 100",
        ))
    }
}
