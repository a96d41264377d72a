//! A scripted upstream: each request's body says how the upstream answers it.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    reason = "test fixtures: a broken fixture must fail the test loudly"
)]

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use seawall_circuit_breaker::{BreakerError, CircuitBreakerLayer, Reason, State, Transition};
use seawall_core::{HostKey, KeyExtractor};
use tower::{BoxError, Service, ServiceExt, service_fn};

/// How the simulated upstream answers one request.
#[derive(Debug, Clone)]
pub enum Script {
    /// Answer with this status at once.
    Status(u16),
    /// Answer with this status and these headers.
    WithHeaders(u16, Vec<(&'static str, &'static str)>),
    /// Fail with an io error of this kind.
    Error(io::ErrorKind),
    /// Answer with this status after a delay.
    After(Duration, u16),
    /// Never answer.
    Hang,
}

pub type Upstream = tower::util::BoxCloneSyncService<Request<Script>, Response<()>, io::Error>;

pub fn upstream() -> Upstream {
    tower::util::BoxCloneSyncService::new(service_fn(|request: Request<Script>| {
        let answer: Pin<Box<dyn Future<Output = Result<Response<()>, io::Error>> + Send>> =
            Box::pin(async move {
                let status = |code: u16| Response::builder().status(code).body(()).unwrap();
                match request.into_body() {
                    Script::Status(code) => Ok(status(code)),
                    Script::WithHeaders(code, headers) => {
                        let mut response = status(code);
                        for (name, value) in headers {
                            response.headers_mut().insert(name, value.parse().unwrap());
                        }
                        Ok(response)
                    }
                    Script::Error(kind) => Err(io::Error::from(kind)),
                    Script::After(delay, code) => {
                        tokio::time::sleep(delay).await;
                        Ok(status(code))
                    }
                    Script::Hang => std::future::pending().await,
                }
            });
        answer
    }))
}

pub fn request(script: Script) -> Request<Script> {
    Request::builder()
        .uri("http://a.example/")
        .body(script)
        .unwrap()
}

pub fn request_to(host: &str, script: Script) -> Request<Script> {
    Request::builder()
        .uri(format!("http://{host}/"))
        .body(script)
        .unwrap()
}

/// Transitions seen by a listener, as (from, to, reason).
pub type Events = Arc<Mutex<Vec<(State, State, Reason)>>>;

pub fn recorder() -> (Events, impl Fn(&Transition<'_>) + Send + Sync + 'static) {
    let events: Events = Arc::default();
    let sink = Arc::clone(&events);
    (events, move |t: &Transition<'_>| {
        sink.lock().unwrap().push((t.from, t.to, t.reason));
    })
}

pub fn take(events: &Events) -> Vec<(State, State, Reason)> {
    std::mem::take(&mut *events.lock().unwrap())
}

/// Sends one request through `service` and returns the status or the error.
pub async fn send<S>(service: &S, script: Script) -> Result<u16, BreakerError<io::Error>>
where
    S: Service<Request<Script>, Response = Response<()>, Error = BreakerError<io::Error>> + Clone,
{
    service
        .clone()
        .oneshot(request(script))
        .await
        .map(|response| response.status().as_u16())
}

pub fn host(name: &str) -> HostKey {
    let request = Request::builder()
        .uri(format!("http://{name}/"))
        .body(())
        .unwrap();
    seawall_core::ByHost.extract_from(&request)
}

pub fn layer_error(error: BoxError) -> String {
    error.to_string()
}

pub fn single() -> seawall_circuit_breaker::CircuitBreakerBuilder {
    CircuitBreakerLayer::builder().jitter_seed(1)
}
