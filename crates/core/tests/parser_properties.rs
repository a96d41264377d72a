//! Property tests: no parser panics on arbitrary bytes, and valid values round-trip.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use proptest::prelude::*;
use seawall_core::hints::{parse_decimal_seconds, parse_reset, parse_retry_after};
use seawall_core::{HintPolicy, ResetFormat, ServerHints};

const HINT_HEADERS: [&str; 12] = [
    "retry-after",
    "date",
    "ratelimit",
    "ratelimit-policy",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "x-ratelimit-reset-after",
    "x-ratelimit-used",
];

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// Bytes that look like header values: mostly the characters rate-limit fields use.
fn value_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        "[\"a-z0-9;=, .:+-]{0,48}".prop_map(String::into_bytes),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn no_panic_on_arbitrary_headers(
        status in 100u16..1000,
        fields in proptest::collection::vec((0..HINT_HEADERS.len(), value_bytes()), 0..8),
        format in prop_oneof![Just(ResetFormat::Auto), Just(ResetFormat::DeltaSeconds), Just(ResetFormat::UnixSeconds), Just(ResetFormat::UnixMillis)],
        now_secs in any::<u64>(),
    ) {
        let mut headers = HeaderMap::new();
        for (index, bytes) in fields {
            if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                headers.append(HeaderName::from_static(HINT_HEADERS[index]), value);
            }
        }
        let policy = HintPolicy::builder().reset_format(format).build().expect("valid policy");
        let now = UNIX_EPOCH.checked_add(Duration::from_secs(now_secs)).unwrap_or(UNIX_EPOCH);
        let status = StatusCode::from_u16(status).expect("100..1000 is a valid status");
        let hints = ServerHints::parse(status, &headers, &policy, now);
        // Whatever the input, every delay obeys the policy's cap.
        for delay in [hints.retry_after, hints.reset].into_iter().flatten() {
            prop_assert!(delay <= policy.max_delay());
        }
    }

    #[test]
    fn no_panic_on_arbitrary_strings(text in "\\PC{0,64}", now_secs in any::<u64>()) {
        let now = UNIX_EPOCH.checked_add(Duration::from_secs(now_secs)).unwrap_or(UNIX_EPOCH);
        let _ = parse_retry_after(&text, now);
        let _ = parse_decimal_seconds(&text);
        for format in [ResetFormat::Auto, ResetFormat::DeltaSeconds, ResetFormat::UnixSeconds, ResetFormat::UnixMillis] {
            let _ = parse_reset(&text, format, now);
        }
    }

    #[test]
    fn retry_after_seconds_round_trip(secs in any::<u64>()) {
        prop_assert_eq!(parse_retry_after(&secs.to_string(), now()), Some(Duration::from_secs(secs)));
    }

    #[test]
    fn retry_after_date_round_trips(ahead in 0u64..10_000_000, behind in 1u64..10_000_000) {
        let future = now() + Duration::from_secs(ahead);
        prop_assert_eq!(parse_retry_after(&httpdate::fmt_http_date(future), now()), Some(Duration::from_secs(ahead)));
        let past = now() - Duration::from_secs(behind);
        prop_assert_eq!(parse_retry_after(&httpdate::fmt_http_date(past), now()), Some(Duration::ZERO));
    }

    #[test]
    fn decimal_seconds_round_trip(secs in any::<u64>(), nanos in 0u32..1_000_000_000) {
        let text = format!("{secs}.{nanos:09}");
        prop_assert_eq!(parse_decimal_seconds(&text), Some(Duration::new(secs, nanos)));
    }

    #[test]
    fn unix_reset_round_trips(ahead in 0u64..1_000_000) {
        let at = 1_700_000_000 + ahead;
        prop_assert_eq!(parse_reset(&at.to_string(), ResetFormat::Auto, now()), Some(Duration::from_secs(ahead)));
        prop_assert_eq!(parse_reset(&(at * 1000).to_string(), ResetFormat::UnixMillis, now()), Some(Duration::from_secs(ahead)));
    }

    #[test]
    fn ietf_fields_round_trip(
        name in "[a-z][a-z0-9_]{0,8}",
        remaining in 0u64..1_000_000_000_000_000,
        reset in 0u64..100_000,
        quota in 0u64..1_000_000_000_000_000,
        window in 0u64..1_000_000,
    ) {
        let mut headers = HeaderMap::new();
        let field = format!("\"{name}\";r={remaining};t={reset}");
        let policy_field = format!("\"{name}\";q={quota};w={window}");
        headers.insert("ratelimit", HeaderValue::from_str(&field).expect("ascii"));
        headers.insert("ratelimit-policy", HeaderValue::from_str(&policy_field).expect("ascii"));
        let policy = HintPolicy::default();
        let hints = ServerHints::parse(StatusCode::OK, &headers, &policy, now());
        prop_assert_eq!(hints.remaining, Some(remaining));
        prop_assert_eq!(hints.limit, Some(quota));
        prop_assert_eq!(hints.window, Some(Duration::from_secs(window)));
        let expected_reset = policy.bound(Duration::from_secs(reset), "ratelimit");
        prop_assert_eq!(hints.reset, expected_reset);
    }
}
