//! Quotas: how many requests per period, with what burst.

use std::time::Duration;

use seawall_core::{ConfigError, check_range};

/// The longest a burst may span at the sustained rate: 100 years, in nanoseconds.
const MAX_BURST_SPAN_NANOS: u64 = 100 * 365 * 86_400 * 1_000_000_000;

/// The most admissions a window quota may count: its log holds one entry per admission.
pub const MAX_WINDOW_COUNT: u32 = 100_000;

/// One quota: `count` requests per `period`, enforced with GCRA (the default) or as an
/// exact sliding window ([`Quota::window`]).
///
/// A GCRA quota admits one request per emission interval (`period / count`) on average and
/// lets up to `burst` through back to back after an idle spell. The burst defaults to 1
/// (strictly paced); raise it with [`Quota::burst`]. A GCRA quota of `n` per minute with burst
/// `b` admits at most `b + n - 1` in any 60 s (`b` at once, then one every `60 / n` s); a
/// server counting "at most `n` in any minute" then refuses some of them. A window quota
/// admits at most `count` in any interval of length `period`, whatever came before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    interval_nanos: u64,
    burst: u32,
    /// For a window quota, the window's length in nanoseconds (its count is `burst`); 0 for
    /// GCRA.
    window_nanos: u64,
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
            window_nanos: 0,
        })
    }

    /// At most `n` admissions in any interval of length `period` (a sliding log): `n` from
    /// 1 to 100,000, `period` from 1 ms to 1 day. A request of cost `c` counts as `c`
    /// admissions. Each key keeps the instants of the admissions of the last `period`, so
    /// its memory is O(`n`): at most `n` entries of 16 bytes (1.6 MB at the largest `n`).
    pub fn window(n: u32, period: Duration) -> Result<Self, ConfigError> {
        check_range(
            "window",
            n,
            1,
            MAX_WINDOW_COUNT,
            "a count from 1 to 100,000 (each key keeps one entry per admission in the window)",
        )?;
        let quota = Self::per(n, period)?;
        Ok(Self {
            burst: n,
            window_nanos: u64::try_from(period.as_nanos()).unwrap_or(u64::MAX),
            ..quota
        })
    }

    /// Whether this is a window quota ([`Quota::window`]).
    pub fn is_window(&self) -> bool {
        self.window_nanos != 0
    }

    /// A window quota's period (`None` for GCRA).
    pub fn window_period(&self) -> Option<Duration> {
        self.is_window()
            .then(|| Duration::from_nanos(self.window_nanos))
    }

    /// A window quota's period in nanoseconds; 0 for GCRA.
    pub fn window_nanos(&self) -> u64 {
        self.window_nanos
    }

    /// Allows up to `burst` requests back to back (1 to 1,000,000, and a burst's worth of the
    /// sustained rate, `burst × period / count`, at most 100 years).
    /// A window quota has no burst of its own (it admits its whole count at once).
    pub fn burst(self, burst: u32) -> Result<Self, ConfigError> {
        if self.is_window() {
            return Err(ConfigError::new(
                "burst",
                burst,
                "a burst for a GCRA quota; a window admits its whole count at once",
            ));
        }
        check_range("burst", burst, 1, 1_000_000, "a count from 1 to 1,000,000")?;
        // The schedule may run a burst's span ahead of the clock, in nanoseconds from the
        // limiter's origin: bounded, so that no sum of instants can overflow.
        let span = u128::from(self.interval_nanos) * u128::from(burst);
        if span > u128::from(MAX_BURST_SPAN_NANOS) {
            return Err(ConfigError::new(
                "burst",
                burst,
                "a burst whose span (burst × period / count) is at most 100 years",
            ));
        }
        Ok(Self { burst, ..self })
    }

    /// `fraction` (over 0, at most 1) of this quota: the rate scaled down and the burst with
    /// it (at least 1). A process falling back to a local limiter when a shared store is
    /// unreachable takes its share this way.
    pub fn share(self, fraction: f64) -> Result<Self, ConfigError> {
        if !(fraction > 0.0 && fraction <= 1.0) {
            return Err(ConfigError::new(
                "share",
                fraction,
                "a fraction over 0 and at most 1",
            ));
        }
        // Both are finite and positive here; the casts saturate at the type's range.
        let interval_nanos = (self.interval_nanos as f64 / fraction).ceil() as u64;
        let burst = ((f64::from(self.burst) * fraction).floor() as u32).max(1);
        // As `burst` bounds it: a saturated interval would make the tolerance unbounded too,
        // and every request pass.
        if u128::from(interval_nanos) * u128::from(burst) > u128::from(MAX_BURST_SPAN_NANOS) {
            return Err(ConfigError::new(
                "share",
                fraction,
                "a fraction that leaves a burst spanning at most 100 years",
            ));
        }
        Ok(Self {
            interval_nanos,
            burst,
            ..self
        })
    }

    /// The time between two requests at the sustained rate.
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval_nanos)
    }

    /// The emission interval in nanoseconds.
    pub fn interval_nanos(&self) -> u64 {
        self.interval_nanos
    }

    /// The most requests admitted back to back (a window's count).
    pub fn burst_size(&self) -> u32 {
        self.burst
    }

    /// The burst tolerance in nanoseconds: how far ahead of now the schedule may run.
    pub(crate) fn tolerance_nanos(&self) -> u64 {
        self.interval_nanos.saturating_mul(u64::from(self.burst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_scales_rate_and_burst_and_keeps_one_token() {
        let quota = Quota::per_second(100).unwrap().burst(10).unwrap();
        let quarter = quota.share(0.25).unwrap();
        assert_eq!(quarter.interval(), Duration::from_millis(40));
        assert_eq!(quarter.burst_size(), 2);
        let sliver = quota.share(0.01).unwrap();
        assert_eq!(sliver.interval(), Duration::from_secs(1));
        assert_eq!(sliver.burst_size(), 1);
        assert_eq!(quota.share(1.0).unwrap(), quota);
        for bad in [0.0, -0.5, 1.5, f64::NAN] {
            assert_eq!(quota.share(bad).unwrap_err().field(), "share");
        }
        // A sliver whose interval would pass 100 years (one a second, shared 1e-11: 3,170
        // years between requests) is refused, not saturated into no limit at all.
        let one_a_second = Quota::per_second(1).unwrap();
        assert_eq!(one_a_second.share(1e-11).unwrap_err().field(), "share");
        assert_eq!(
            one_a_second.share(1e-9).unwrap().interval(),
            Duration::from_secs(1_000_000_000)
        );
    }
}
