//! `ClientBuilder` refuses settings it cannot honour with a `ConfigError` naming the field, and
//! never shows a credential in it.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::time::Duration;

fn builder() -> seawall::ClientBuilder {
    seawall::stack()
        .build()
        .unwrap()
        .client_builder("http://127.0.0.1:8080/v1")
}

#[test]
fn settings_it_cannot_honour_are_refused_by_name() {
    let cases = [
        (builder().timeout(Duration::ZERO), "timeout"),
        (builder().timeout(Duration::from_secs(7200)), "timeout"),
        (builder().max_body_size(0), "max_body_size"),
        (builder().default_header("bad name", "v"), "default_header"),
        (
            builder().default_header("x-ok", "line\nbreak"),
            "default_header",
        ),
        (builder().bearer_auth("t0ken\nx"), "bearer_auth"),
    ];
    for (builder, field) in cases {
        let error = builder.build().unwrap_err();
        assert_eq!(error.field(), field, "{error}");
        assert!(!format!("{error} {error:?}").contains("t0ken"), "{error:?}");
    }
}

#[test]
fn the_limits_themselves_are_accepted() {
    builder()
        .timeout(Duration::from_millis(1))
        .max_body_size(1)
        .build()
        .unwrap();
    builder()
        .timeout(Duration::from_secs(3600))
        .pool_idle_timeout(None)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
}

#[test]
fn credentials_set_as_plain_headers_stay_out_of_debug() {
    let api = builder()
        .default_header("authorization", "Bearer t0ken-default")
        .build()
        .unwrap();
    let mut more = http::HeaderMap::new();
    more.insert("cookie", "session=t0ken-cookie".parse().unwrap());
    more.insert("x-trace", "visible-1".parse().unwrap());
    let request = api
        .get("items")
        .header("authorization", "Bearer t0ken-request")
        .header("proxy-authorization", "Basic t0ken-proxy")
        .headers(more);

    let shown = format!("{api:?} {request:?}");

    assert!(!shown.contains("t0ken"), "{shown}");
    assert!(shown.contains("visible-1"), "{shown}");
}
