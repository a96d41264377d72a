//! The body of the `header_parsers` fuzz target, also run by `cargo test` over the seeds in
//! `fuzz/seeds/header_parsers` (`tests/tests/fuzz_seeds.rs`).
//!
//! Feeds arbitrary bytes to every server-hint parser. The first byte picks the status and the
//! reset format; the rest is split on `\n` into header values assigned round-robin to the
//! hint headers. No parser may panic; the parsers must read a plain integer alike; the hints
//! read from a response stay within the policy's `max_delay`.

use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use seawall_core::hints::{parse_decimal_seconds, parse_reset, parse_retry_after, parse_u64};
use seawall_core::{HintPolicy, ResetFormat, ServerHints};

const HEADERS: [&str; 12] = [
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

/// Parses the values `data` encodes, alone and as a response's headers; panics if a parser
/// panics or breaks one of the properties above.
pub(crate) fn run(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let format = match selector % 4 {
        0 => ResetFormat::Auto,
        1 => ResetFormat::DeltaSeconds,
        2 => ResetFormat::UnixSeconds,
        _ => ResetFormat::UnixMillis,
    };
    let status = if selector & 0x80 == 0 {
        StatusCode::TOO_MANY_REQUESTS
    } else {
        StatusCode::OK
    };
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut headers = HeaderMap::new();
    for (index, line) in rest.split(|&b| b == b'\n').enumerate() {
        if let Ok(text) = std::str::from_utf8(line) {
            let retry_after = parse_retry_after(text, now);
            let seconds = parse_decimal_seconds(text);
            let _ = parse_reset(text, format, now);
            // A plain integer is the same number of seconds to every parser.
            if let Some(n) = parse_u64(text) {
                let n = Some(Duration::from_secs(n));
                assert_eq!(retry_after, n, "Retry-After {text:?}");
                assert_eq!(seconds, n, "decimal seconds {text:?}");
            }
            // A delta reset is the decimal seconds, whatever they are.
            assert_eq!(
                parse_reset(text, ResetFormat::DeltaSeconds, now),
                seconds,
                "delta reset {text:?}"
            );
        }
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append(
                HeaderName::from_static(HEADERS[index % HEADERS.len()]),
                value,
            );
        }
    }
    let policy = HintPolicy::builder()
        .reset_format(format)
        .build()
        .expect("the default policy with any reset format is valid");
    let hints = ServerHints::parse(status, &headers, &policy, now);
    for delay in [hints.retry_after, hints.reset].into_iter().flatten() {
        assert!(
            delay <= policy.max_delay(),
            "{delay:?} over {:?}",
            policy.max_delay()
        );
    }
}
