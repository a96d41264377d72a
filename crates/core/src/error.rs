//! The configuration error every seawall builder returns.

use std::fmt;

/// A builder was given a value outside what it accepts.
///
/// Every seawall builder validates in `build()` and returns this error rather than panicking.
/// The message names the field, the rejected value and the accepted range, so that it can be
/// shown to whoever wrote the configuration as it is.
///
/// ```
/// use seawall_core::ConfigError;
///
/// let err = ConfigError::new("max_attempts", 0, "an integer from 1 to 100");
/// assert_eq!(err.field(), "max_attempts");
/// assert_eq!(
///     err.to_string(),
///     "invalid `max_attempts` = 0: expected an integer from 1 to 100"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: &'static str,
    value: String,
    expected: &'static str,
}

impl ConfigError {
    /// Creates an error for `field`, which was set to `value` but must be `expected`.
    pub fn new(field: &'static str, value: impl fmt::Debug, expected: &'static str) -> Self {
        Self {
            field,
            value: format!("{value:?}"),
            expected,
        }
    }

    /// The name of the builder field that was rejected, as the builder method spells it.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// The rejected value, rendered with `Debug`.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// What the field accepts.
    pub fn expected(&self) -> &'static str {
        self.expected
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid `{}` = {}: expected {}",
            self.field, self.value, self.expected
        )
    }
}

impl std::error::Error for ConfigError {}

/// Checks that `value` lies in `min..=max`, naming `field` in the error otherwise.
///
/// The shared range check of every builder, so that all of them word their errors alike.
pub fn check_range<T>(
    field: &'static str,
    value: T,
    min: T,
    max: T,
    expected: &'static str,
) -> Result<T, ConfigError>
where
    T: PartialOrd + fmt::Debug,
{
    if value < min || value > max {
        Err(ConfigError::new(field, value, expected))
    } else {
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn range_check_names_the_field_and_bounds() {
        assert_eq!(check_range("burst", 5u32, 1, 10, "1 to 10"), Ok(5));
        let err = check_range("burst", 0u32, 1, 10, "1 to 10").unwrap_err();
        assert_eq!(err.field(), "burst");
        assert_eq!(err.value(), "0");
        assert_eq!(err.to_string(), "invalid `burst` = 0: expected 1 to 10");
        let err = check_range(
            "max_wait",
            Duration::from_secs(0),
            Duration::from_millis(1),
            Duration::from_secs(3600),
            "a duration from 1 ms to 1 h",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid `max_wait` = 0ns: expected a duration from 1 ms to 1 h"
        );
    }
}
