//! Golden vectors for the server-hint parsers: well-formed values in every supported form,
//! and garbage (non-ASCII, negative, overflowing, empty, duplicated, dates in the past and far
//! future) that must be ignored rather than obeyed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use seawall_core::{HintPolicy, ResetFormat, ServerHints};

/// The local clock of every vector: Tue, 14 Nov 2023 22:13:20 GMT.
const NOW_UNIX: u64 = 1_700_000_000;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW_UNIX)
}

fn date_at(unix: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(unix))
}

fn secs(n: u64) -> Option<Duration> {
    Some(Duration::from_secs(n))
}

fn millis(n: u64) -> Option<Duration> {
    Some(Duration::from_millis(n))
}

struct Vector {
    name: &'static str,
    status: u16,
    headers: Vec<(&'static str, Vec<u8>)>,
    format: ResetFormat,
    expected: ServerHints,
}

fn v(
    name: &'static str,
    status: u16,
    headers: &[(&'static str, &str)],
    expected: ServerHints,
) -> Vector {
    Vector {
        name,
        status,
        headers: headers
            .iter()
            .map(|(n, value)| (*n, value.as_bytes().to_vec()))
            .collect(),
        format: ResetFormat::Auto,
        expected,
    }
}

fn raw(
    name: &'static str,
    status: u16,
    header: &'static str,
    value: &[u8],
    expected: ServerHints,
) -> Vector {
    Vector {
        name,
        status,
        headers: vec![(header, value.to_vec())],
        format: ResetFormat::Auto,
        expected,
    }
}

fn with_format(mut vector: Vector, format: ResetFormat) -> Vector {
    vector.format = format;
    vector
}

const THROTTLED: ServerHints = ServerHints {
    throttled: true,
    retry_after: None,
    limit: None,
    remaining: None,
    used: None,
    reset: None,
    window: None,
};

const PLAIN: ServerHints = ServerHints {
    throttled: false,
    ..THROTTLED
};

fn vectors() -> Vec<Vector> {
    let future_30 = date_at(NOW_UNIX + 30);
    let past = date_at(NOW_UNIX - 3600);
    let server_behind_date = date_at(NOW_UNIX - 100);
    let server_behind_retry = date_at(NOW_UNIX - 100 + 20);
    let github_reset = (NOW_UNIX + 120).to_string();
    let past_reset = (NOW_UNIX - 5).to_string();
    let millis_reset = ((NOW_UNIX + 5) * 1000).to_string();
    vec![
        // Retry-After, delta-seconds.
        v(
            "retry-after seconds",
            429,
            &[("retry-after", "120")],
            ServerHints {
                retry_after: secs(120),
                ..THROTTLED
            },
        ),
        v(
            "retry-after zero",
            429,
            &[("retry-after", "0")],
            ServerHints {
                retry_after: secs(0),
                ..THROTTLED
            },
        ),
        v(
            "retry-after surrounding spaces",
            429,
            &[("retry-after", " 7 ")],
            ServerHints {
                retry_after: secs(7),
                ..THROTTLED
            },
        ),
        v(
            "retry-after negative",
            429,
            &[("retry-after", "-5")],
            THROTTLED,
        ),
        v(
            "retry-after fractional",
            429,
            &[("retry-after", "1.5")],
            THROTTLED,
        ),
        v(
            "retry-after plus sign",
            429,
            &[("retry-after", "+5")],
            THROTTLED,
        ),
        v(
            "retry-after overflowing u64",
            429,
            &[("retry-after", "18446744073709551616")],
            THROTTLED,
        ),
        v(
            "retry-after absurd (over a day)",
            429,
            &[("retry-after", "99999")],
            THROTTLED,
        ),
        v(
            "retry-after over the cap is clamped",
            429,
            &[("retry-after", "3600")],
            ServerHints {
                retry_after: secs(300),
                ..THROTTLED
            },
        ),
        v("retry-after empty", 429, &[("retry-after", "")], THROTTLED),
        v(
            "retry-after word",
            429,
            &[("retry-after", "soon")],
            THROTTLED,
        ),
        v(
            "retry-after list",
            429,
            &[("retry-after", "5, 10")],
            THROTTLED,
        ),
        raw(
            "retry-after non-ASCII",
            429,
            "retry-after",
            "\u{23f0}5".as_bytes(),
            THROTTLED,
        ),
        raw(
            "retry-after obs-text byte",
            429,
            "retry-after",
            b"\xff12",
            THROTTLED,
        ),
        // Retry-After, HTTP-date.
        v(
            "retry-after date in 30 s",
            429,
            &[("retry-after", &future_30)],
            ServerHints {
                retry_after: secs(30),
                ..THROTTLED
            },
        ),
        v(
            "retry-after date in the past",
            429,
            &[("retry-after", &past)],
            ServerHints {
                retry_after: secs(0),
                ..THROTTLED
            },
        ),
        v(
            "retry-after date far in the future",
            429,
            &[("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT")],
            THROTTLED,
        ),
        v(
            "retry-after RFC 850 date (past)",
            429,
            &[("retry-after", "Sunday, 06-Nov-94 08:49:37 GMT")],
            ServerHints {
                retry_after: secs(0),
                ..THROTTLED
            },
        ),
        v(
            "retry-after asctime date (past)",
            429,
            &[("retry-after", "Sun Nov  6 08:49:37 1994")],
            ServerHints {
                retry_after: secs(0),
                ..THROTTLED
            },
        ),
        v(
            "retry-after invalid date",
            429,
            &[("retry-after", "Sun, 32 Nov 2023 08:49:37 GMT")],
            THROTTLED,
        ),
        v(
            "retry-after date against the server's Date",
            503,
            &[
                ("date", &server_behind_date),
                ("retry-after", &server_behind_retry),
            ],
            ServerHints {
                retry_after: secs(20),
                ..THROTTLED
            },
        ),
        v(
            "garbage Date falls back to the local clock",
            503,
            &[("date", "yesterday"), ("retry-after", &future_30)],
            ServerHints {
                retry_after: secs(30),
                ..THROTTLED
            },
        ),
        // Duplicated lines.
        v(
            "retry-after duplicated, identical",
            429,
            &[("retry-after", "5"), ("retry-after", "5")],
            ServerHints {
                retry_after: secs(5),
                ..THROTTLED
            },
        ),
        v(
            "retry-after duplicated, disagreeing",
            429,
            &[("retry-after", "5"), ("retry-after", "10")],
            THROTTLED,
        ),
        v(
            "retry-after on a 200 is read but not throttling",
            200,
            &[("retry-after", "3")],
            ServerHints {
                retry_after: secs(3),
                ..PLAIN
            },
        ),
        // IETF RateLimit / RateLimit-Policy (draft 08 on).
        v(
            "ietf remaining and reset with policy",
            200,
            &[
                ("ratelimit", "\"default\";r=50;t=30"),
                ("ratelimit-policy", "\"default\";q=100;w=60"),
            ],
            ServerHints {
                limit: Some(100),
                remaining: Some(50),
                reset: secs(30),
                window: secs(60),
                ..PLAIN
            },
        ),
        v(
            "ietf exhausted",
            200,
            &[("ratelimit", "\"default\";r=0;t=2")],
            ServerHints {
                remaining: Some(0),
                reset: secs(2),
                ..PLAIN
            },
        ),
        v(
            "ietf most restrictive member wins",
            200,
            &[
                ("ratelimit", "\"burst\";r=10;t=5, \"daily\";r=0;t=60"),
                (
                    "ratelimit-policy",
                    "\"burst\";q=20;w=10, \"daily\";q=1000;w=86400",
                ),
            ],
            ServerHints {
                limit: Some(1000),
                remaining: Some(0),
                reset: secs(60),
                window: secs(86_400),
                ..PLAIN
            },
        ),
        v(
            "ietf longest reset among exhausted",
            200,
            &[("ratelimit", "\"a\";r=0;t=5, \"b\";r=0;t=60")],
            ServerHints {
                remaining: Some(0),
                reset: secs(60),
                ..PLAIN
            },
        ),
        v(
            "ietf policy alone",
            200,
            &[("ratelimit-policy", "\"default\";q=100;w=60")],
            ServerHints {
                limit: Some(100),
                window: secs(60),
                ..PLAIN
            },
        ),
        v(
            "ietf token policy name",
            200,
            &[("ratelimit", "default;r=7;t=1")],
            ServerHints {
                remaining: Some(7),
                reset: secs(1),
                ..PLAIN
            },
        ),
        v(
            "ietf non-integer r falls back to X-RateLimit",
            200,
            &[
                ("ratelimit", "\"default\";r=abc;t=5"),
                ("x-ratelimit-remaining", "4"),
            ],
            ServerHints {
                remaining: Some(4),
                ..PLAIN
            },
        ),
        v(
            "ietf negative r ignored",
            200,
            &[("ratelimit", "\"default\";r=-1;t=5")],
            PLAIN,
        ),
        v(
            "ietf 16-digit r ignored",
            200,
            &[("ratelimit", "\"default\";r=1234567890123456;t=5")],
            PLAIN,
        ),
        v(
            "ietf absurd t ignored",
            200,
            &[("ratelimit", "\"default\";r=0;t=999999999999")],
            ServerHints {
                remaining: Some(0),
                ..PLAIN
            },
        ),
        v(
            "ietf unterminated string ignored",
            200,
            &[("ratelimit", "\"default;r=0;t=5")],
            PLAIN,
        ),
        v(
            "ietf wins over X-RateLimit",
            200,
            &[
                ("ratelimit", "\"default\";r=9;t=3"),
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "50"),
            ],
            ServerHints {
                remaining: Some(9),
                reset: secs(3),
                ..PLAIN
            },
        ),
        v(
            "draft-07 dictionary",
            429,
            &[("ratelimit", "limit=100, remaining=0, reset=7")],
            ServerHints {
                limit: Some(100),
                remaining: Some(0),
                reset: secs(7),
                ..THROTTLED
            },
        ),
        v(
            "drafts 00-06 separate fields",
            200,
            &[
                ("ratelimit-limit", "100, 100;w=60"),
                ("ratelimit-remaining", "3"),
                ("ratelimit-reset", "10"),
            ],
            ServerHints {
                limit: Some(100),
                remaining: Some(3),
                reset: secs(10),
                ..PLAIN
            },
        ),
        // X-RateLimit-*.
        v(
            "github style unix reset",
            403,
            &[
                ("x-ratelimit-limit", "5000"),
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-used", "5000"),
                ("x-ratelimit-reset", &github_reset),
            ],
            ServerHints {
                limit: Some(5000),
                remaining: Some(0),
                used: Some(5000),
                reset: secs(120),
                ..PLAIN
            },
        ),
        v(
            "delta reset",
            200,
            &[("x-ratelimit-remaining", "10"), ("x-ratelimit-reset", "60")],
            ServerHints {
                remaining: Some(10),
                reset: secs(60),
                ..PLAIN
            },
        ),
        v(
            "unix reset in the past",
            200,
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", &past_reset),
            ],
            ServerHints {
                remaining: Some(0),
                reset: secs(0),
                ..PLAIN
            },
        ),
        v(
            "fractional delta reset",
            200,
            &[("x-ratelimit-reset", "1.5")],
            ServerHints {
                reset: millis(1500),
                ..PLAIN
            },
        ),
        v(
            "reset-after wins",
            200,
            &[
                ("x-ratelimit-reset-after", "2.25"),
                ("x-ratelimit-reset", "60"),
            ],
            ServerHints {
                reset: millis(2250),
                ..PLAIN
            },
        ),
        v(
            "remaining derived from limit and used",
            200,
            &[("x-ratelimit-limit", "60"), ("x-ratelimit-used", "60")],
            ServerHints {
                limit: Some(60),
                remaining: Some(0),
                used: Some(60),
                ..PLAIN
            },
        ),
        v(
            "used beyond limit saturates",
            200,
            &[("x-ratelimit-limit", "60"), ("x-ratelimit-used", "75")],
            ServerHints {
                limit: Some(60),
                remaining: Some(0),
                used: Some(75),
                ..PLAIN
            },
        ),
        v(
            "limit with a policy list",
            200,
            &[("x-ratelimit-limit", "100, 100;w=60")],
            ServerHints {
                limit: Some(100),
                ..PLAIN
            },
        ),
        v(
            "negative remaining",
            200,
            &[("x-ratelimit-remaining", "-1")],
            PLAIN,
        ),
        v(
            "full-width digits",
            200,
            &[("x-ratelimit-remaining", "\u{ff11}\u{ff12}")],
            PLAIN,
        ),
        v("word reset", 200, &[("x-ratelimit-reset", "abc")], PLAIN),
        v(
            "overflowing reset",
            200,
            &[("x-ratelimit-reset", "99999999999999999999999")],
            PLAIN,
        ),
        v(
            "empty remaining",
            200,
            &[("x-ratelimit-remaining", "")],
            PLAIN,
        ),
        v(
            "duplicated remaining, disagreeing",
            200,
            &[
                ("x-ratelimit-remaining", "3"),
                ("x-ratelimit-remaining", "4"),
            ],
            PLAIN,
        ),
        with_format(
            v(
                "millisecond unix reset",
                200,
                &[("x-ratelimit-reset", &millis_reset)],
                ServerHints {
                    reset: secs(5),
                    ..PLAIN
                },
            ),
            ResetFormat::UnixMillis,
        ),
        with_format(
            v(
                "delta format forbids unix times",
                200,
                &[("x-ratelimit-reset", "1700000100")],
                PLAIN,
            ),
            ResetFormat::DeltaSeconds,
        ),
        with_format(
            v(
                "unix format reads small values as 1970",
                200,
                &[("x-ratelimit-reset", "30")],
                ServerHints {
                    reset: secs(0),
                    ..PLAIN
                },
            ),
            ResetFormat::UnixSeconds,
        ),
        // Bare statuses.
        v("429 with no hints", 429, &[], THROTTLED),
        // A 503 is throttling only with a `Retry-After`, usable or not, as the classifier
        // says (the breaker's business otherwise).
        v("503 with no hints", 503, &[], PLAIN),
        v(
            "503 with an unusable retry-after",
            503,
            &[("retry-after", "soon")],
            THROTTLED,
        ),
        v(
            "429 with only a reset",
            429,
            &[("x-ratelimit-reset", "9")],
            ServerHints {
                reset: secs(9),
                ..THROTTLED
            },
        ),
    ]
}

#[test]
fn golden_vectors() {
    let vectors = vectors();
    assert!(vectors.len() >= 40, "{} vectors", vectors.len());
    for vector in vectors {
        let mut headers = HeaderMap::new();
        for (name, value) in &vector.headers {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_bytes(value).expect("test header bytes are a valid HeaderValue"),
            );
        }
        let policy = HintPolicy::builder()
            .reset_format(vector.format)
            .build()
            .expect("valid policy");
        let status = StatusCode::from_u16(vector.status).expect("valid status");
        let hints = ServerHints::parse(status, &headers, &policy, now());
        assert_eq!(hints, vector.expected, "vector `{}`", vector.name);
    }
}

#[test]
fn pause_and_retry_delay_decisions() {
    let policy = HintPolicy::default();
    let parse = |status: u16, headers: &[(&'static str, &'static str)]| {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        ServerHints::parse(
            StatusCode::from_u16(status).expect("status"),
            &map,
            &policy,
            now(),
        )
    };
    /// Status, headers, expected pause, expected retry delay.
    type Row = (
        u16,
        &'static [(&'static str, &'static str)],
        Option<Duration>,
        Option<Duration>,
    );
    let table: &[Row] = &[
        (429, &[("retry-after", "2")], secs(2), secs(2)),
        (
            503,
            &[("retry-after", "4"), ("x-ratelimit-reset", "9")],
            secs(4),
            secs(4),
        ),
        (429, &[("x-ratelimit-reset", "9")], secs(9), secs(9)),
        (
            200,
            &[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "9")],
            secs(9),
            secs(9),
        ),
        (
            200,
            &[("x-ratelimit-remaining", "1"), ("x-ratelimit-reset", "9")],
            None,
            None,
        ),
        (200, &[], None, None),
        (500, &[("retry-after", "3")], None, secs(3)),
        (429, &[], None, None),
        // A plain 503 with quota left is an outage, not a quota: no pause, no wait for the
        // reset (an hour away, say); with the quota spent the reset still holds.
        (
            503,
            &[
                ("x-ratelimit-remaining", "4999"),
                ("x-ratelimit-reset", "60"),
            ],
            None,
            None,
        ),
        (
            503,
            &[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "9")],
            secs(9),
            secs(9),
        ),
    ];
    for (status, headers, pause, retry) in table {
        let hints = parse(*status, headers);
        assert_eq!(hints.pause(), *pause, "pause for {status} {headers:?}");
        assert_eq!(
            hints.retry_delay(),
            *retry,
            "retry delay for {status} {headers:?}"
        );
    }
}
