//! Quotas: how many requests per period, with what burst.

use std::time::Duration;

use seawall_core::{ConfigError, check_range};

/// One quota, enforced with GCRA: `count` requests per `period`, at most `burst` at once.
///
/// A quota admits one request per emission interval (`period / count`) on average and lets
/// up to `burst` through back to back after an idle spell. The burst defaults to 1 (strictly
/// paced); raise it with [`Quota::burst`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    interval_nanos: u64,
    burst: u32,
}

impl Quota {
    /// `n` requests per second.
    pub fn per_second(n: u32) -> Result<Self, ConfigError> {
        Self::per(n, Duration::from_secs(1))
    }

    /// `n` requests per minute.
    pub fn per_minute(n: u32) -> Result<Self, ConfigError> {
        Self::per(n, Duration::from_secs(60))
    }

    /// `n` requests per hour.
    pub fn per_hour(n: u32) -> Result<Self, ConfigError> {
        Self::per(n, Duration::from_secs(3_600))
    }

    /// `n` requests per `period` (1 ms to 1 day; at most one request per nanosecond).
    pub fn per(n: u32, period: Duration) -> Result<Self, ConfigError> {
        check_range(
            "rate",
            n,
            1,
            1_000_000_000,
            "a count from 1 to 1,000,000,000",
        )?;
        check_range(
            "period",
            period,
            Duration::from_millis(1),
            Duration::from_secs(86_400),
            "a duration from 1 ms to 1 day",
        )?;
        let interval = period / n;
        check_range(
            "rate",
            interval,
            Duration::from_nanos(1),
            Duration::from_secs(86_400),
            "at most one request per nanosecond",
        )?;
        Ok(Self {
            interval_nanos: u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX),
            burst: 1,
        })
    }

    /// Allows up to `burst` requests back to back (1 to 1,000,000).
    pub fn burst(self, burst: u32) -> Result<Self, ConfigError> {
        check_range("burst", burst, 1, 1_000_000, "a count from 1 to 1,000,000")?;
        Ok(Self { burst, ..self })
    }

    /// The time between two requests at the sustained rate.
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval_nanos)
    }

    /// The emission interval in nanoseconds.
    pub fn interval_nanos(&self) -> u64 {
        self.interval_nanos
    }

    /// The most requests admitted back to back.
    pub fn burst_size(&self) -> u32 {
        self.burst
    }

    /// The burst tolerance in nanoseconds: how far ahead of now the schedule may run.
    pub(crate) fn tolerance_nanos(&self) -> u64 {
        self.interval_nanos.saturating_mul(u64::from(self.burst))
    }
}
