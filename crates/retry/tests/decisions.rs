//! The retry decision as a table: status × method × headers × budget × attempt → retry or
//! not, and the exact delay. Jitter is off except in the seeded rows at the end, whose delays
//! are pinned by the seed.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use seawall_core::{FailureKind, HintPolicy, Idempotency, Outcome, ServerHints, classify_status};
use seawall_retry::{
    AttemptInfo, BudgetConfig, Decision, Jitter, RetryBudget, RetryLayer, RetryPolicy, RetryState,
    StopReason,
};
use tokio::time::Instant;

const MS: Duration = Duration::from_millis(1);

/// What ended the attempt: an HTTP status, or an error of a kind.
#[derive(Clone, Copy)]
enum Ended {
    Status(u16),
    Error(FailureKind),
}

struct Row {
    ended: Ended,
    method: Method,
    headers: &'static [(&'static str, &'static str)],
    /// Retries the budget holds.
    budget: u64,
    /// Attempts made so far, this one included.
    attempts: u32,
    elapsed: Duration,
    replayable: bool,
    expect: Decision,
}

fn row(ended: Ended, method: Method, attempts: u32, expect: Decision) -> Row {
    Row {
        ended,
        method,
        headers: &[],
        budget: 10,
        attempts,
        elapsed: Duration::ZERO,
        replayable: true,
        expect,
    }
}

fn retry(ms: u64, reason: FailureKind) -> Decision {
    Decision::Retry {
        delay: Duration::from_millis(ms),
        reason,
    }
}

fn stop(reason: StopReason) -> Decision {
    Decision::Stop { reason, hint: None }
}

fn policy(jitter: Jitter, max_attempts: u32) -> RetryPolicy {
    RetryLayer::builder()
        .max_attempts(max_attempts)
        .exponential_backoff(100 * MS, 1_000 * MS)
        .jitter(jitter)
        .deadline(Duration::from_secs(10))
        .build()
        .expect("valid policy")
        .policy()
        .clone()
}

/// A budget holding exactly `retries` retries.
fn budget(retries: u64, now: Instant) -> RetryBudget {
    let budget = RetryBudget::new(
        BudgetConfig::new(Duration::from_secs(10), 0, 100.0).expect("valid budget"),
    );
    for _ in 0..retries {
        budget.deposit(now);
    }
    budget
}

/// "Now" for every response in the table, so that HTTP dates are exact.
fn arrival() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn decide(policy: &RetryPolicy, row: &Row, state: &mut RetryState) -> (Decision, u64) {
    let mut request = Request::builder()
        .method(row.method.clone())
        .uri("http://a/");
    let mut headers = HeaderMap::new();
    for (name, value) in row.headers {
        let value = if *value == "DATE+3" {
            httpdate::fmt_http_date(arrival() + Duration::from_secs(3))
        } else if *value == "DATE-30" {
            httpdate::fmt_http_date(arrival() - Duration::from_secs(30))
        } else {
            (*value).to_owned()
        };
        let value = HeaderValue::from_str(&value).expect("valid header");
        if *name == "idempotency-key" {
            request = request.header(*name, value);
        } else {
            headers.insert(*name, value);
        }
    }
    let request = request.body(()).expect("valid request");
    let (outcome, hint) = match row.ended {
        Ended::Status(status) => {
            let status = StatusCode::from_u16(status).expect("valid status");
            let hints = ServerHints::parse(status, &headers, &HintPolicy::default(), arrival());
            (classify_status(status, &headers), hints.retry_delay())
        }
        Ended::Error(kind) => (Outcome::Failure(kind), None),
    };
    let attempt = AttemptInfo {
        attempts: row.attempts,
        outcome,
        may_resend: Idempotency::Standard.allows(&request),
        replayable: row.replayable,
        hint,
        elapsed: row.elapsed,
    };
    let now = Instant::now();
    let budget = budget(row.budget, now);
    let decision = policy.decide(&attempt, state, Some(&budget), now);
    (decision, budget.available(now))
}

#[tokio::test(start_paused = true)]
async fn decision_table() {
    use Ended::{Error, Status};
    use FailureKind::*;
    let key: &'static [(&str, &str)] = &[("idempotency-key", "order-1")];
    let rows = vec![
        // Successes and client errors end the request.
        row(Status(200), Method::GET, 1, Decision::Done),
        row(Status(201), Method::POST, 1, Decision::Done),
        row(Status(404), Method::GET, 1, Decision::Done),
        row(Status(400), Method::PUT, 2, Decision::Done),
        // 5xx on idempotent methods: exponential backoff, then attempts run out.
        row(Status(500), Method::GET, 1, retry(100, ServerError)),
        row(Status(500), Method::GET, 2, retry(200, ServerError)),
        row(
            Status(500),
            Method::GET,
            3,
            stop(StopReason::AttemptsExhausted),
        ),
        row(Status(502), Method::HEAD, 1, retry(100, ServerError)),
        row(Status(503), Method::PUT, 1, retry(100, ServerError)),
        row(Status(504), Method::DELETE, 2, retry(200, ServerError)),
        row(Status(500), Method::OPTIONS, 1, retry(100, ServerError)),
        // POST and PATCH only with an Idempotency-Key.
        row(
            Status(500),
            Method::POST,
            1,
            stop(StopReason::NotIdempotent),
        ),
        Row {
            headers: key,
            ..row(Status(500), Method::POST, 1, retry(100, ServerError))
        },
        row(
            Status(500),
            Method::PATCH,
            1,
            stop(StopReason::NotIdempotent),
        ),
        Row {
            headers: key,
            ..row(Status(500), Method::PATCH, 2, retry(200, ServerError))
        },
        // Throttling: the longer of the backoff and the server's delay.
        Row {
            headers: &[("retry-after", "2")],
            ..row(Status(429), Method::GET, 1, retry(2_000, Throttled))
        },
        Row {
            headers: &[("retry-after", "0")],
            ..row(Status(429), Method::GET, 1, retry(100, Throttled))
        },
        row(Status(429), Method::GET, 2, retry(200, Throttled)),
        Row {
            headers: &[("retry-after", "1")],
            ..row(
                Status(429),
                Method::POST,
                1,
                stop(StopReason::NotIdempotent),
            )
        },
        Row {
            headers: &[("retry-after", "1")],
            ..row(Status(503), Method::GET, 1, retry(1_000, Throttled))
        },
        // Retry-After as an HTTP date, in the future and in the past.
        Row {
            headers: &[("retry-after", "DATE+3")],
            ..row(Status(503), Method::GET, 1, retry(3_000, Throttled))
        },
        Row {
            headers: &[("retry-after", "DATE-30")],
            ..row(Status(429), Method::GET, 1, retry(100, Throttled))
        },
        // Garbage and absurd values are ignored; the backoff applies.
        Row {
            headers: &[("retry-after", "soon")],
            ..row(Status(429), Method::GET, 1, retry(100, Throttled))
        },
        Row {
            headers: &[("retry-after", "999999999")],
            ..row(Status(429), Method::GET, 1, retry(100, Throttled))
        },
        // Above the hint policy's cap (5 min) it is clamped, and then it passes the deadline.
        Row {
            headers: &[("retry-after", "3600")],
            ..row(
                Status(429),
                Method::GET,
                1,
                Decision::Stop {
                    reason: StopReason::DeadlineExceeded,
                    hint: Some(Duration::from_secs(300)),
                },
            )
        },
        // The deadline (10 s) against time already spent.
        Row {
            headers: &[("retry-after", "5")],
            elapsed: Duration::from_secs(6),
            ..row(
                Status(429),
                Method::GET,
                1,
                Decision::Stop {
                    reason: StopReason::DeadlineExceeded,
                    hint: Some(Duration::from_secs(5)),
                },
            )
        },
        Row {
            headers: &[("retry-after", "3")],
            elapsed: Duration::from_secs(6),
            ..row(Status(429), Method::GET, 1, retry(3_000, Throttled))
        },
        Row {
            elapsed: Duration::from_millis(9_950),
            ..row(
                Status(500),
                Method::GET,
                1,
                stop(StopReason::DeadlineExceeded),
            )
        },
        // Rate-limit headers as hints: an exhausted quota's reset.
        Row {
            headers: &[
                ("ratelimit-policy", "\"q\";q=10;w=60"),
                ("ratelimit", "\"q\";r=0;t=4"),
            ],
            ..row(Status(500), Method::GET, 1, retry(4_000, ServerError))
        },
        Row {
            headers: &[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "7")],
            ..row(Status(429), Method::GET, 1, retry(7_000, Throttled))
        },
        // The budget.
        Row {
            budget: 0,
            ..row(
                Status(500),
                Method::GET,
                1,
                stop(StopReason::BudgetExhausted),
            )
        },
        Row {
            budget: 1,
            ..row(Status(500), Method::GET, 1, retry(100, ServerError))
        },
        // Errors: a connect error is safe whatever the method; others only when idempotent.
        row(Error(Connect), Method::POST, 1, retry(100, Connect)),
        row(
            Error(Timeout),
            Method::POST,
            1,
            stop(StopReason::NotIdempotent),
        ),
        row(Error(Timeout), Method::GET, 1, retry(100, Timeout)),
        row(Error(Transport), Method::GET, 2, retry(200, Transport)),
        row(
            Error(Rejected),
            Method::GET,
            1,
            stop(StopReason::NotRetryable),
        ),
        row(Error(Other), Method::GET, 1, stop(StopReason::NotRetryable)),
        // A body that outgrew the replay buffer.
        Row {
            replayable: false,
            ..row(
                Status(500),
                Method::GET,
                1,
                stop(StopReason::BodyNotReplayable),
            )
        },
        // Checks run in order: attempts before the budget, idempotency before attempts.
        Row {
            budget: 0,
            ..row(
                Status(500),
                Method::GET,
                3,
                stop(StopReason::AttemptsExhausted),
            )
        },
        row(
            Status(500),
            Method::POST,
            3,
            stop(StopReason::NotIdempotent),
        ),
    ];
    assert!(rows.len() >= 30, "{} rows", rows.len());
    let policy = policy(Jitter::None, 3);
    for (i, row) in rows.iter().enumerate() {
        let (decision, left) = decide(&policy, row, &mut RetryState::new(1));
        assert_eq!(decision, row.expect, "row {i}");
        // Only a retry spends the budget.
        let spent = u64::from(matches!(decision, Decision::Retry { .. }));
        assert_eq!(left, row.budget - spent, "row {i}: budget left");
    }
}

#[tokio::test(start_paused = true)]
async fn backoff_reaches_its_cap() {
    let policy = policy(Jitter::None, 10);
    let delays: Vec<_> = (1..=6)
        .map(|attempts| {
            let (decision, _) = decide(
                &policy,
                &row(Ended::Status(500), Method::GET, attempts, Decision::Done),
                &mut RetryState::new(1),
            );
            decision
        })
        .collect();
    let expected: Vec<_> = [100, 200, 400, 800, 1_000, 1_000]
        .into_iter()
        .map(|ms| retry(ms, FailureKind::ServerError))
        .collect();
    assert_eq!(delays, expected);
}

#[tokio::test(start_paused = true)]
async fn seeded_jitter_rows_are_pinned() {
    // One request's successive retries, each drawing from the same seeded state.
    let cases = [
        (Jitter::Full, 42, [74_156_488, 31_982_078, 111_440_452]),
        (Jitter::Equal, 42, [87_078_244, 115_991_039, 255_720_226]),
        (
            Jitter::Decorrelated,
            42,
            [248_312_976, 203_132_437, 241_918_666],
        ),
        (
            Jitter::Proportional(25.0),
            42,
            [112_078_244, 165_991_039, 355_720_226],
        ),
    ];
    for (jitter, seed, expected_nanos) in cases {
        let policy = policy(jitter, 10);
        let mut state = RetryState::new(seed);
        let delays: Vec<_> = (1..=3)
            .map(|attempts| {
                match decide(
                    &policy,
                    &row(Ended::Status(503), Method::GET, attempts, Decision::Done),
                    &mut state,
                )
                .0
                {
                    Decision::Retry { delay, .. } => delay.as_nanos() as u64,
                    other => panic!("{jitter:?}: expected a retry, got {other:?}"),
                }
            })
            .collect();
        assert_eq!(delays, expected_nanos, "{jitter:?}");
        // The pinned values obey the jitter's bounds (curve: 100, 200, 400 ms).
        let ms = |nanos: u64| nanos as f64 / 1e6;
        for (n, nanos) in delays.iter().enumerate() {
            let curve = 100.0 * f64::from(1u32 << n);
            let (low, high) = match jitter {
                Jitter::Full => (0.0, curve),
                Jitter::Equal => (curve / 2.0, curve),
                Jitter::Proportional(p) => (curve * (1.0 - p / 100.0), curve * (1.0 + p / 100.0)),
                _ => (100.0, 1_000.0),
            };
            assert!(
                (low..=high).contains(&ms(*nanos)),
                "{jitter:?} retry {}: {}",
                n + 1,
                ms(*nanos)
            );
        }
    }
}
