//! The store: one Lua script call per admission, a lease pool per key, the failure policy.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use seawall_core::ConfigError;
use seawall_rate_limit::gcra::GcraCells;
use seawall_rate_limit::{Decision, InMemoryStore, Quota, RateStore, StoreError};
use tokio::time::Instant;

use crate::builder::{Clock, FailurePolicy, RedisStoreBuilder};
use crate::lease::LeasePool;
use crate::stats::Counters;

/// A [`RateStore`] that keeps quota state in Redis, so every process using the same Redis
/// and key prefix shares one quota. Clones share one connection and one set of figures.
///
/// Each admission is one `EVALSHA` of a GCRA script (reloaded by `SCRIPT LOAD` when Redis
/// answers `NOSCRIPT`, after a restart or a `SCRIPT FLUSH`), over one multiplexed
/// connection that is remade after failures.
#[derive(Clone)]
pub struct RedisStore {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("RedisStore")
            .field("prefix", &inner.prefix)
            .field("timeout", &inner.timeout)
            .field("policy", &inner.policy)
            .field("clock", &inner.clock)
            .field("lease", &inner.lease)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    connection: ConnectionManager,
    script: Script,
    prefix: String,
    timeout: Duration,
    recheck_after: Duration,
    policy: FailurePolicy,
    clock: Clock,
    lease: Option<u32>,
    origin: Instant,
    origin_epoch_micros: u64,
    /// Until when (nanoseconds since `origin`) the failure policy answers without asking
    /// Redis; 0 while Redis answers.
    down_until: AtomicU64,
    fallback: InMemoryStore,
    pub(crate) counters: Counters,
}

/// The per-key state of a [`RedisStore`]: the Redis key's name, the tokens leased for it,
/// and the local limiter of the fallback policy.
#[derive(Debug, Clone)]
pub struct RedisSlot {
    shared: Arc<SlotState>,
}

#[derive(Debug)]
struct SlotState {
    /// A string key, for a limiter with one quota.
    key: String,
    /// A hash key, for a limiter with several; a different name, so that changing the
    /// number of quotas never meets a key of the other type.
    multi_key: String,
    lease: LeasePool,
    fallback: OnceLock<GcraCells>,
}

impl RedisSlot {
    /// The name of the Redis key holding this limiter key's quota state (with several quotas,
    /// this name followed by `:quotas`).
    pub fn redis_key(&self) -> &str {
        &self.shared.key
    }
}

impl RedisStore {
    /// Starts building a store for the Redis at `url` (`redis://host:port/db`, with
    /// `redis://user:password@…` for ACLs).
    pub fn builder(url: &str) -> RedisStoreBuilder {
        RedisStoreBuilder::new(url)
    }

    pub(crate) fn connect(config: RedisStoreBuilder) -> Result<Self, ConfigError> {
        let client = redis::Client::open(config.url.as_str())
            .map_err(|_| ConfigError::new("url", &config.url, "a redis:// URL"))?;
        let connection_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(config.recheck_after);
        let connection = ConnectionManager::new_lazy_with_config(client, connection_config)
            .map_err(|error| ConfigError::new("url", error.to_string(), "a usable Redis client"))?;
        let origin_epoch_micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
            });
        Ok(Self {
            inner: Arc::new(Inner {
                connection,
                script: Script::new(include_str!("gcra.lua")),
                prefix: config.prefix,
                timeout: config.timeout,
                recheck_after: config.recheck_after,
                policy: config.policy,
                clock: config.clock,
                lease: config.lease,
                origin: Instant::now(),
                origin_epoch_micros,
                down_until: AtomicU64::new(0),
                fallback: InMemoryStore::new(0),
                counters: Counters::default(),
            }),
        })
    }
}

impl Inner {
    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    fn millis(&self, at: Instant) -> u64 {
        self.nanos(at) / 1_000_000
    }

    /// `at` as microseconds since the Unix epoch, to the nanosecond, for [`Clock::Local`].
    fn epoch_micros(&self, at: Instant) -> String {
        let nanos = u128::from(self.origin_epoch_micros) * 1_000 + u128::from(self.nanos(at));
        micros(nanos)
    }

    fn is_down(&self, now: Instant) -> bool {
        let until = self.down_until.load(Ordering::Relaxed);
        until != 0 && self.nanos(now) < until
    }

    fn failed(&self, now: Instant, error: &StoreError) {
        let until = self.nanos(now + self.recheck_after).max(1);
        if self.down_until.swap(until, Ordering::Relaxed) == 0 {
            self.counters.outages.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%error, policy = ?self.policy, "rate-limit store unavailable");
        }
    }

    fn answered(&self) {
        if self.down_until.load(Ordering::Relaxed) != 0
            && self.down_until.swap(0, Ordering::Relaxed) != 0
        {
            tracing::info!("rate-limit store answering again");
        }
    }

    /// The failure policy's answer when Redis cannot be asked.
    fn unavailable(
        &self,
        slot: &SlotState,
        quotas: &[Quota],
        cost: u32,
        now: Instant,
        error: StoreError,
    ) -> Result<Decision, StoreError> {
        let counters = &self.counters;
        match self.policy {
            FailurePolicy::FailClosed => {
                counters.closed_refused.fetch_add(1, Ordering::Relaxed);
                Err(error)
            }
            FailurePolicy::FailOpen => {
                counters.open_admitted.fetch_add(1, Ordering::Relaxed);
                Ok(Decision::Admitted)
            }
            FailurePolicy::FallBack { share } => {
                let cells = slot.fallback.get_or_init(|| GcraCells::new(quotas.len()));
                // Only while Redis is down, so the copy is not on the steady path.
                let shares: Vec<Quota> = quotas
                    .iter()
                    .map(|quota| quota.share(share).unwrap_or(*quota))
                    .collect();
                let decision = self.fallback.decide(cells, &shares, cost, now);
                let counter = match decision {
                    Decision::Admitted => &counters.fallback_admitted,
                    _ => &counters.fallback_refused,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                Ok(decision)
            }
        }
    }
}

/// Nanoseconds as a decimal count of microseconds, exactly (`1500` → `1.500`).
fn micros(nanos: u128) -> String {
    format!("{}.{:03}", nanos / 1_000, nanos % 1_000)
}

/// The shortest time leased tokens stay spendable.
const MIN_LEASE_LIFETIME: Duration = Duration::from_secs(1);

/// One round trip to Redis, with everything it needs owned.
struct RemoteCall {
    inner: Arc<Inner>,
    slot: Arc<SlotState>,
    quotas: Vec<Quota>,
    now: Instant,
    cost: u32,
    want: u32,
}

impl RemoteCall {
    async fn run(self) -> Result<Decision, StoreError> {
        let inner = &*self.inner;
        inner.counters.remote_calls.fetch_add(1, Ordering::Relaxed);
        let mut invocation = inner.script.prepare_invoke();
        invocation.key(match self.quotas.len() {
            1 => &self.slot.key,
            _ => &self.slot.multi_key,
        });
        match inner.clock {
            Clock::Server => invocation.arg(""),
            Clock::Local => invocation.arg(inner.epoch_micros(self.now)),
        };
        invocation.arg(self.cost).arg(self.want);
        for quota in &self.quotas {
            let interval = u128::from(quota.interval_nanos());
            invocation
                .arg(micros(interval))
                .arg(micros(interval * u128::from(quota.burst_size())));
        }
        let mut connection = inner.connection.clone();
        let call = invocation.invoke_async::<(u32, u64)>(&mut connection);
        let answer = tokio::time::timeout(inner.timeout, call).await;
        let now = Instant::now();
        let error = match answer {
            Ok(Ok((granted, wait_micros))) => {
                inner.answered();
                return Ok(self.decide(granted, wait_micros));
            }
            Ok(Err(error)) => {
                inner.counters.errors.fetch_add(1, Ordering::Relaxed);
                StoreError::new(format!("Redis: {error}"))
            }
            Err(_) => {
                inner.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                StoreError::new(format!("Redis did not answer within {:?}", inner.timeout))
            }
        };
        inner.failed(now, &error);
        inner.unavailable(&self.slot, &self.quotas, self.cost, now, error)
    }

    fn decide(&self, granted: u32, wait_micros: u64) -> Decision {
        let counters = &self.inner.counters;
        if granted < self.cost {
            counters.remote_waits.fetch_add(1, Ordering::Relaxed);
            return Decision::Wait(Duration::from_micros(wait_micros.max(1)));
        }
        counters.remote_admitted.fetch_add(1, Ordering::Relaxed);
        let surplus = granted - self.cost;
        if let (Some(lease), true) = (self.inner.lease, surplus > 0) {
            // A lease lapses after the time the slowest quota takes to earn it (a second at
            // least), counted from the request's instant. Lapsing keeps a process from
            // spending tokens leased long ago; the over-admission bound holds either way.
            let slowest = self.quotas.iter().map(Quota::interval).max();
            let lifetime = slowest
                .unwrap_or_default()
                .saturating_mul(lease)
                .max(MIN_LEASE_LIFETIME);
            let now_ms = self.inner.millis(self.now);
            let expiry_ms = now_ms
                + u64::try_from(lifetime.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1);
            let dropped = self.slot.lease.add(surplus, now_ms, expiry_ms, lease);
            counters
                .leased
                .fetch_add(u64::from(surplus), Ordering::Relaxed);
            counters
                .lease_dropped
                .fetch_add(u64::from(dropped), Ordering::Relaxed);
        }
        Decision::Admitted
    }
}

type Remote = Pin<Box<dyn Future<Output = Result<Decision, StoreError>> + Send>>;

/// The answer to one admission attempt: at once (a leased token, the failure policy while
/// Redis is down, an oversize request) or after a round trip.
pub struct AcquireFuture {
    state: AcquireState,
}

enum AcquireState {
    Ready(Option<Result<Decision, StoreError>>),
    // The redis client's calls are boxed futures borrowing the connection; owning one here
    // means boxing the call, once per round trip.
    Remote(Remote),
}

impl AcquireFuture {
    fn ready(result: Result<Decision, StoreError>) -> Self {
        Self {
            state: AcquireState::Ready(Some(result)),
        }
    }
}

impl fmt::Debug for AcquireFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            AcquireState::Ready(_) => "ready",
            AcquireState::Remote(_) => "remote",
        };
        f.debug_struct("AcquireFuture")
            .field("state", &state)
            .finish()
    }
}

impl Future for AcquireFuture {
    type Output = Result<Decision, StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            AcquireState::Ready(result) => Poll::Ready(
                result
                    .take()
                    .unwrap_or_else(|| Err(StoreError::new("admission polled after it ended"))),
            ),
            AcquireState::Remote(call) => call.as_mut().poll(cx),
        }
    }
}

impl RateStore for RedisStore {
    type Slot = RedisSlot;
    type Future = AcquireFuture;

    fn new_slot(&self, key: &dyn fmt::Debug) -> RedisSlot {
        // A brace inside the name would end the hash tag early and scatter the key's state.
        let name: String = format!("{key:?}")
            .chars()
            .map(|c| match c {
                '{' => '(',
                '}' => ')',
                c => c,
            })
            .collect();
        let key = format!("{}:{{{name}}}", self.inner.prefix);
        RedisSlot {
            shared: Arc::new(SlotState {
                multi_key: format!("{key}:quotas"),
                key,
                lease: LeasePool::default(),
                fallback: OnceLock::new(),
            }),
        }
    }

    fn acquire(
        &self,
        slot: &RedisSlot,
        quotas: &[Quota],
        cost: u32,
        now: Instant,
    ) -> AcquireFuture {
        let inner = &self.inner;
        let smallest_burst = quotas
            .iter()
            .map(Quota::burst_size)
            .min()
            .unwrap_or(u32::MAX);
        if cost > smallest_burst {
            return AcquireFuture::ready(Ok(Decision::Oversize));
        }
        if inner.lease.is_some() && slot.shared.lease.take(cost, inner.millis(now)) {
            inner
                .counters
                .lease_admitted
                .fetch_add(1, Ordering::Relaxed);
            return AcquireFuture::ready(Ok(Decision::Admitted));
        }
        if inner.is_down(now) {
            inner.counters.skipped.fetch_add(1, Ordering::Relaxed);
            let error = StoreError::new("Redis failed a moment ago; asking again shortly");
            return AcquireFuture::ready(inner.unavailable(&slot.shared, quotas, cost, now, error));
        }
        let want = inner
            .lease
            .map_or(cost, |lease| lease.min(smallest_burst).max(cost));
        let call = RemoteCall {
            inner: Arc::clone(inner),
            slot: Arc::clone(&slot.shared),
            quotas: quotas.to_vec(),
            now,
            cost,
            want,
        };
        AcquireFuture {
            state: AcquireState::Remote(Box::pin(call.run())),
        }
    }

    fn peek(
        &self,
        slot: &RedisSlot,
        _quotas: &[Quota],
        cost: u32,
        now: Instant,
    ) -> Option<Duration> {
        // Leased tokens admit at once; anything else takes a round trip to know.
        (slot.shared.lease.available(self.inner.millis(now)) >= cost).then_some(Duration::ZERO)
    }

    fn is_idle(&self, slot: &RedisSlot) -> bool {
        let now = Instant::now();
        slot.shared.lease.available(self.inner.millis(now)) == 0
            && slot
                .shared
                .fallback
                .get()
                .is_none_or(|cells| self.inner.fallback.is_idle(cells))
    }
}

impl RedisStore {
    pub(crate) fn is_unavailable(&self) -> bool {
        self.inner.is_down(Instant::now())
    }
}
