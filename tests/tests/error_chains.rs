//! Every public error type with a source prints that source once: its `Display` does not
//! repeat what `source()` returns, so walking the chain (as anyhow's `{:#}` does) shows each
//! cause exactly once. Errors come from real stacks against real servers on 127.0.0.1 where
//! they can, built by hand otherwise.

#![allow(
    clippy::unwrap_used,
    reason = "a test reports a broken fixture by panicking"
)]

use std::collections::HashMap;
use std::error::Error;
use std::io;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use seawall::ClientErrorKind;
use seawall_circuit_breaker::{BreakerError, CircuitBreakerLayer};
use seawall_core::ConfigError;
use seawall_examples::{Upstream, respond};
use seawall_rate_limit::{RateLimitError, Rejected, StoreError};
use seawall_retry::{ReplayBody, RetryLayer};
use tower::{Layer, ServiceExt, service_fn};

/// The `Display` of every link of the chain, outermost first.
fn links(error: &(dyn Error + 'static)) -> Vec<String> {
    let mut links = Vec::new();
    let mut current = Some(error);
    while let Some(link) = current {
        links.push(link.to_string());
        current = link.source();
    }
    links
}

/// Checks that no link repeats its source and that the chain joined with ": " (anyhow's
/// `{:#}`) holds each link once; returns the joined chain.
#[track_caller]
fn assert_each_cause_once<E: Error + Send + Sync + 'static>(error: E) -> String {
    let mut current: Option<&(dyn Error + 'static)> = Some(&error);
    while let Some(link) = current {
        if let Some(source) = link.source() {
            let (outer, inner) = (link.to_string(), source.to_string());
            assert!(
                !outer.contains(&inner),
                "`{outer}` repeats its source `{inner}`"
            );
        }
        current = link.source();
    }
    let links = links(&error);
    let joined = links.join(": ");
    for link in &links {
        assert_eq!(
            joined.matches(link.as_str()).count(),
            1,
            "`{link}` appears more than once in `{joined}`"
        );
    }
    assert_eq!(format!("{:#}", anyhow::Error::new(error)), joined);
    joined
}

/// A port nothing listens on, and what the OS says when a connection to it is refused.
fn closed_port() -> (std::net::SocketAddr, String) {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap();
    let refused = std::net::TcpStream::connect(addr).unwrap_err().to_string();
    (addr, refused)
}

#[test]
fn errors_without_a_source_print_themselves() {
    let config = ConfigError::new("max_attempts", 0, "an integer from 1 to 100");
    assert_eq!(
        assert_each_cause_once(config),
        "invalid `max_attempts` = 0: expected an integer from 1 to 100"
    );
    assert_eq!(
        assert_each_cause_once(StoreError::new("Redis did not answer")),
        "rate-limit store unavailable: Redis did not answer"
    );
    assert_eq!(
        links(&Rejected::QueueFull { max_waiting: 8 }).len(),
        1,
        "a queue-full refusal has no cause"
    );
}

#[test]
fn a_store_refusal_prints_the_store_error_once() {
    let rejected = Rejected::StoreUnavailable(StoreError::new("Redis did not answer"));
    assert_eq!(links(&rejected).len(), 2);
    assert_eq!(
        assert_each_cause_once(rejected),
        "rate limiter refused the request because its store could not be asked (it fails \
         closed): rate-limit store unavailable: Redis did not answer"
    );
}

#[test]
fn a_rate_limit_error_prints_its_refusal_once() {
    let queue_full: RateLimitError<io::Error> =
        RateLimitError::Rejected(Rejected::QueueFull { max_waiting: 8 });
    assert_eq!(
        assert_each_cause_once(queue_full),
        "rate limiter queue is full (8 requests waiting); send fewer at once or raise \
         `max_waiting`"
    );
    let store: RateLimitError<io::Error> =
        RateLimitError::Rejected(Rejected::StoreUnavailable(StoreError::new("down")));
    assert_eq!(
        assert_each_cause_once(store),
        "rate limiter refused the request because its store could not be asked (it fails \
         closed): rate-limit store unavailable: down"
    );
    let inner: RateLimitError<io::Error> =
        RateLimitError::Inner(io::Error::other(StoreError::new("below")));
    assert_eq!(
        assert_each_cause_once(inner),
        "rate-limit store unavailable: below"
    );
}

#[tokio::test(start_paused = true)]
async fn a_breaker_refusal_prints_once() {
    let layer = CircuitBreakerLayer::builder().build().unwrap();
    layer.handle().force_open(&());
    let service = layer.layer(service_fn(|_req: Request<()>| async {
        Ok::<_, io::Error>(http::Response::new(()))
    }));
    let error: BreakerError<io::Error> = service
        .oneshot(Request::new(()))
        .await
        .expect_err("forced open");
    assert!(error.as_open().is_some());
    assert_eq!(
        assert_each_cause_once(error),
        "circuit breaker is forced open: calls are refused until it is reset through its handle"
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_error_prints_the_last_cause_once() {
    let retry = RetryLayer::builder()
        .max_attempts(2)
        .fixed_backoff(Duration::from_millis(10))
        .build()
        .unwrap();
    let upstream = service_fn(|_req: Request<ReplayBody<Full<Bytes>>>| async {
        Err::<http::Response<()>, _>(io::Error::new(
            io::ErrorKind::ConnectionReset,
            StoreError::new("inner"),
        ))
    });
    let error = retry
        .layer(upstream)
        .oneshot(Request::new(Full::new(Bytes::new())))
        .await
        .expect_err("every attempt fails");
    assert_eq!(error.attempts(), 2);
    assert_eq!(
        assert_each_cause_once(error),
        "request failed after 2 attempts (no attempts left): rate-limit store unavailable: inner"
    );
}

#[tokio::test(start_paused = true)]
async fn the_standard_stack_prints_each_cause_once() {
    // A real connect error through every layer: retry, breaker, limiter, attempt, hyper-util.
    let stack = seawall::stack().build().unwrap();
    let service = stack.hyper_client::<Full<Bytes>>();
    let (closed, refused) = closed_port();
    let request = Request::get(format!("http://{closed}/"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let error = service.oneshot(request).await.expect_err("nothing listens");
    assert_eq!(error.attempts(), 3);
    assert_eq!(
        links(&error),
        [
            "request failed after 3 attempts (no attempts left)",
            "client error (Connect)",
            "tcp connect error",
            &refused,
        ]
    );
    assert_each_cause_once(error);

    // The breaker's refusal through the whole stack.
    let stack = seawall::stack().build().unwrap();
    let request = Request::get("http://refused.test/")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let host = seawall::core::KeyExtractor::extract_from(&seawall::core::ByHost, &request);
    stack.circuit_breaker().force_open(&host);
    let error = stack
        .hyper_client::<Full<Bytes>>()
        .oneshot(request)
        .await
        .expect_err("forced open");
    assert_eq!(
        assert_each_cause_once(error),
        "request failed after 1 attempt (the failure is not retryable): circuit breaker is \
         forced open: calls are refused until it is reset through its handle"
    );
}

#[tokio::test(start_paused = true)]
async fn the_json_client_prints_each_cause_once() {
    let upstream = Upstream::start(|_req| async { respond(200, &[], "not json") })
        .await
        .unwrap();
    let stack = seawall::stack().build().unwrap();
    let client = stack.client(&upstream.url("")).unwrap();

    let decode = client.get_json::<u32>("/n").await.unwrap_err();
    assert!(
        matches!(decode.kind(), ClientErrorKind::Decode(_)),
        "{decode:?}"
    );
    assert_eq!(
        assert_each_cause_once(decode),
        format!(
            "reading the response as JSON ({}): expected ident at line 1 column 2",
            upstream.url("/n")
        )
    );

    let invalid = client
        .get_json::<u32>("https://elsewhere.example/n")
        .await
        .unwrap_err();
    assert!(
        matches!(invalid.kind(), ClientErrorKind::Request(_)),
        "{invalid:?}"
    );
    assert_eq!(links(&invalid).len(), 2);
    assert_eq!(
        assert_each_cause_once(invalid),
        "invalid request: the path leaves the client's base URL"
    );

    // A map with keys that are not strings cannot be written as JSON.
    let body: HashMap<(u8, u8), u8> = HashMap::from([((1, 2), 3)]);
    let encode = client.post_json::<_, u32>("/n", &body).await.unwrap_err();
    assert!(
        matches!(encode.kind(), ClientErrorKind::Encode(_)),
        "{encode:?}"
    );
    assert_eq!(
        assert_each_cause_once(encode),
        format!(
            "encoding the request ({}): key must be a string",
            upstream.url("/n")
        )
    );

    let (closed, refused) = closed_port();
    let stack_error = stack
        .client(&format!("http://{closed}"))
        .unwrap()
        .get_json::<u32>("/n")
        .await
        .unwrap_err();
    assert!(
        matches!(stack_error.kind(), ClientErrorKind::Stack(_)),
        "{stack_error:?}"
    );
    assert_eq!(
        links(&stack_error),
        [
            format!("the request failed (http://{closed}/n)").as_str(),
            "request failed after 3 attempts (no attempts left)",
            "client error (Connect)",
            "tcp connect error",
            &refused,
        ]
    );
    assert_each_cause_once(stack_error);
}

#[tokio::test(start_paused = true)]
async fn the_reqwest_middleware_prints_each_cause_once() {
    let stack = seawall::stack().build().unwrap();
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(seawall_reqwest::SeawallMiddleware::new(&stack))
        .build();
    let (closed, refused) = closed_port();
    let url = format!("http://{closed}/");
    let error = client.get(&url).send().await.expect_err("nothing listens");
    assert_eq!(
        links(&error),
        [
            "request failed after 3 attempts (no attempts left)".to_owned(),
            "the rest of the middleware chain failed".to_owned(),
            format!("error sending request for url ({url})"),
            "client error (Connect)".to_owned(),
            "tcp connect error".to_owned(),
            refused,
        ]
    );
    assert_each_cause_once(error);
}
