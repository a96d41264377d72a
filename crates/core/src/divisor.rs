//! Division by a number fixed when a layer is built, without a division instruction.
//!
//! A 64-bit `div` takes tens of cycles, as much as the rest of recording a call in a
//! breaker's window or a retry budget's slot. Those divide by the same number every time
//! (a window's size, a slot's length), so the quotient can come from multiplying by a
//! reciprocal computed once, the way compilers divide by constants.

/// A fixed divisor with its reciprocal, giving exact quotients and remainders of any `u64`.
///
/// Internal to seawall's layer crates: hidden from the docs, no stability promise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Divisor {
    divisor: u64,
    /// `ceil(2^128 / divisor)` (or `2^128 / divisor` when that is whole); 0 for divisor 1.
    reciprocal: u128,
}

impl Divisor {
    /// A divisor of `divisor`; 0 is taken as 1, so that no call can divide by zero.
    pub const fn new(divisor: u64) -> Self {
        let divisor = if divisor == 0 { 1 } else { divisor };
        let reciprocal = if divisor == 1 {
            0
        } else {
            u128::MAX / divisor as u128 + 1
        };
        Self {
            divisor,
            reciprocal,
        }
    }

    /// The number divided by.
    pub const fn get(&self) -> u64 {
        self.divisor
    }

    /// `n / divisor`, rounded down.
    ///
    /// Exact for every `n`: with `r = 2^128 / d + e`, `0 <= e < 1`, the product `n * r / 2^128`
    /// is `n / d` plus less than `n / 2^128 < 1 / d`, and the fraction of `n / d` is at most
    /// `(d - 1) / d`, so the extra never carries the integer part over.
    #[inline]
    pub const fn quotient(&self, n: u64) -> u64 {
        if self.reciprocal == 0 {
            return n;
        }
        let high = self.reciprocal >> 64;
        let low = self.reciprocal as u64 as u128;
        // The top 128 bits of the 192-bit product `n * reciprocal`. `high` is at most 2^63
        // (the divisor is at least 2), so the sum below cannot overflow.
        let upper = n as u128 * high + ((n as u128 * low) >> 64);
        (upper >> 64) as u64
    }

    /// `n % divisor`.
    #[inline]
    pub const fn remainder(&self, n: u64) -> u64 {
        n - self.quotient(n) * self.divisor
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(n: u64, d: u64) {
        let divisor = Divisor::new(d);
        assert_eq!(divisor.quotient(n), n / d, "{n} / {d}");
        assert_eq!(divisor.remainder(n), n % d, "{n} % {d}");
    }

    #[test]
    fn exact_at_the_edges() {
        let divisors = [
            1,
            2,
            3,
            7,
            10,
            100,
            1 << 31,
            (1 << 32) + 1,
            1_000_000_000,
            u64::MAX / 2,
            u64::MAX - 1,
            u64::MAX,
        ];
        for d in divisors {
            let edges = [0, 1, d - 1, d, d.saturating_add(1), u64::MAX - 1, u64::MAX];
            for n in edges {
                check(n, d);
            }
            // Just below and at each multiple near the top of the range.
            let top = u64::MAX / d * d;
            for n in [top - 1, top, top.saturating_add(d - 1)] {
                check(n, d);
            }
        }
    }

    #[test]
    fn zero_divides_as_one() {
        assert_eq!(Divisor::new(0).get(), 1);
        assert_eq!(Divisor::new(0).quotient(17), 17);
    }

    proptest! {
        #[test]
        fn matches_the_division_instruction(n: u64, d in 1..=u64::MAX) {
            check(n, d);
        }

        #[test]
        fn matches_it_for_small_divisors(n: u64, d in 1..=100_000u64) {
            check(n, d);
        }
    }
}
