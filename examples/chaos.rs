//! A seeded chaos upstream: a hyper server on loopback that answers each request with a fault
//! drawn from a fixed mix, the same faults for the same request numbers on every run.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What the chaos upstream does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// A 200 with a 512-byte body.
    None,
    /// A 503 without hints, as part of a burst: every request in a block of 16 consecutive
    /// request numbers gets one.
    ServerErrorBurst,
    /// A 429 with `Retry-After: 1` and a matching `RateLimit` header.
    Throttled,
    /// A 429 whose `Retry-After` is absurd: negative, overflowing, a century, a past or
    /// far-future date, empty, or not text.
    AbsurdRetryAfter,
    /// A 200 whose rate-limit headers are garbage.
    GarbageHeaders,
    /// A 200 sent only after the upstream's slow delay (set it above the attempt timeout).
    Slow,
    /// The connection is reset (TCP RST) before any response is sent.
    ResetBeforeHeaders,
    /// A 200 whose connection is reset after the head and 100 of its 1,024 body bytes.
    ResetMidBody,
    /// A 200 that declares 1,024 bytes, sends 100 and ends; the server then drops the
    /// connection, which (as for every connection of this upstream) resets it.
    TruncatedBody,
}

impl Fault {
    /// Every fault, in the order of [`index`](Self::index).
    pub const ALL: [Fault; 9] = [
        Fault::None,
        Fault::ServerErrorBurst,
        Fault::Throttled,
        Fault::AbsurdRetryAfter,
        Fault::GarbageHeaders,
        Fault::Slow,
        Fault::ResetBeforeHeaders,
        Fault::ResetMidBody,
        Fault::TruncatedBody,
    ];

    /// This fault's position in [`ALL`](Self::ALL).
    pub const fn index(self) -> usize {
        match self {
            Fault::None => 0,
            Fault::ServerErrorBurst => 1,
            Fault::Throttled => 2,
            Fault::AbsurdRetryAfter => 3,
            Fault::GarbageHeaders => 4,
            Fault::Slow => 5,
            Fault::ResetBeforeHeaders => 6,
            Fault::ResetMidBody => 7,
            Fault::TruncatedBody => 8,
        }
    }

    /// A short stable name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::ServerErrorBurst => "server_error_burst",
            Fault::Throttled => "throttled",
            Fault::AbsurdRetryAfter => "absurd_retry_after",
            Fault::GarbageHeaders => "garbage_headers",
            Fault::Slow => "slow",
            Fault::ResetBeforeHeaders => "reset_before_headers",
            Fault::ResetMidBody => "reset_mid_body",
            Fault::TruncatedBody => "truncated_body",
        }
    }
}

/// How often each fault happens, in requests per 10,000 (bursts: in blocks per 10,000). The
/// per-request faults are drawn only outside bursts, so they come out slightly rarer than
/// their weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChaosMix {
    /// Blocks of 16 consecutive requests answered 503 throughout.
    pub server_error_bursts: u32,
    /// See [`Fault::Throttled`].
    pub throttled: u32,
    /// See [`Fault::AbsurdRetryAfter`].
    pub absurd_retry_after: u32,
    /// See [`Fault::GarbageHeaders`].
    pub garbage_headers: u32,
    /// See [`Fault::Slow`].
    pub slow: u32,
    /// See [`Fault::ResetBeforeHeaders`].
    pub reset_before_headers: u32,
    /// See [`Fault::ResetMidBody`].
    pub reset_mid_body: u32,
    /// See [`Fault::TruncatedBody`].
    pub truncated_body: u32,
    /// How long a [`Fault::Slow`] response takes.
    pub slow_for: Duration,
    /// The most any other response is held back: each waits a seeded share of it.
    pub latency: Duration,
}

impl Default for ChaosMix {
    /// 3 % of blocks in a 503 burst; 2 % throttled; 0.5 % absurd hints; 2 % garbage headers;
    /// 1 % slower than 10 s; 0.5 % each of the three ways a connection breaks.
    fn default() -> Self {
        Self {
            server_error_bursts: 300,
            throttled: 200,
            absurd_retry_after: 50,
            garbage_headers: 200,
            slow: 100,
            reset_before_headers: 50,
            reset_mid_body: 50,
            truncated_body: 50,
            slow_for: Duration::from_secs(10),
            latency: Duration::ZERO,
        }
    }
}

impl ChaosMix {
    /// The fault for request number `n` of a run seeded with `seed`.
    pub fn fault(&self, seed: u64, n: u64) -> Fault {
        const BLOCK: u64 = 16;
        if draw(seed, u64::MAX - n / BLOCK) % 10_000 < u64::from(self.server_error_bursts) {
            return Fault::ServerErrorBurst;
        }
        let mut roll = draw(seed, n) % 10_000;
        let weighted = [
            (Fault::Throttled, self.throttled),
            (Fault::AbsurdRetryAfter, self.absurd_retry_after),
            (Fault::GarbageHeaders, self.garbage_headers),
            (Fault::Slow, self.slow),
            (Fault::ResetBeforeHeaders, self.reset_before_headers),
            (Fault::ResetMidBody, self.reset_mid_body),
            (Fault::TruncatedBody, self.truncated_body),
        ];
        for (fault, weight) in weighted {
            let weight = u64::from(weight);
            if roll < weight {
                return fault;
            }
            roll -= weight;
        }
        Fault::None
    }
}

/// SplitMix64 of `seed` and `n`: a reproducible draw per request (or per anything numbered).
pub fn draw(seed: u64, n: u64) -> u64 {
    let mut z = (seed ^ n.rotate_left(17))
        .wrapping_add(n)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `Retry-After` values no server should send, each of which one does.
const ABSURD_RETRY_AFTER: [&[u8]; 8] = [
    b"-1",
    b"99999999999999999999999",
    b"3155760000",
    b"Fri, 31 Dec 9999 23:59:59 GMT",
    b"Wed, 21 Oct 2015 07:28:00 GMT",
    b"",
    b"1e3",
    b"\xff\xfe",
];

/// Rate-limit headers that parse as nothing sensible.
const GARBAGE_HEADERS: [(&str, &[u8]); 6] = [
    ("ratelimit", b";;;r=-1;t=abc, \"\";r"),
    ("ratelimit-policy", b"\"x\";q=0;w=0"),
    ("x-ratelimit-remaining", b"-7"),
    ("x-ratelimit-reset", b"18446744073709551616"),
    ("ratelimit-reset", b"1e400"),
    ("retry-after", b"soon"),
];

/// Why the chaos upstream broke a connection.
#[derive(Debug)]
pub struct Broken(Fault);

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the chaos upstream broke the connection ({})",
            self.0.as_str()
        )
    }
}

impl std::error::Error for Broken {}

/// The chaos upstream's response body: whole, or cut short with or without an error.
#[derive(Debug)]
pub struct ChaosBody {
    chunk: Option<Bytes>,
    declared: u64,
    /// For a cut body: a pause after the first chunk, so the head and that chunk are on the
    /// wire before the cut (hyper would otherwise drop them unsent with the connection).
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
    then: Option<Broken>,
}

impl ChaosBody {
    fn whole(bytes: Bytes) -> Self {
        Self {
            declared: bytes.len() as u64,
            chunk: Some(bytes),
            pause: None,
            then: None,
        }
    }

    fn cut(fault: Fault, error: bool) -> Self {
        Self {
            chunk: Some(Bytes::from_static(&[b'x'; 100])),
            declared: 1_024,
            pause: Some(Box::pin(tokio::time::sleep(Duration::from_millis(1)))),
            then: error.then_some(Broken(fault)),
        }
    }
}

impl Body for ChaosBody {
    type Data = Bytes;
    type Error = Broken;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Broken>>> {
        if let Some(chunk) = self.chunk.take() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if let Some(pause) = self.pause.as_mut() {
            if pause.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.pause = None;
        }
        Poll::Ready(self.then.take().map(Err))
    }

    fn size_hint(&self) -> SizeHint {
        // The declared length goes out as `Content-Length`, whatever is actually sent.
        SizeHint::with_exact(self.declared)
    }
}

struct Shared {
    seed: u64,
    mix: ChaosMix,
    next: AtomicU64,
    healthy: AtomicBool,
    served: [AtomicU64; Fault::ALL.len()],
}

/// A seeded chaos upstream on a free loopback port, stopped when dropped (its listener and
/// every open connection).
pub struct ChaosUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl fmt::Debug for ChaosUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChaosUpstream")
            .field("addr", &self.addr)
            .field("seed", &self.shared.seed)
            .finish_non_exhaustive()
    }
}

impl ChaosUpstream {
    /// Serves HTTP/1 on `127.0.0.1` at a free port, faults drawn from `mix` with `seed`.
    pub async fn start(seed: u64, mix: ChaosMix) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            seed,
            mix,
            next: AtomicU64::new(0),
            healthy: AtomicBool::new(false),
            served: Default::default(),
        });
        let server = Arc::clone(&shared);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        // Out of descriptors, say: wait rather than spin.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                // Closing with a zero linger sends a reset, not an orderly end: the faults
                // that break a connection break it the way a crashed server or a middlebox
                // does.
                let _ = stream.set_zero_linger();
                let shared = Arc::clone(&server);
                let mut stopped = stopped.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_request: Request<Incoming>| {
                        answer(Arc::clone(&shared))
                    });
                    let connection = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service);
                    // The faults break connections on purpose; a stopped upstream drops its own.
                    tokio::select! {
                        _ = connection => {}
                        _ = stopped.changed() => {}
                    }
                });
            }
        });
        Ok(Self {
            addr,
            shared,
            task,
            stop,
        })
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// From now on, answer every request at once with a plain 200 (`true`), or with the mix
    /// (`false`, the start).
    pub fn set_healthy(&self, healthy: bool) {
        self.shared.healthy.store(healthy, Ordering::Relaxed);
    }

    /// Requests that received `fault` so far.
    pub fn served(&self, fault: Fault) -> u64 {
        self.shared.served[fault.index()].load(Ordering::Relaxed)
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.shared.next.load(Ordering::Relaxed)
    }
}

impl Drop for ChaosUpstream {
    fn drop(&mut self) {
        self.task.abort();
        let _ = self.stop.send(true);
    }
}

async fn answer(shared: Arc<Shared>) -> Result<Response<ChaosBody>, Broken> {
    let n = shared.next.fetch_add(1, Ordering::Relaxed);
    let fault = if shared.healthy.load(Ordering::Relaxed) {
        Fault::None
    } else {
        let share = (draw(!shared.seed, n) % 1_000) as f64 / 1_000.0;
        let latency = shared.mix.latency.mul_f64(share);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        shared.mix.fault(shared.seed, n)
    };
    shared.served[fault.index()].fetch_add(1, Ordering::Relaxed);
    let ok = || ChaosBody::whole(Bytes::from_static(&[b'.'; 512]));
    let response = match fault {
        Fault::None => respond(StatusCode::OK, &[], ok()),
        Fault::ServerErrorBurst => respond(StatusCode::SERVICE_UNAVAILABLE, &[], ok()),
        Fault::Throttled => respond(
            StatusCode::TOO_MANY_REQUESTS,
            &[("retry-after", b"1"), ("ratelimit", b"\"default\";r=0;t=1")],
            ok(),
        ),
        Fault::AbsurdRetryAfter => {
            let index = usize::try_from(n % ABSURD_RETRY_AFTER.len() as u64).unwrap_or(0);
            let value = ABSURD_RETRY_AFTER[index];
            respond(
                StatusCode::TOO_MANY_REQUESTS,
                &[("retry-after", value)],
                ok(),
            )
        }
        Fault::GarbageHeaders => respond(StatusCode::OK, &GARBAGE_HEADERS, ok()),
        Fault::Slow => {
            tokio::time::sleep(shared.mix.slow_for).await;
            respond(StatusCode::OK, &[], ok())
        }
        // Returning an error makes hyper close the connection unanswered.
        Fault::ResetBeforeHeaders => return Err(Broken(fault)),
        Fault::ResetMidBody => respond(StatusCode::OK, &[], ChaosBody::cut(fault, true)),
        Fault::TruncatedBody => respond(StatusCode::OK, &[], ChaosBody::cut(fault, false)),
    };
    Ok(response)
}

fn respond(status: StatusCode, headers: &[(&str, &[u8])], body: ChaosBody) -> Response<ChaosBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}
