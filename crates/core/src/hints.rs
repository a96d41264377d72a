//! Server hints: what an upstream says about when to come back.
//!
//! Parsed once per response into [`ServerHints`], from
//! - `Retry-After` (RFC 9110: delta-seconds or HTTP-date; a past date means now),
//! - the IETF `RateLimit` / `RateLimit-Policy` structured fields (`r`, `t`, `q`, `w`), the
//!   earlier drafts' `RateLimit-Limit/Remaining/Reset` and `RateLimit: limit=…, remaining=…`,
//! - `X-RateLimit-Limit/Remaining/Reset/Used` (reset as delta seconds or a Unix time, see
//!   [`ResetFormat`]) and `X-RateLimit-Reset-After`.
//!
//! Nothing here panics on any input. A value that does not parse, duplicated lines that
//! disagree, and a delay above [`HintPolicy::ignore_above`] are ignored with a `tracing`
//! debug event; a delay above [`HintPolicy::max_delay`] is clamped to it. HTTP-dates and Unix
//! reset times are measured against the response's own `Date` header when it has a valid one,
//! so a skewed local clock does not distort them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, Response, StatusCode, header};

use crate::error::{ConfigError, check_range};
use crate::structured::{BareItem, parse_members};

/// How `X-RateLimit-Reset` is to be read. Upstreams disagree, so it is a per-upstream setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ResetFormat {
    /// Values of at least 1,000,000,000 (September 2001) are Unix times in seconds, smaller
    /// ones are delta seconds. Right for GitHub-style and delta-style upstreams alike.
    #[default]
    Auto,
    /// Always seconds from now.
    DeltaSeconds,
    /// Always a Unix time in seconds.
    UnixSeconds,
    /// Always a Unix time in milliseconds.
    UnixMillis,
}

/// The threshold of [`ResetFormat::Auto`]: smaller values are delta seconds.
const AUTO_UNIX_THRESHOLD_SECS: u64 = 1_000_000_000;

/// Limits on what the upstream may ask for, and how to read its reset times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HintPolicy {
    max_delay: Duration,
    ignore_above: Duration,
    reset_format: ResetFormat,
}

impl Default for HintPolicy {
    /// Delays clamped to 5 minutes, ignored above 1 day, reset format [`ResetFormat::Auto`].
    fn default() -> Self {
        Self {
            max_delay: Duration::from_secs(300),
            ignore_above: Duration::from_secs(86_400),
            reset_format: ResetFormat::Auto,
        }
    }
}

impl HintPolicy {
    /// Starts from the defaults.
    pub fn builder() -> HintPolicyBuilder {
        HintPolicyBuilder {
            policy: Self::default(),
        }
    }

    /// A delay longer than this is obeyed as this long.
    pub fn max_delay(&self) -> Duration {
        self.max_delay
    }

    /// A delay longer than this is taken for garbage and ignored.
    pub fn ignore_above(&self) -> Duration {
        self.ignore_above
    }

    /// How `X-RateLimit-Reset` is read.
    pub fn reset_format(&self) -> ResetFormat {
        self.reset_format
    }

    /// Applies the policy to a delay the upstream asked for.
    pub fn bound(&self, delay: Duration, source: &'static str) -> Option<Duration> {
        if delay > self.ignore_above {
            tracing::debug!(
                header = source,
                delay_s = delay.as_secs(),
                ignore_above_s = self.ignore_above.as_secs(),
                "ignoring an absurd server delay"
            );
            None
        } else {
            Some(delay.min(self.max_delay))
        }
    }
}

/// Builds a validated [`HintPolicy`].
#[derive(Debug, Clone)]
pub struct HintPolicyBuilder {
    policy: HintPolicy,
}

impl HintPolicyBuilder {
    /// Clamp every server delay to at most this (default 5 min; 1 ms to 1 day).
    pub fn max_delay(mut self, max_delay: Duration) -> Self {
        self.policy.max_delay = max_delay;
        self
    }

    /// Ignore a server delay longer than this (default 1 day; at least `max_delay`, at most
    /// 365 days).
    pub fn ignore_above(mut self, ignore_above: Duration) -> Self {
        self.policy.ignore_above = ignore_above;
        self
    }

    /// How to read `X-RateLimit-Reset` (default [`ResetFormat::Auto`]).
    pub fn reset_format(mut self, reset_format: ResetFormat) -> Self {
        self.policy.reset_format = reset_format;
        self
    }

    /// Validates the policy.
    pub fn build(self) -> Result<HintPolicy, ConfigError> {
        let p = self.policy;
        check_range(
            "max_delay",
            p.max_delay,
            Duration::from_millis(1),
            Duration::from_secs(86_400),
            "a duration from 1 ms to 1 day",
        )?;
        check_range(
            "ignore_above",
            p.ignore_above,
            p.max_delay,
            Duration::from_secs(365 * 86_400),
            "a duration from `max_delay` to 365 days",
        )?;
        Ok(p)
    }
}

/// What one response said about the upstream's limits, bounded by a [`HintPolicy`].
///
/// All delays are relative to when the response arrived.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerHints {
    /// The response was 429, or 503 with a `Retry-After` (as [`classify_status`] says
    /// throttled). A plain 503 is an upstream that is down, not a quota: the breaker's
    /// business, not the limiter's.
    ///
    /// [`classify_status`]: crate::classify_status
    pub throttled: bool,
    /// `Retry-After`, bounded.
    pub retry_after: Option<Duration>,
    /// The quota's size (`q`, `limit`, `X-RateLimit-Limit`).
    pub limit: Option<u64>,
    /// Requests left in the current window (`r`, `remaining`, `X-RateLimit-Remaining`).
    pub remaining: Option<u64>,
    /// Requests already used in the window (`X-RateLimit-Used`).
    pub used: Option<u64>,
    /// Time until the window resets (`t`, `reset`, `X-RateLimit-Reset`), bounded.
    pub reset: Option<Duration>,
    /// The quota's window (`w` of `RateLimit-Policy`).
    pub window: Option<Duration>,
}

impl ServerHints {
    /// Reads the hints of a response, with the local clock as "now" when it has no `Date`.
    pub fn from_response<B>(response: &Response<B>, policy: &HintPolicy) -> Self {
        Self::parse(
            response.status(),
            response.headers(),
            policy,
            SystemTime::now(),
        )
    }

    /// Reads hints from a status and headers, with `now` as the local time of arrival.
    pub fn parse(
        status: StatusCode,
        headers: &HeaderMap,
        policy: &HintPolicy,
        now: SystemTime,
    ) -> Self {
        // Dates are compared with the server's clock when it tells us its time.
        let now = single_value(headers, &header::DATE)
            .and_then(|date| httpdate::parse_http_date(date).ok())
            .unwrap_or(now);
        let retry_after = single_value(headers, &header::RETRY_AFTER)
            .and_then(|value| parse_retry_after(value, now))
            .and_then(|delay| policy.bound(delay, "retry-after"));
        let mut hints = ServerHints {
            throttled: status == StatusCode::TOO_MANY_REQUESTS
                || (status == StatusCode::SERVICE_UNAVAILABLE
                    && headers.contains_key(header::RETRY_AFTER)),
            retry_after,
            ..ServerHints::default()
        };
        if !hints.read_ietf(headers, policy) {
            hints.read_legacy(headers, policy, now);
        }
        hints
    }

    /// Whether nothing at all was learned.
    pub fn is_empty(&self) -> bool {
        *self
            == ServerHints {
                throttled: self.throttled,
                ..ServerHints::default()
            }
    }

    /// `true` when the upstream says the current window has no requests left.
    pub fn quota_exhausted(&self) -> bool {
        self.remaining == Some(0)
    }

    /// How long the rate limiter should hold this upstream's key, if at all: `Retry-After` of
    /// a throttling answer, otherwise the reset time when the quota is exhausted (or the
    /// answer was throttling).
    pub fn pause(&self) -> Option<Duration> {
        if self.throttled && self.retry_after.is_some() {
            return self.retry_after;
        }
        if self.quota_exhausted() || self.throttled {
            return self.reset;
        }
        None
    }

    /// The earliest a retry of this request should be sent, if the upstream said:
    /// `Retry-After`, or for a throttling answer the reset time.
    pub fn retry_delay(&self) -> Option<Duration> {
        self.retry_after
            .or(if self.throttled || self.quota_exhausted() {
                self.reset
            } else {
                None
            })
    }

    /// Reads the IETF fields. Returns whether any was present and usable.
    fn read_ietf(&mut self, headers: &HeaderMap, policy: &HintPolicy) -> bool {
        const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
        const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
        const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
        const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
        const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

        let mut found = false;
        let mut chosen_policy = None;
        if let Some(value) = single_value(headers, &RATELIMIT) {
            let members = parse_members(value);
            // Draft 07 and earlier: a dictionary `limit=, remaining=, reset=`.
            for member in &members {
                let number = member.value.as_ref().and_then(BareItem::as_u64);
                match (member.key, number) {
                    (Some("limit"), Some(n)) => self.limit = Some(n),
                    (Some("remaining"), Some(n)) => self.remaining = Some(n),
                    (Some("reset"), Some(n)) => {
                        self.reset = policy.bound(Duration::from_secs(n), "ratelimit")
                    }
                    _ => continue,
                }
                found = true;
            }
            // Draft 08 on: items `"policy";r=remaining;t=reset`. The most restrictive wins:
            // the fewest remaining, and among exhausted ones the longest reset.
            let best = members
                .iter()
                .filter(|m| m.key.is_none() && m.param_u64("r").is_some())
                .min_by_key(|m| {
                    let remaining = m.param_u64("r").unwrap_or(u64::MAX);
                    let reset = m.param_u64("t").unwrap_or(0);
                    (remaining, std::cmp::Reverse(reset))
                });
            if let Some(best) = best {
                self.remaining = best.param_u64("r");
                self.reset = best
                    .param_u64("t")
                    .and_then(|t| policy.bound(Duration::from_secs(t), "ratelimit"));
                chosen_policy = best.name();
                found = true;
            }
        }
        if let Some(value) = single_value(headers, &RATELIMIT_POLICY) {
            let members = parse_members(value);
            let matching = members
                .iter()
                .find(|m| chosen_policy.is_some() && m.name() == chosen_policy)
                .or_else(|| members.iter().find(|m| m.param_u64("q").is_some()));
            if let Some(p) = matching {
                if let Some(q) = p.param_u64("q") {
                    self.limit = Some(q);
                    found = true;
                }
                self.window = p.param_u64("w").map(Duration::from_secs);
            }
        }
        // Drafts 00-06: three separate fields, reset in delta seconds.
        if let Some(n) = single_value(headers, &RATELIMIT_LIMIT).and_then(leading_u64) {
            self.limit = Some(n);
            found = true;
        }
        if let Some(n) = single_value(headers, &RATELIMIT_REMAINING).and_then(parse_u64) {
            self.remaining = Some(n);
            found = true;
        }
        if let Some(delay) = single_value(headers, &RATELIMIT_RESET).and_then(parse_decimal_seconds)
        {
            self.reset = policy.bound(delay, "ratelimit-reset");
            found = true;
        }
        found
    }

    /// Reads the `X-RateLimit-*` family.
    fn read_legacy(&mut self, headers: &HeaderMap, policy: &HintPolicy, now: SystemTime) {
        const LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
        const REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
        const RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
        const RESET_AFTER: HeaderName = HeaderName::from_static("x-ratelimit-reset-after");
        const USED: HeaderName = HeaderName::from_static("x-ratelimit-used");

        self.limit = single_value(headers, &LIMIT).and_then(leading_u64);
        self.remaining = single_value(headers, &REMAINING).and_then(parse_u64);
        self.used = single_value(headers, &USED).and_then(parse_u64);
        if let (None, Some(limit), Some(used)) = (self.remaining, self.limit, self.used) {
            self.remaining = Some(limit.saturating_sub(used));
        }
        let reset = single_value(headers, &RESET_AFTER)
            .and_then(parse_decimal_seconds)
            .or_else(|| {
                single_value(headers, &RESET)
                    .and_then(|value| parse_reset(value, policy.reset_format, now))
            });
        self.reset = reset.and_then(|delay| policy.bound(delay, "x-ratelimit-reset"));
    }
}

/// The field's value when it has exactly one, or several identical, valid ASCII lines.
/// Disagreeing duplicates are ambiguous and ignored (RFC 9110 §5.3 makes them an error for
/// singleton fields).
fn single_value<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    if values.any(|other| other != first) {
        tracing::debug!(header = %name, "ignoring duplicated header lines that disagree");
        return None;
    }
    match first.to_str() {
        Ok(text) => Some(text.trim()),
        Err(_) => {
            tracing::debug!(header = %name, "ignoring a header that is not visible ASCII");
            None
        }
    }
}

/// Parses `Retry-After`: delta-seconds or an HTTP-date. A date in the past means zero.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use seawall_core::hints::parse_retry_after;
///
/// let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
/// assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
/// assert_eq!(
///     parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
///     Some(Duration::from_secs(30))
/// );
/// assert_eq!(parse_retry_after("soon", now), None);
/// ```
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Some(secs) = parse_u64(value) {
        return Some(Duration::from_secs(secs));
    }
    match httpdate::parse_http_date(value) {
        Ok(date) => Some(date.duration_since(now).unwrap_or(Duration::ZERO)),
        Err(_) => {
            tracing::debug!(value, "ignoring an unparseable Retry-After");
            None
        }
    }
}

/// Parses an `X-RateLimit-Reset` value in the given format into a delay from `now`.
pub fn parse_reset(value: &str, format: ResetFormat, now: SystemTime) -> Option<Duration> {
    let number = parse_decimal_seconds(value)?;
    let unix_time = match format {
        ResetFormat::DeltaSeconds => return Some(number),
        ResetFormat::Auto if number.as_secs() < AUTO_UNIX_THRESHOLD_SECS => return Some(number),
        ResetFormat::Auto | ResetFormat::UnixSeconds => number,
        // The "seconds" read are really milliseconds.
        ResetFormat::UnixMillis => number / 1000,
    };
    let at = UNIX_EPOCH.checked_add(unix_time)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parses a non-negative integer of ASCII digits that fits in `u64`; nothing else.
pub fn parse_u64(value: &str) -> Option<u64> {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// The integer at the start of a value such as `100, 100;w=60` (draft-style limit lists).
fn leading_u64(value: &str) -> Option<u64> {
    let end = value.find([',', ';']).unwrap_or(value.len());
    parse_u64(&value[..end])
}

/// Parses non-negative decimal seconds (`30`, `1.5`, `0.001`) without floating point.
/// Digits beyond nanoseconds are dropped; values that overflow are rejected.
pub fn parse_decimal_seconds(value: &str) -> Option<Duration> {
    let value = value.trim();
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    let secs = parse_u64(whole)?;
    if !fraction.bytes().all(|b| b.is_ascii_digit()) || (value.ends_with('.')) {
        return None;
    }
    let mut nanos: u32 = 0;
    let mut scale: u32 = 100_000_000;
    for digit in fraction.bytes().take(9) {
        nanos += u32::from(digit - b'0') * scale;
        scale /= 10;
    }
    Some(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_validation_names_the_field() {
        let err = HintPolicy::builder()
            .max_delay(Duration::ZERO)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "max_delay");
        let err = HintPolicy::builder()
            .max_delay(Duration::from_secs(60))
            .ignore_above(Duration::from_secs(30))
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "ignore_above");
    }

    #[test]
    fn bound_clamps_and_ignores() {
        let policy = HintPolicy::default();
        assert_eq!(
            policy.bound(Duration::from_secs(301), "t"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(policy.bound(Duration::from_secs(86_401), "t"), None);
    }

    #[test]
    fn decimal_seconds() {
        assert_eq!(
            parse_decimal_seconds("1.5"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_decimal_seconds("0.0000000019"),
            Some(Duration::from_nanos(1))
        );
        assert_eq!(parse_decimal_seconds("1."), None);
        assert_eq!(parse_decimal_seconds(".5"), None);
        assert_eq!(parse_decimal_seconds("-1"), None);
    }
}
