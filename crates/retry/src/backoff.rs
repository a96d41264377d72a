//! How long to wait before each retry: a growth curve, a cap, and jitter.

use std::time::Duration;

use seawall_core::{ConfigError, check_range};

/// How the delay grows with each retry, before jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Growth {
    /// `base × factor^(n-1)` before retry `n`; the [factor](Backoff::factor) is 2 unless set.
    Exponential,
    /// `base × n` before retry `n`.
    Linear,
    /// `base` before every retry.
    Fixed,
}

/// How the delay is randomised, so that clients that failed together do not retry together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Jitter {
    /// Exactly the computed delay.
    None,
    /// Uniform in `[0, d]`: the most spread, the best for contended upstreams.
    Full,
    /// Uniform in `[d/2, d]`: never much shorter than the curve.
    Equal,
    /// Uniform in `[base, 3 × previous delay]`, capped: the AWS "decorrelated" variant,
    /// which grows from the previous delay rather than from the retry number.
    Decorrelated,
    /// Uniform in `[d × (1 - p/100), d × (1 + p/100)]`: `±p %` around the capped curve, as
    /// gRPC's connection backoff (±20 %) does. Like gRPC's, it applies after the cap, so a
    /// delay at the cap may exceed it by up to `p %`; otherwise every client at the cap
    /// (and every client of a fixed backoff) would wait no longer than the cap, the very
    /// clustering jitter is for. `p` is a percentage above 0 and at most 100 (validated by
    /// the builder: field `jitter_percent`).
    Proportional(f64),
}

/// A validated backoff: growth (with its factor), base, cap and jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    growth: Growth,
    base: Duration,
    cap: Duration,
    jitter: Jitter,
    factor: f64,
}

impl Default for Backoff {
    /// Exponential from 1 s, capped at 60 s, full jitter.
    fn default() -> Self {
        Self {
            growth: Growth::Exponential,
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
            jitter: Jitter::Full,
            factor: 2.0,
        }
    }
}

impl Backoff {
    /// A backoff growing by `growth` from `base`, never above `cap`, randomised by `jitter`.
    ///
    /// `base` may be 0 to 1 h; `cap` must be at least `base` and at most 1 day; a
    /// [`Jitter::Proportional`] percentage must be above 0 and at most 100. Exponential
    /// growth doubles; [`with_factor`](Self::with_factor) changes the factor.
    pub fn new(
        growth: Growth,
        base: Duration,
        cap: Duration,
        jitter: Jitter,
    ) -> Result<Self, ConfigError> {
        check_range(
            "backoff_base",
            base,
            Duration::ZERO,
            Duration::from_secs(3600),
            "a duration from 0 to 1 h",
        )?;
        check_range(
            "backoff_cap",
            cap,
            base,
            Duration::from_secs(86_400),
            "a duration from `backoff_base` to 1 day",
        )?;
        if let Jitter::Proportional(percent) = jitter
            && !(percent > 0.0 && percent <= 100.0)
        {
            return Err(ConfigError::new(
                "jitter_percent",
                percent,
                "a percentage above 0 and at most 100",
            ));
        }
        Ok(Self {
            growth,
            base,
            cap,
            jitter,
            factor: 2.0,
        })
    }

    /// This backoff with exponential growth by `factor` per retry instead of 2: a finite
    /// number above 1 (field `backoff_factor`).
    pub fn with_factor(self, factor: f64) -> Result<Self, ConfigError> {
        if !(factor.is_finite() && factor > 1.0) {
            return Err(ConfigError::new(
                "backoff_factor",
                factor,
                "a finite number above 1",
            ));
        }
        Ok(Self { factor, ..self })
    }

    /// The growth factor of [`Growth::Exponential`] (2 unless set).
    pub fn factor(&self) -> f64 {
        self.factor
    }

    /// The growth curve.
    pub fn growth(&self) -> Growth {
        self.growth
    }

    /// The first delay, before jitter.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The longest delay (before [`Jitter::Proportional`], which spreads around it).
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// The jitter.
    pub fn jitter(&self) -> Jitter {
        self.jitter
    }

    /// The delay before retry `retry` (1 for the first retry), given the delay before the
    /// previous one (used by decorrelated jitter; `Duration::ZERO` before the first).
    pub fn delay(&self, retry: u32, previous: Duration, rng: &mut Rng) -> Duration {
        let n = retry.max(1);
        let curve = match self.growth {
            Growth::Exponential => self.exponential(n),
            Growth::Linear => self.base.saturating_mul(n),
            Growth::Fixed => self.base,
        }
        .min(self.cap);
        match self.jitter {
            Jitter::None => curve,
            Jitter::Full => rng.duration_between(Duration::ZERO, curve),
            Jitter::Equal => rng.duration_between(curve / 2, curve),
            Jitter::Decorrelated => {
                let upper = previous.max(self.base).saturating_mul(3).min(self.cap);
                rng.duration_between(self.base.min(upper), upper)
            }
            Jitter::Proportional(percent) => {
                // Floored to whole nanoseconds, so the draws never leave `d × (1 ± p %)`.
                let spread =
                    Duration::from_nanos((curve.as_nanos() as f64 * percent / 100.0) as u64);
                rng.duration_between(curve.saturating_sub(spread), curve.saturating_add(spread))
            }
        }
    }

    /// `base × factor^(n-1)`, capped, floored to the nanosecond. Exact for the factor 2
    /// (every uncapped value is below 2^53 ns, so the product is exact in `f64`) and for
    /// factors such as 1.5 or 1.25 while their power stays exact; otherwise within `f64`'s
    /// rounding of the real curve.
    fn exponential(&self, n: u32) -> Duration {
        if self.base.is_zero() {
            return Duration::ZERO;
        }
        let exponent = i32::try_from(n - 1).unwrap_or(i32::MAX);
        let nanos = self.base.as_nanos() as f64 * self.factor.powi(exponent);
        if nanos < self.cap.as_nanos() as f64 {
            Duration::from_nanos(nanos as u64)
        } else {
            self.cap
        }
    }
}

/// A small, fast, seedable random number generator (SplitMix64) for jitter.
///
/// Jitter needs spread, not unpredictability; a seed makes every delay reproducible in tests.
/// Public on purpose and stable: with [`Backoff::delay`] it lets a user compute the exact
/// delays a retry layer built with the same seed will use.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A duration uniform in `[low, high]` (nanosecond resolution).
    pub fn duration_between(&mut self, low: Duration, high: Duration) -> Duration {
        if high <= low {
            return low;
        }
        let span = u64::try_from((high - low).as_nanos()).unwrap_or(u64::MAX);
        // Multiply-shift maps 64 random bits onto [0, span] without a division.
        let offset = ((u128::from(self.next_u64()) * (u128::from(span) + 1)) >> 64) as u64;
        low + Duration::from_nanos(offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn backoff(growth: Growth, jitter: Jitter) -> Backoff {
        Backoff::new(growth, 100 * MS, 1_000 * MS, jitter).expect("valid backoff")
    }

    #[test]
    fn curves_without_jitter() {
        let mut rng = Rng::new(1);
        let exp = backoff(Growth::Exponential, Jitter::None);
        let delays: Vec<_> = (1..=6)
            .map(|n| exp.delay(n, Duration::ZERO, &mut rng))
            .collect();
        assert_eq!(
            delays,
            [
                100 * MS,
                200 * MS,
                400 * MS,
                800 * MS,
                1_000 * MS,
                1_000 * MS
            ]
        );
        let linear = backoff(Growth::Linear, Jitter::None);
        assert_eq!(linear.delay(3, Duration::ZERO, &mut rng), 300 * MS);
        assert_eq!(linear.delay(30, Duration::ZERO, &mut rng), 1_000 * MS);
        let fixed = backoff(Growth::Fixed, Jitter::None);
        assert_eq!(fixed.delay(7, Duration::ZERO, &mut rng), 100 * MS);
        // Far past any shift width the curve stays at the cap rather than overflowing.
        assert_eq!(exp.delay(u32::MAX, Duration::ZERO, &mut rng), 1_000 * MS);
    }

    #[test]
    fn jitter_stays_within_its_bounds() {
        let mut rng = Rng::new(42);
        for n in 1..=20 {
            let curve =
                backoff(Growth::Exponential, Jitter::None).delay(n, Duration::ZERO, &mut rng);
            let full =
                backoff(Growth::Exponential, Jitter::Full).delay(n, Duration::ZERO, &mut rng);
            assert!(full <= curve, "full {full:?} > {curve:?}");
            let equal =
                backoff(Growth::Exponential, Jitter::Equal).delay(n, Duration::ZERO, &mut rng);
            assert!(
                equal >= curve / 2 && equal <= curve,
                "equal {equal:?} vs {curve:?}"
            );
        }
        let decorrelated = backoff(Growth::Exponential, Jitter::Decorrelated);
        let mut previous = Duration::ZERO;
        for n in 1..=50 {
            let delay = decorrelated.delay(n, previous, &mut rng);
            assert!(delay >= 100 * MS && delay <= (previous.max(100 * MS) * 3).min(1_000 * MS));
            previous = delay;
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_delays() {
        let full = backoff(Growth::Exponential, Jitter::Full);
        let run = |seed| {
            let mut rng = Rng::new(seed);
            (1..=5)
                .map(|n| full.delay(n, Duration::ZERO, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn uniform_draws_cover_both_ends() {
        let mut rng = Rng::new(3);
        let draws: Vec<_> = (0..10_000)
            .map(|_| rng.duration_between(Duration::ZERO, Duration::from_nanos(9)))
            .collect();
        for nanos in 0..=9 {
            let hits = draws.iter().filter(|d| d.as_nanos() == nanos).count();
            assert!(
                (800..1_200).contains(&hits),
                "{nanos} ns drawn {hits} times"
            );
        }
    }

    #[test]
    fn invalid_backoffs_name_their_field() {
        let err = Backoff::new(Growth::Fixed, 2 * MS, MS, Jitter::None).unwrap_err();
        assert_eq!(err.field(), "backoff_cap");
        let err = Backoff::new(
            Growth::Fixed,
            Duration::from_secs(7200),
            Duration::from_secs(7200),
            Jitter::None,
        )
        .unwrap_err();
        assert_eq!(err.field(), "backoff_base");
    }
}
