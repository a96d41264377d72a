//! How long the breaker stays open: fixed, or growing on repeated trips.

use crate::sync::{AtomicU64, Ordering};
use std::time::Duration;

use seawall_core::{ConfigError, check_range};

/// The open duration after the `n`th consecutive trip (a trip counts as consecutive when the
/// breaker has not closed since the previous one).
///
/// The duration is `base × multiplier^(n-1)`, capped at `max`, then reduced by a random
/// fraction of at most `jitter`: it always lies in `[d × (1 - jitter), d]`, so the cap holds
/// and breakers that tripped together do not probe together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpenBackoff {
    base: Duration,
    max: Duration,
    multiplier: f64,
    jitter: f64,
}

impl Default for OpenBackoff {
    /// 60 s, doubling to at most 5 min, 20 % jitter.
    fn default() -> Self {
        Self {
            base: Duration::from_secs(60),
            max: Duration::from_secs(300),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

impl OpenBackoff {
    /// The same duration after every trip, with no jitter.
    pub fn fixed(duration: Duration) -> Result<Self, ConfigError> {
        Self::exponential(duration, duration, 1.0, 0.0)
    }

    /// Grows by `multiplier` per consecutive trip from `base` up to `max`, with `jitter`.
    ///
    /// `base` from 1 ms to 1 day; `max` from `base` to 7 days; `multiplier` from 1 to 100;
    /// `jitter` from 0 to 1.
    pub fn exponential(
        base: Duration,
        max: Duration,
        multiplier: f64,
        jitter: f64,
    ) -> Result<Self, ConfigError> {
        check_range(
            "open_duration",
            base,
            Duration::from_millis(1),
            Duration::from_secs(86_400),
            "a duration from 1 ms to 1 day",
        )?;
        check_range(
            "max_open_duration",
            max,
            base,
            Duration::from_secs(7 * 86_400),
            "a duration from `open_duration` to 7 days",
        )?;
        if !(1.0..=100.0).contains(&multiplier) {
            return Err(ConfigError::new(
                "open_multiplier",
                multiplier,
                "a number from 1 to 100",
            ));
        }
        if !(0.0..=1.0).contains(&jitter) {
            return Err(ConfigError::new(
                "open_jitter",
                jitter,
                "a fraction from 0 to 1",
            ));
        }
        Ok(Self {
            base,
            max,
            multiplier,
            jitter,
        })
    }

    /// The base duration.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The cap.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The upper bound (before jitter) after `trip` consecutive trips (1-based).
    pub fn ceiling(&self, trip: u32) -> Duration {
        let exponent = i32::try_from(trip.saturating_sub(1)).unwrap_or(i32::MAX);
        let grown = self.base.as_secs_f64() * self.multiplier.powi(exponent);
        if grown.is_finite() && grown < self.max.as_secs_f64() {
            Duration::from_secs_f64(grown)
        } else {
            self.max
        }
    }

    /// The lower bound after `trip` consecutive trips.
    pub fn floor(&self, trip: u32) -> Duration {
        self.ceiling(trip).mul_f64(1.0 - self.jitter)
    }

    /// The duration after `trip` consecutive trips, with `unit` in `[0, 1)` as the random draw.
    pub(crate) fn duration(&self, trip: u32, unit: f64) -> Duration {
        self.ceiling(trip).mul_f64(1.0 - self.jitter * unit)
    }
}

/// A tiny lock-free random source (SplitMix64), seedable so tests can pin the jitter.
#[derive(Debug)]
pub(crate) struct Jitter {
    state: AtomicU64,
}

impl Jitter {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            state: AtomicU64::new(seed),
        }
    }

    /// A uniform draw in `[0, 1)`.
    pub(crate) fn unit(&self) -> f64 {
        let mut z = self
            .state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // The top 53 bits make an exact double in [0, 1).
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_is_capped() {
        let backoff = OpenBackoff::default();
        assert_eq!(backoff.ceiling(1), Duration::from_secs(60));
        assert_eq!(backoff.ceiling(2), Duration::from_secs(120));
        assert_eq!(backoff.ceiling(3), Duration::from_secs(240));
        assert_eq!(backoff.ceiling(4), Duration::from_secs(300));
        assert_eq!(backoff.ceiling(u32::MAX), Duration::from_secs(300));
        assert_eq!(backoff.floor(1), Duration::from_secs(48));
    }

    #[test]
    fn jitter_draws_are_in_unit_range() {
        let jitter = Jitter::new(7);
        for _ in 0..10_000 {
            let u = jitter.unit();
            assert!((0.0..1.0).contains(&u));
        }
    }

    #[test]
    fn invalid_backoffs_name_the_field() {
        let s = Duration::from_secs;
        assert_eq!(
            OpenBackoff::fixed(Duration::ZERO).unwrap_err().field(),
            "open_duration"
        );
        assert_eq!(
            OpenBackoff::exponential(s(10), s(5), 2.0, 0.1)
                .unwrap_err()
                .field(),
            "max_open_duration"
        );
        assert_eq!(
            OpenBackoff::exponential(s(1), s(5), 0.5, 0.1)
                .unwrap_err()
                .field(),
            "open_multiplier"
        );
        assert_eq!(
            OpenBackoff::exponential(s(1), s(5), 2.0, f64::NAN)
                .unwrap_err()
                .field(),
            "open_jitter"
        );
    }
}
