//! The RFC 9111 table: each row scripts the upstream's answers, sends requests at exact
//! instants of paused time, and checks how each was answered and how many upstream calls
//! were made by then.
//!
//! Time: the cache reads tokio's clock and maps it to wall-clock time from an origin pinned
//! with `system_time_origin` (the table's `T0`), so the ages and `Date`/`Expires` arithmetic
//! are exact and the same on every run. Every row runs twice: against a scripted
//! `service_fn`, and over HTTP/1 to a real hyper server on 127.0.0.1 through hyper-util's
//! client.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "a failed setup is a failed test"
)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use seawall_cache::{CacheLayer, CacheLayerBuilder, CacheStatus};
use tokio::time::Instant;
use tower::util::BoxCloneService;
use tower::{BoxError, Layer, ServiceExt, service_fn};

/// The wall-clock time at the start of every row.
fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000)
}

/// An HTTP date `seconds` after `T0`.
fn date(seconds: i64) -> String {
    let time = if seconds >= 0 {
        t0() + Duration::from_secs(seconds.unsigned_abs())
    } else {
        t0() - Duration::from_secs(seconds.unsigned_abs())
    };
    httpdate::fmt_http_date(time)
}

/// One scripted answer of the upstream.
#[derive(Clone, Debug)]
enum Scripted {
    Answer {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: &'static str,
    },
    /// The connection is dropped without an answer (a transport error).
    Fail,
}

fn answer(status: u16, headers: &[(&'static str, &str)], body: &'static str) -> Scripted {
    Scripted::Answer {
        status,
        headers: headers.iter().map(|(n, v)| (*n, (*v).to_owned())).collect(),
        body,
    }
}

fn ok(headers: &[(&'static str, &str)], body: &'static str) -> Scripted {
    answer(200, headers, body)
}

fn not_modified(headers: &[(&'static str, &str)]) -> Scripted {
    answer(304, headers, "")
}

/// What a step expects.
#[derive(Clone, Debug)]
enum Expect {
    Answer {
        cache: CacheStatus,
        status: u16,
        body: &'static str,
    },
    Error,
}

fn expect(cache: CacheStatus, status: u16, body: &'static str) -> Expect {
    Expect::Answer {
        cache,
        status,
        body,
    }
}

#[derive(Clone, Debug)]
struct Step {
    /// Seconds after the row's start.
    at: u64,
    method: Method,
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    expect: Expect,
    /// Upstream calls made by the end of this step, since the row's start.
    calls: usize,
    /// A header the upstream must have seen on its latest call (a validator).
    upstream_saw: Option<(&'static str, String)>,
    /// The `Age` the answer must carry.
    age: Option<u64>,
}

fn get(at: u64, expect: Expect, calls: usize) -> Step {
    Step {
        at,
        method: Method::GET,
        path: "/item",
        headers: Vec::new(),
        expect,
        calls,
        upstream_saw: None,
        age: None,
    }
}

impl Step {
    fn path(mut self, path: &'static str) -> Self {
        self.path = path;
        self
    }
    fn method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }
    fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.push((name, value));
        self
    }
    fn saw(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.upstream_saw = Some((name, value.into()));
        self
    }
    fn age(mut self, age: u64) -> Self {
        self.age = Some(age);
        self
    }
}

struct Row {
    name: &'static str,
    config: fn(CacheLayerBuilder) -> CacheLayerBuilder,
    script: Vec<Scripted>,
    steps: Vec<Step>,
}

fn same(builder: CacheLayerBuilder) -> CacheLayerBuilder {
    builder
}

use CacheStatus::{Bypass, Hit, Miss, Revalidated, Stale};

fn rows() -> Vec<Row> {
    vec![
        Row {
            name: "fresh: max-age answers from the cache, with its age",
            config: same,
            script: vec![ok(&[("cache-control", "max-age=60")], "v1")],
            steps: vec![
                get(0, expect(Miss, 200, "v1"), 1),
                get(30, expect(Hit, 200, "v1"), 1).age(30),
                get(59, expect(Hit, 200, "v1"), 1).age(59),
            ],
        },
        Row {
            name: "stale without a validator: fetched again and replaced",
            config: same,
            script: vec![
                ok(&[("cache-control", "max-age=60")], "v1"),
                ok(&[("cache-control", "max-age=60")], "v2"),
            ],
            steps: vec![
                get(0, expect(Miss, 200, "v1"), 1),
                get(60, expect(Miss, 200, "v2"), 2),
                get(61, expect(Hit, 200, "v2"), 2).age(1),
            ],
        },
        Row {
            name: "no-store: never stored",
            config: same,
            script: vec![
                ok(&[("cache-control", "no-store, max-age=60")], "v1"),
                ok(&[("cache-control", "no-store, max-age=60")], "v2"),
            ],
            steps: vec![
                get(0, expect(Miss, 200, "v1"), 1),
                get(1, expect(Miss, 200, "v2"), 2),
            ],
        },
        Row {
            name: "no-cache: stored, revalidated before every use",
            config: same,
            script: vec![
                ok(&[("cache-control", "no-cache"), ("etag", "\"a\"")], "v1"),
                not_modified(&[("etag", "\"a\"")]),
            ],
            steps: vec![
                get(0, expect(Miss, 200, "v1"), 1),
                get(1, expect(Revalidated, 200, "v1"), 2).saw("if-none-match", "\"a\""),
            ],
        },
        Row {
            name: "private: a private cache may store it",
            config: same,
            script: vec![ok(&[("cache-control", "private, max-age=60")], "v1")],
            steps: vec![
                get(0, expect(Miss, 200, "v1"), 1),
                get(10, expect(Hit, 200, "v1"), 1),
            ],
        },
        Row {
            name: "max-age=0 without a validator: never reused",
            config: same,
            script: vec![
                ok(&[("cache-control", "max-age=0")], "v1"),
                ok(&[("cache-control", "max-age=0")], "v2"),
            ],
            steps: vec![
                get(0, expect(Miss, 200, "v1"), 1),
                get(0, expect(Miss, 200, "v2"), 2),
            ],
        },
        Row {
            name: "Expires: fresh until that date, counted from the server's Date",
            config: same,
            script: vec![
                ok(&[("date", &date(0)), ("expires", &date(60))], "v1"),
                ok(&[("date", &date(60)), ("expires", &date(120))], "v2"),
            ],
            steps: vec![
                get(0, expect(Miss, 200, "v1"), 1),
                get(59, expect(Hit, 200, "v1"), 1),
                get(60, expect(Miss, 200, "v2"), 2),
            ],
        },
        Row {
            name: "Vary match: the same header value is a hit",
            config: same,
            script: vec![ok(
                &[("cache-control", "max-age=60"), ("vary", "accept")],
                "json",
            )],
            steps: vec![
                get(0, expect(Miss, 200, "json"), 1).header("accept", "application/json"),
                get(1, expect(Hit, 200, "json"), 1).header("accept", "application/json"),
            ],
        },
        Row {
            name: "Vary mismatch: another header value is a miss",
            config: same,
            script: vec![
                ok(
                    &[("cache-control", "max-age=60"), ("vary", "accept")],
                    "json",
                ),
                ok(
                    &[("cache-control", "max-age=60"), ("vary", "accept")],
                    "xml",
                ),
            ],
            steps: vec![
                get(0, expect(Miss, 200, "json"), 1).header("accept", "application/json"),
                get(1, expect(Miss, 200, "xml"), 2).header("accept", "application/xml"),
                get(2, expect(Hit, 200, "xml"), 2).header("accept", "application/xml"),
            ],
        },
        Row {
            name: "Vary: * never matches",
            config: same,
            script: vec![
                ok(&[("cache-control", "max-age=60"), ("vary", "*")], "v1"),
                ok(&[("cache-control", "max-age=60"), ("vary", "*")], "v2"),
            ],
            steps: vec![
                get(0, expect(Miss, 200, "v1"), 1),
                get(1, expect(Miss, 200, "v2"), 2),
            ],
        },
        Row {
            name: "ETag: a 304 refreshes the entry; the caller gets the stored body",
            config: same,
            script: vec![
                ok(&[("cache-control", "max-age=10"), ("etag", "\"v1\"")], "v1"),
                not_modified(&[("cache-control", "max-age=10"), ("etag", "\"v1\"")]),
                not_modified(&[("cache-control", "max-age=10"), ("etag", "\"v1\"")]),
            ],
            steps: vec![
                get(0, expect(Miss, 200, "v1"), 1),
                get(20, expect(Revalidated, 200, "v1"), 2)
                    .saw("if-none-match", "\"v1\"")
                    .age(0),
                get(25, expect(Hit, 200, "v1"), 2).age(5),
                get(31, expect(Revalidated, 200, "v1"), 3),
            ],
        },
        Row {
            name: "Last-Modified: a 304 to If-Modified-Since refreshes the entry",
            config: same,
            script: vec![
                ok(
                    &[
                        ("cache-control", "max-age=10"),
                        ("last-modified", &date(-3600)),
                    ],
                    "v1",
                ),
                not_modified(&[("cache-control", "max-age=30")]),
            ],
            steps: vec![
                get(0, expect(Miss, 200, "v1"), 1),
                get(20, expect(Revalidated, 200, "v1"), 2).saw("if-modified-since", date(-3600)),
                get(49, expect(Hit, 200, "v1"), 2).age(29),
            ],
        },
        Row {
            name: "a 304 naming another version: the caller gets the stored answer, never a \
                   bare 304, and the next request fetches the new one",
            config: same,
            script: vec![
                ok(
                    &[
                        ("cache-control", "max-age=10"),
                        ("last-modified", &date(-3600)),
                    ],
                    "v1",
                ),
                not_modified(&[("cache-control", "max-age=10"), ("etag", "\"v2\"")]),
                ok(&[("cache-control", "max-age=10"), ("etag", "\"v2\"")], "v2"),
            ],
            steps: vec![
                get(0, expect(Miss, 200, "v1"), 1),
                get(20, expect(Revalidated, 200, "v1"), 2).saw("if-modified-since", date(-3600)),
                get(21, expect(Miss, 200, "v2"), 3),
                get(22, expect(Hit, 200, "v2"), 3).age(1),
            ],
        },
        Row {
            name: "a max-age of twenty digits counts as 2^31 seconds, not an overflow",
            config: same,
            script: vec![ok(
                &[("cache-control", "max-age=10000000000000000000")],
                "v1",
            )],
            steps: vec![
                get(0, expect(Miss, 200, "v1"), 1),
                get(1_000_000, expect(Hit, 200, "v1"), 1).age(1_000_000),
            ],
        },
        Row {
            name: "a stale-if-error of twenty digits keeps the answer for a failure, without \
                   an overflow",
            config: same,
            script: vec![
                ok(
                    &[(
                        "cache-control",
                        "max-age=60, stale-if-error=10000000000000000000",
                    )],
                    "v1",
                ),
                answer(503, &[], "down"),
            ],
            steps: vec![
                get(0, expect(Miss, 200, "v1"), 1),
                get(1_000_000, expect(Stale, 200, "v1"), 2).age(1_000_000),
            ],
        },
        Row {
            name: "an Age of u64::MAX counts as 2^31 seconds, with or without the request's \
                   own directives",
            config: same,
            script: vec![
                ok(
                    &[
                        ("cache-control", "max-age=60, stale-if-error=600"),
                        ("age", "18446744073709551615"),
                    ],
                    "v1",
                ),
                answer(503, &[], "down"),
                answer(503, &[], "down"),
            ],
            steps: vec![
                get(0, expect(Miss, 200, "v1"), 1),
                get(5, expect(Stale, 200, "v1"), 2).age(2_147_483_653),
                get(6, expect(Stale, 200, "v1"), 3)
                    .header("cache-control", "max-age=30")
                    .age(2_147_483_654),
            ],
        },
        Row {
            name: "an Age the cache cannot read (a sign before its digits) is dropped, not read \
                   by the policy as u64::MAX seconds, which overflowed on a request's own \
                   directives",
            config: same,
            script: vec![ok(
                &[
                    ("cache-control", "max-age=60"),
                    ("etag", "\"v1\""),
                    ("age", "+18446744073709551615"),
                ],
                "v1",
            )],
            steps: vec![
                get(0, expect(Miss, 200, "v1"), 1),
                get(5, expect(Hit, 200, "v1"), 1).age(5),
                get(6, expect(Hit, 200, "v1"), 1)
                    .header("cache-control", "max-stale=100")
                    .age(6),
            ],
        },
        Row {
            name: "two virtual hosts behind one address (the `Host` header beside the URI's \
                   authority) keep answers of their own",
            config: same,
            script: vec![
                ok(&[("cache-control", "max-age=60")], "v1"),
                ok(&[("cache-control", "max-age=60")], "v2"),
            ],
            steps: vec![
                get(0, expect(Miss, 200, "v1"), 1).header("host", "a.example"),
                get(1, expect(Miss, 200, "v2"), 2).header("host", "b.example"),
                get(2, expect(Hit, 200, "v1"), 2)
                    .header("host", "a.example")
                    .age(2),
            ],
        },
        Row {
            name: "a 200 to a revalidation replaces the entry",
            config: same,
            script: vec![
                ok(&[("cache-control", "max-age=10"), ("etag", "\"v1\"")], "v1"),
                ok(&[("cache-control", "max-age=10"), ("etag", "\"v2\"")], "v2"),
            ],
            steps: vec![
                get(0, expect(Miss, 200, "v1"), 1),
                get(20, expect(Miss, 200, "v2"), 2).saw("if-none-match", "\"v1\""),
                get(25, expect(Hit, 200, "v2"), 2),
            ],
        },
        Row {
            name: "TTL fallback: an answer without cache headers stays fresh for the TTL",
            config: |b| b.ttl(Duration::from_secs(30)),
            script: vec![ok(&[], "v1"), ok(&[], "v2")],
            steps: vec![
                get(0, expect(Miss, 200, "v1"), 1),
                get(29, expect(Hit, 200, "v1"), 1),
                get(30, expect(Miss, 200, "v2"), 2),
            ],
        },
        Row {
            name: "no TTL: an answer without cache headers is not reused",
            config: same,
            script: vec![ok(&[], "v1"), ok(&[], "v2")],
            steps: vec![
                get(0, expect(Miss, 200, "v1"), 1),
                get(1, expect(Miss, 200, "v2"), 2),
            ],
        },
        Row {
            name: "TTL per route: the longest prefix's TTL",
            config: |b| {
                b.ttl(Duration::from_secs(10))
                    .route_ttl("/slow", Duration::from_secs(300))
            },
            script: vec![ok(&[], "slow"), ok(&[], "fast"), ok(&[], "fast2")],
            steps: vec![
                get(0, expect(Miss, 200, "slow"), 1).path("/slow/1"),
                get(0, expect(Miss, 200, "fast"), 2).path("/fast/1"),
                get(100, expect(Hit, 200, "slow"), 2).path("/slow/1"),
                get(100, expect(Miss, 200, "fast2"), 3).path("/fast/1"),
            ],
        },
        Row {
            name: "a zero route TTL keeps that route out of the cache",
            config: |b| {
                b.ttl(Duration::from_secs(60))
                    .route_ttl("/live", Duration::ZERO)
            },
            script: vec![ok(&[], "v1"), ok(&[], "v2")],
            steps: vec![
                get(0, expect(Miss, 200, "v1"), 1).path("/live/feed"),
                get(1, expect(Miss, 200, "v2"), 2).path("/live/feed"),
            ],
        },
        Row {
            name: "no-store beats the TTL",
            config: |b| b.ttl(Duration::from_secs(60)),
            script: vec![
                ok(&[("cache-control", "no-store")], "v1"),
                ok(&[("cache-control", "no-store")], "v2"),
            ],
            steps: vec![
                get(0, expect(Miss, 200, "v1"), 1),
                get(1, expect(Miss, 200, "v2"), 2),
            ],
        },
        Row {
            name: "POST is not cached",
            config: |b| b.ttl(Duration::from_secs(60)),
            script: vec![
                ok(&[("cache-control", "max-age=60")], "v1"),
                ok(&[("cache-control", "max-age=60")], "v2"),
            ],
            steps: vec![
                get(0, expect(Bypass, 200, "v1"), 1).method(Method::POST),
                get(1, expect(Bypass, 200, "v2"), 2).method(Method::POST),
            ],
        },
        Row {
            name: "a successful unsafe request invalidates the URI's entry",
            config: same,
            script: vec![
                ok(&[("cache-control", "max-age=60")], "v1"),
                answer(500, &[], "failed"),
                answer(204, &[], ""),
                ok(&[("cache-control", "max-age=60")], "v2"),
            ],
            steps: vec![
                get(0, expect(Miss, 200, "v1"), 1),
                get(1, expect(Bypass, 500, "failed"), 2).method(Method::PUT),
                get(2, expect(Hit, 200, "v1"), 2),
                get(3, expect(Bypass, 204, ""), 3).method(Method::DELETE),
                get(4, expect(Miss, 200, "v2"), 4),
                get(5, expect(Hit, 200, "v2"), 4),
            ],
        },
        Row {
            name: "error statuses are not cached, not even with the TTL or max-age",
            config: |b| b.ttl(Duration::from_secs(60)),
            script: vec![
                answer(500, &[], "down"),
                answer(404, &[("cache-control", "max-age=60")], "gone"),
                ok(&[], "v1"),
            ],
            steps: vec![
                get(0, expect(Miss, 500, "down"), 1),
                get(1, expect(Miss, 404, "gone"), 2),
                get(2, expect(Miss, 200, "v1"), 3),
                get(3, expect(Hit, 200, "v1"), 3),
            ],
        },
        Row {
            name: "stale-if-error on a 5xx: the stale entry answers",
            config: same,
            script: vec![
                ok(&[("cache-control", "max-age=10, stale-if-error=60")], "v1"),
                answer(503, &[], "busy"),
            ],
            steps: vec![
                get(0, expect(Miss, 200, "v1"), 1),
                get(20, expect(Stale, 200, "v1"), 2).age(20),
            ],
        },
        Row {
            name: "stale-if-error on a transport error: the stale entry answers",
            config: same,
            script: vec![
                ok(&[("cache-control", "max-age=10, stale-if-error=60")], "v1"),
                Scripted::Fail,
            ],
            steps: vec![
                get(0, expect(Miss, 200, "v1"), 1),
                get(69, expect(Stale, 200, "v1"), 2),
            ],
        },
        Row {
            name: "stale-if-error allowance over: the 5xx reaches the caller",
            config: same,
            script: vec![
                ok(&[("cache-control", "max-age=10, stale-if-error=60")], "v1"),
                answer(503, &[], "busy"),
            ],
            steps: vec![
                get(0, expect(Miss, 200, "v1"), 1),
                get(70, expect(Miss, 503, "busy"), 2),
            ],
        },
        Row {
            name: "stale-if-error allowance over: the transport error reaches the caller",
            config: same,
            script: vec![
                ok(&[("cache-control", "max-age=10, stale-if-error=60")], "v1"),
                Scripted::Fail,
            ],
            steps: vec![
                get(0, expect(Miss, 200, "v1"), 1),
                get(70, Expect::Error, 2),
            ],
        },
        Row {
            name: "a configured allowance covers answers without the directive",
            config: |b| b.stale_if_error(Duration::from_secs(30)),
            script: vec![
                ok(&[("cache-control", "max-age=10")], "v1"),
                Scripted::Fail,
                Scripted::Fail,
            ],
            steps: vec![
                get(0, expect(Miss, 200, "v1"), 1),
                get(39, expect(Stale, 200, "v1"), 2),
                get(40, Expect::Error, 3),
            ],
        },
        Row {
            name: "must-revalidate: no configured allowance",
            config: |b| b.stale_if_error(Duration::from_secs(30)),
            script: vec![
                ok(&[("cache-control", "max-age=10, must-revalidate")], "v1"),
                answer(502, &[], "bad gateway"),
            ],
            steps: vec![
                get(0, expect(Miss, 200, "v1"), 1),
                get(20, expect(Miss, 502, "bad gateway"), 2),
            ],
        },
        Row {
            name: "a request's no-cache revalidates a fresh entry",
            config: same,
            script: vec![
                ok(&[("cache-control", "max-age=60"), ("etag", "\"a\"")], "v1"),
                not_modified(&[("etag", "\"a\"")]),
            ],
            steps: vec![
                get(0, expect(Miss, 200, "v1"), 1),
                get(1, expect(Revalidated, 200, "v1"), 2).header("cache-control", "no-cache"),
                get(2, expect(Hit, 200, "v1"), 2),
            ],
        },
        Row {
            name: "a request's no-store bypasses the cache",
            config: same,
            script: vec![
                ok(&[("cache-control", "max-age=60")], "v1"),
                ok(&[("cache-control", "max-age=60")], "v2"),
            ],
            steps: vec![
                get(0, expect(Miss, 200, "v1"), 1),
                get(1, expect(Bypass, 200, "v2"), 2).header("cache-control", "no-store"),
                get(2, expect(Hit, 200, "v1"), 2),
            ],
        },
        Row {
            name: "each credential has its own entries",
            config: same,
            script: vec![
                ok(&[("cache-control", "private, max-age=60")], "alice"),
                ok(&[("cache-control", "private, max-age=60")], "bob"),
            ],
            steps: vec![
                get(0, expect(Miss, 200, "alice"), 1).header("authorization", "Bearer alice"),
                get(1, expect(Miss, 200, "bob"), 2).header("authorization", "Bearer bob"),
                get(2, expect(Hit, 200, "alice"), 2).header("authorization", "Bearer alice"),
                get(3, expect(Hit, 200, "bob"), 2).header("authorization", "Bearer bob"),
            ],
        },
        Row {
            name: "an upstream Age counts against max-age",
            config: same,
            script: vec![
                ok(&[("cache-control", "max-age=60"), ("age", "50")], "v1"),
                ok(&[("cache-control", "max-age=60")], "v2"),
            ],
            steps: vec![
                get(0, expect(Miss, 200, "v1"), 1),
                get(9, expect(Hit, 200, "v1"), 1).age(59),
                get(10, expect(Miss, 200, "v2"), 2),
            ],
        },
        Row {
            name: "a body over the bound streams through unstored",
            config: |b| b.max_body_bytes(4),
            script: vec![
                ok(&[("cache-control", "max-age=60")], "0123456789"),
                ok(&[("cache-control", "max-age=60")], "0123456789"),
            ],
            steps: vec![
                get(0, expect(Miss, 200, "0123456789"), 1),
                get(1, expect(Miss, 200, "0123456789"), 2),
            ],
        },
    ]
}

/// The upstream's state: the script left, the calls made, the headers of the latest call.
#[derive(Default)]
struct Upstream {
    script: Mutex<VecDeque<Scripted>>,
    calls: Mutex<usize>,
    last_headers: Mutex<HeaderMap>,
}

impl Upstream {
    fn new(script: Vec<Scripted>) -> Arc<Self> {
        Arc::new(Upstream {
            script: Mutex::new(script.into()),
            ..Upstream::default()
        })
    }

    /// The next scripted answer, `None` for a transport failure.
    fn next(&self, headers: &HeaderMap) -> Option<Response<Full<Bytes>>> {
        *self.calls.lock().unwrap() += 1;
        *self.last_headers.lock().unwrap() = headers.clone();
        match self.script.lock().unwrap().pop_front() {
            Some(Scripted::Answer {
                status,
                headers,
                body,
            }) => {
                let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
                *response.status_mut() = StatusCode::from_u16(status).unwrap();
                for (name, value) in headers {
                    response.headers_mut().append(name, value.parse().unwrap());
                }
                Some(response)
            }
            Some(Scripted::Fail) => None,
            None => panic!("the upstream was called more often than scripted"),
        }
    }

    fn calls(&self) -> usize {
        *self.calls.lock().unwrap()
    }
}

type Client = BoxCloneService<Request<Empty<Bytes>>, Response<BoxBody<Bytes, BoxError>>, BoxError>;

/// A `service_fn` playing the script.
fn scripted(upstream: Arc<Upstream>) -> (Client, String) {
    let service = service_fn(move |request: Request<Empty<Bytes>>| {
        let upstream = Arc::clone(&upstream);
        async move {
            match upstream.next(request.headers()) {
                Some(response) => {
                    Ok(response.map(|body| body.map_err(|never| match never {}).boxed()))
                }
                None => Err(BoxError::from("connection reset by the script")),
            }
        }
    });
    (BoxCloneService::new(service), "http://api.test".to_owned())
}

/// A hyper server on 127.0.0.1 playing the script, and hyper-util's client.
async fn over_hyper(upstream: Arc<Upstream>) -> (Client, String) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let upstream = Arc::clone(&upstream);
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let answer = upstream.next(request.headers());
                        async move {
                            match answer {
                                Some(response) => Ok::<_, std::io::Error>(response),
                                // An error from the service makes hyper drop the connection
                                // without an answer.
                                None => Err(std::io::Error::other("scripted failure")),
                            }
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let client = client
        .map_response(|response: Response<hyper::body::Incoming>| {
            response.map(|body| body.map_err(BoxError::from).boxed())
        })
        .map_err(BoxError::from);
    (BoxCloneService::new(client), format!("http://{address}"))
}

#[derive(Clone, Copy, Debug)]
enum Transport {
    ServiceFn,
    Hyper,
}

async fn run_row(row: &Row, transport: Transport) {
    let upstream = Upstream::new(row.script.clone());
    let (client, base) = match transport {
        Transport::ServiceFn => scripted(Arc::clone(&upstream)),
        Transport::Hyper => over_hyper(Arc::clone(&upstream)).await,
    };
    let layer = (row.config)(
        CacheLayer::builder()
            .system_time_origin(t0())
            .status_header(http::HeaderName::from_static("x-cache")),
    )
    .build()
    .unwrap();
    let start = Instant::now();
    let service = layer.layer(client);
    for (index, step) in row.steps.iter().enumerate() {
        let context = format!("{} ({transport:?}), step {index}", row.name);
        let at = start + Duration::from_secs(step.at);
        let now = Instant::now();
        assert!(at >= now, "{context}: steps must go forward in time");
        tokio::time::advance(at - now).await;

        let mut request = Request::builder()
            .method(step.method.clone())
            .uri(format!("{base}{}", step.path));
        for (name, value) in &step.headers {
            request = request.header(*name, *value);
        }
        let result = service
            .clone()
            .oneshot(request.body(Empty::new()).unwrap())
            .await;
        match (&step.expect, result) {
            (
                Expect::Answer {
                    cache,
                    status,
                    body,
                },
                Ok(response),
            ) => {
                assert_eq!(response.status().as_u16(), *status, "{context}: status");
                assert_eq!(
                    response.extensions().get::<CacheStatus>(),
                    Some(cache),
                    "{context}: cache status"
                );
                assert_eq!(
                    response.headers().get("x-cache").unwrap(),
                    cache.as_str(),
                    "{context}: cache status header"
                );
                if let Some(age) = step.age {
                    assert_eq!(
                        response.headers().get("age").unwrap(),
                        &age.to_string(),
                        "{context}: age"
                    );
                }
                let got = response.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(got, body.as_bytes(), "{context}: body");
            }
            (Expect::Error, Err(_)) => {}
            (expected, got) => panic!(
                "{context}: expected {expected:?}, got {:?}",
                got.map(|response| response.status())
            ),
        }
        assert_eq!(upstream.calls(), step.calls, "{context}: upstream calls");
        if let Some((name, value)) = &step.upstream_saw {
            assert_eq!(
                upstream
                    .last_headers
                    .lock()
                    .unwrap()
                    .get(*name)
                    .map(|v| v.to_str().unwrap().to_owned()),
                Some(value.clone()),
                "{context}: the upstream's {name}"
            );
        }
    }
    assert!(
        upstream.script.lock().unwrap().is_empty(),
        "{} ({transport:?}): the script was not played to its end",
        row.name
    );
}

#[test]
fn the_table_has_at_least_twenty_rows() {
    assert!(rows().len() >= 20, "{} rows", rows().len());
}

#[tokio::test(start_paused = true)]
async fn rfc9111_table_over_a_scripted_service() {
    for row in rows() {
        run_row(&row, Transport::ServiceFn).await;
    }
}

#[tokio::test(start_paused = true)]
async fn rfc9111_table_over_a_real_hyper_server() {
    for row in rows() {
        run_row(&row, Transport::Hyper).await;
    }
}
