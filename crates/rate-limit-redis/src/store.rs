//! The store: one Lua script call per batch of a key's admissions, a lease pool per key, the
//! failure policy.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::Script;
use seawall_core::ConfigError;
use seawall_rate_limit::gcra::GcraCells;
use seawall_rate_limit::{Decision, InMemoryStore, Quota, RateStore, Refund, StoreError};
use tokio::time::Instant;

use tokio::sync::oneshot;

use crate::batch::{self, Answer, Queue, Waiting};
use crate::builder::{Clock, FailurePolicy, RedisStoreBuilder};
use crate::connection::{CallError, Connection};
use crate::lease::LeasePool;
use crate::stats::Counters;

/// A [`RateStore`] that keeps quota state in Redis, so every process using the same Redis
/// and key prefix shares one quota. Clones share one connection and one set of figures.
///
/// Each admission travels in one `EVALSHA` of a GCRA script (reloaded by `SCRIPT LOAD` when
/// Redis answers `NOSCRIPT`, after a restart or a `SCRIPT FLUSH`), together with the same
/// key's admissions that queued while the key's previous call was out, over one multiplexed
/// connection that is remade after failures (on a Redis Cluster, one per node, to the master
/// serving the key's slot).
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
    connection: Connection,
    script: Script,
    settle_script: Script,
    prefix: String,
    timeout: Duration,
    recheck_after: Duration,
    policy: FailurePolicy,
    clock: Clock,
    lease: Option<u32>,
    max_pending: usize,
    origin: Instant,
    origin_epoch_micros: u64,
    /// On one node, until when (nanoseconds since `origin`) the failure policy answers every
    /// key without asking Redis, 0 while Redis answers. On a Cluster, where each key keeps its
    /// own, the end of the pause after the latest failure of any key (for the figures).
    down_until: AtomicU64,
    /// Whether each key is put into the failure policy on its own (on a Cluster, where one
    /// node's loss concerns only the keys it serves) rather than the whole store.
    per_key: bool,
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
pub(crate) struct SlotState {
    /// A string key, for a limiter with one quota.
    key: String,
    /// A hash key, for a limiter with several; a different name, so that changing the
    /// number of quotas never meets a key of the other type.
    multi_key: String,
    lease: LeasePool,
    fallback: OnceLock<GcraCells>,
    /// The quotas of the key's first admission: those its limiter asks for every time.
    quotas: OnceLock<Box<[Quota]>>,
    /// Admissions waiting for the key's next call.
    pub(crate) queue: Queue,
    /// Admissions whose callers wait for a call's answer (queued or in the call that is out):
    /// one for each [`AcquireFuture`] not yet answered nor dropped.
    pending: AtomicUsize,
    /// On a Cluster, until when (nanoseconds since the store's origin) the failure policy
    /// answers this key without asking Redis; 0 while Redis answers.
    down_until: AtomicU64,
}

impl SlotState {
    fn quotas(&self) -> &[Quota] {
        self.quotas.get().map_or(&[], |quotas| quotas)
    }
}

impl RedisSlot {
    /// The name of the Redis key holding this limiter key's quota state (with several quotas,
    /// this name followed by `:quotas`): `<prefix>:{<hash>}`, the hash being 32 hex digits of
    /// the SHA-256 of the limiter key's `Debug` rendering.
    pub fn redis_key(&self) -> &str {
        &self.shared.key
    }

    /// How many admissions of this key wait in the store's queue for their call to Redis
    /// (not counting those in the call that is out).
    pub fn queued(&self) -> usize {
        self.shared.queue.len()
    }
}

impl RedisStore {
    /// Starts building a store for the Redis at `url` (`redis://host:port/db`, with
    /// `redis://user:password@…` for ACLs).
    pub fn builder(url: &str) -> RedisStoreBuilder {
        RedisStoreBuilder::new(url)
    }

    /// Starts building a store on a Redis Cluster, given the URLs of one or more of its nodes
    /// (`redis://host:port`; more than one, so that the store can find the cluster while one of
    /// them is down). The redis crate's cluster client finds the rest, routes each key's
    /// calls to the node serving its slot, and follows `MOVED` and `ASK` as slots move or a
    /// replica takes over. A key that cannot be reached puts only that key into the failure
    /// policy.
    pub fn cluster_builder<I>(nodes: I) -> RedisStoreBuilder
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        RedisStoreBuilder::new_cluster(nodes)
    }

    pub(crate) fn connect(config: RedisStoreBuilder) -> Result<Self, ConfigError> {
        let connection = Connection::open(&config)?;
        let per_key = connection.is_cluster();
        let origin_epoch_micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
            });
        Ok(Self {
            inner: Arc::new(Inner {
                connection,
                script: Script::new(include_str!("gcra.lua")),
                settle_script: Script::new(include_str!("settle.lua")),
                prefix: config.prefix,
                timeout: config.timeout,
                recheck_after: config.recheck_after,
                policy: config.policy,
                clock: config.clock,
                lease: config.lease,
                max_pending: config.max_pending,
                origin: Instant::now(),
                origin_epoch_micros,
                down_until: AtomicU64::new(0),
                per_key,
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

    /// Where `slot`'s pause after a failure is kept: its own on a Cluster, the store's on one
    /// node.
    fn down_until<'a>(&'a self, slot: &'a SlotState) -> &'a AtomicU64 {
        if self.per_key {
            &slot.down_until
        } else {
            &self.down_until
        }
    }

    /// Whether the failure policy answers for `slot` at `now` without asking Redis.
    fn is_down(&self, slot: &SlotState, now: Instant) -> bool {
        until_after(self.down_until(slot), self.nanos(now))
    }

    /// Whether some key (on one node, every key) is in the pause after a failure at `now`.
    fn is_any_down(&self, now: Instant) -> bool {
        until_after(&self.down_until, self.nanos(now))
    }

    fn failed(&self, slot: &SlotState, now: Instant, error: &StoreError) {
        let until = self.nanos(now + self.recheck_after).max(1);
        let any_was_down = self.per_key && self.is_any_down(now);
        let key_was_down = self.down_until(slot).swap(until, Ordering::Relaxed) != 0;
        if self.per_key {
            self.down_until.fetch_max(until, Ordering::Relaxed);
        }
        if !key_was_down {
            self.counters.outages.fetch_add(1, Ordering::Relaxed);
            // On a Cluster, said once for the keys that fail together, not for each.
            if !any_was_down {
                tracing::warn!(%error, policy = ?self.policy, "rate-limit store unavailable");
            }
        }
    }

    fn answered(&self, slot: &SlotState) {
        let down_until = self.down_until(slot);
        if down_until.load(Ordering::Relaxed) != 0
            && down_until.swap(0, Ordering::Relaxed) != 0
            && !self.per_key
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

/// The Redis key of a limiter key: `<prefix>:{<hash>}`, where the hash is the first 128 bits of
/// the SHA-256 of the key's `Debug` rendering, in hex. A hash rather than the rendering
/// itself: distinct renderings never share a name (no character needs replacing to keep the
/// hash tag whole), a key carrying a secret is never spelled out in Redis, and the name
/// depends on nothing but the rendering, so every version names a key alike.
fn key_name(prefix: &str, key: &dyn fmt::Debug) -> String {
    use fmt::Write as _;
    use sha2::{Digest, Sha256};

    /// Feeds the rendering to the hash as it is written, without a string in between.
    struct Hashing(Sha256);
    impl fmt::Write for Hashing {
        fn write_str(&mut self, text: &str) -> fmt::Result {
            self.0.update(text.as_bytes());
            Ok(())
        }
    }

    let mut hashing = Hashing(Sha256::new());
    // Writing to a hash cannot fail, nor can writing to a string.
    let _ = write!(hashing, "{key:?}");
    let digest = hashing.0.finalize();
    let mut name = String::with_capacity(prefix.len() + 35);
    name.push_str(prefix);
    name.push_str(":{");
    for byte in &digest[..16] {
        let _ = write!(name, "{byte:02x}");
    }
    name.push('}');
    name
}

/// Whether the instant in `until` (0 for none) is later than `now`.
fn until_after(until: &AtomicU64, now: u64) -> bool {
    let until = until.load(Ordering::Relaxed);
    until != 0 && now < until
}

/// The error the failure policy answers for while Redis is left alone after a failure.
fn recently_failed() -> StoreError {
    StoreError::new("Redis failed a moment ago; asking again shortly")
}

/// Nanoseconds as a decimal count of microseconds, exactly (`1500` → `1.500`).
fn micros(nanos: u128) -> String {
    format!("{}.{:03}", nanos / 1_000, nanos % 1_000)
}

/// The shortest interval between admissions the script keeps exactly enough (16 µs, 62,500
/// a second): see [`RedisStore`]'s `check_quotas`.
const MIN_INTERVAL_NANOS: u64 = 16_000;

/// The shortest time leased tokens stay spendable.
const MIN_LEASE_LIFETIME: Duration = Duration::from_secs(1);

impl Inner {
    /// The failure policy's answer for one queued admission.
    fn unavailable_for(
        &self,
        slot: &SlotState,
        waiting: &Waiting,
        error: StoreError,
    ) -> Result<Decision, StoreError> {
        let quotas = waiting.quotas.as_deref().unwrap_or_else(|| slot.quotas());
        self.unavailable(slot, quotas, waiting.cost, waiting.now, error)
    }

    /// Answers each of `waiting` (refills need no answer) by the failure policy, for
    /// `error`; returns how many it answered.
    pub(crate) fn answer_unavailable(
        &self,
        slot: &SlotState,
        waiting: impl IntoIterator<Item = Waiting>,
        error: &StoreError,
    ) -> u64 {
        let mut answered = 0;
        for waiting in waiting.into_iter().filter(|waiting| !waiting.is_refill()) {
            let answer = self.unavailable_for(slot, &waiting, error.clone());
            waiting.reply(answer);
            answered += 1;
        }
        answered
    }

    /// Answers every admission of `batch` (all asking for the same quotas), with one round
    /// trip for those that leased tokens cannot admit; leaves `batch` empty.
    pub(crate) async fn send(&self, slot: &SlotState, batch: &mut Vec<Waiting>) {
        let now = Instant::now();
        // A caller that has gone before its call is sent takes nothing; leased tokens that
        // arrived with the previous call admit without asking.
        batch.retain(|waiting| !waiting.is_abandoned());
        let mut leased = 0;
        if let Some(lease) = self.lease {
            let now_ms = self.millis(now);
            for waiting in batch.extract_if(.., |waiting| {
                !waiting.is_refill() && slot.lease.take(waiting.cost, now_ms)
            }) {
                self.counters.lease_admitted.fetch_add(1, Ordering::Relaxed);
                waiting.reply(Ok(Decision::Admitted));
            }
            leased = slot.lease.available(now_ms);
            // The pool is topped up by the batch's last admission, after every admission has
            // taken its own tokens; a refill goes alone only when nobody else goes, and not
            // at all when the pool was refilled since it was asked for.
            let refill = batch.iter().any(Waiting::is_refill);
            batch.retain(|waiting| !waiting.is_refill());
            if batch.is_empty() && refill && leased < lease / 2 {
                batch.push(Waiting::refill(now));
            }
        }
        if batch.is_empty() {
            return;
        }
        if self.is_down(slot, now) {
            let skipped = self.answer_unavailable(slot, batch.drain(..), &recently_failed());
            self.counters.skipped.fetch_add(skipped, Ordering::Relaxed);
            return;
        }
        // Every admission of the batch asks for the quotas of the first (a copy only when
        // they are not the key's usual ones, which a limiter never does).
        let own_quotas = batch.first().and_then(|first| first.quotas.clone());
        let quotas = own_quotas.as_deref().unwrap_or_else(|| slot.quotas());
        let smallest_burst = quotas
            .iter()
            .map(Quota::burst_size)
            .min()
            .unwrap_or(u32::MAX);
        self.counters.remote_calls.fetch_add(1, Ordering::Relaxed);
        let mut invocation = self.script.prepare_invoke();
        let key = match quotas.len() {
            1 => &slot.key,
            _ => &slot.multi_key,
        };
        invocation.key(key);
        match self.clock {
            Clock::Server => invocation.arg(""),
            // The earliest instant of the batch: an admission decided earlier than its own
            // instant may wait where it alone would not, but never goes where it would wait.
            Clock::Local => {
                let earliest = batch.iter().map(|waiting| waiting.now).min().unwrap_or(now);
                invocation.arg(self.epoch_micros(earliest))
            }
        };
        invocation.arg(batch.len());
        let last = batch.len() - 1;
        for (at, waiting) in batch.iter().enumerate() {
            // Only the last admission of a batch leases (after the others have taken their
            // own tokens), and only what brings the pool up to one lease: a process holds one
            // lease's worth at most, and the pool would drop any more.
            let want = match self.lease {
                Some(lease) if at == last => (lease - leased.min(lease))
                    .min(smallest_burst)
                    .max(waiting.cost),
                _ => waiting.cost,
            };
            invocation.arg(waiting.cost).arg(want);
        }
        for quota in quotas {
            if quota.is_window() {
                let period = u128::from(quota.window_nanos());
                invocation
                    .arg(format!("w{}", micros(period)))
                    .arg(quota.burst_size());
                continue;
            }
            let interval = u128::from(quota.interval_nanos());
            invocation
                .arg(micros(interval))
                .arg(micros(interval * u128::from(quota.burst_size())));
        }
        let answer = self
            .connection
            .invoke::<Vec<u64>>(key, &invocation, self.timeout)
            .await;
        let error = match answer {
            Ok(answers) if answers.len() == 2 * batch.len() => {
                self.answered(slot);
                self.counters.answered.fetch_add(1, Ordering::Relaxed);
                for (waiting, answer) in batch.drain(..).zip(answers.chunks_exact(2)) {
                    let decision = self.decide(slot, quotas, &waiting, answer[0], answer[1]);
                    waiting.reply(Ok(decision));
                }
                return;
            }
            Ok(answers) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                StoreError::new(format!(
                    "Redis answered {} numbers for {} admissions",
                    answers.len(),
                    batch.len()
                ))
            }
            Err(CallError::Redis(error)) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                StoreError::new(format!("Redis: {error}"))
            }
            Err(CallError::Timeout) => {
                self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                StoreError::new(format!("Redis did not answer within {:?}", self.timeout))
            }
        };
        let now = Instant::now();
        self.failed(slot, now, &error);
        for waiting in batch.drain(..).filter(|waiting| !waiting.is_refill()) {
            let answer = self.unavailable(slot, quotas, waiting.cost, now, error.clone());
            waiting.reply(answer);
        }
    }

    /// One admission's decision from the script's answer: `granted` tokens, or the
    /// microseconds to wait.
    fn decide(
        &self,
        slot: &SlotState,
        quotas: &[Quota],
        waiting: &Waiting,
        granted: u64,
        wait_micros: u64,
    ) -> Decision {
        let counters = &self.counters;
        let granted = u32::try_from(granted).unwrap_or(u32::MAX);
        if granted < waiting.cost || (waiting.is_refill() && granted == 0) {
            if !waiting.is_refill() {
                counters.remote_waits.fetch_add(1, Ordering::Relaxed);
            }
            return Decision::Wait(Duration::from_micros(wait_micros.max(1)));
        }
        if !waiting.is_refill() {
            counters.remote_admitted.fetch_add(1, Ordering::Relaxed);
        }
        let surplus = granted - waiting.cost;
        if let (Some(lease), true) = (self.lease, surplus > 0) {
            // A lease lapses after the time the slowest quota takes to earn it (a second at
            // least), counted from the request's instant. Lapsing keeps a process from
            // spending tokens leased long ago; the over-admission bound holds either way.
            let slowest = quotas.iter().map(Quota::interval).max();
            let lifetime = slowest
                .unwrap_or_default()
                .saturating_mul(lease)
                .max(MIN_LEASE_LIFETIME);
            let now_ms = self.millis(waiting.now);
            let expiry_ms = now_ms
                + u64::try_from(lifetime.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1);
            let dropped = slot.lease.add(surplus, now_ms, expiry_ms, lease);
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

/// The answer to one admission attempt: at once (a leased token, the failure policy while
/// Redis is down, an oversize request) or when its key's call returns.
pub struct AcquireFuture {
    state: AcquireState,
}

enum AcquireState {
    Ready(Option<Answer>),
    /// Out with the store; the slot's count of pending admissions includes it.
    Queued(oneshot::Receiver<Answer>, Arc<SlotState>),
}

impl AcquireFuture {
    fn ready(result: Answer) -> Self {
        Self {
            state: AcquireState::Ready(Some(result)),
        }
    }
}

impl fmt::Debug for AcquireFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            AcquireState::Ready(_) => "ready",
            AcquireState::Queued(..) => "queued",
        };
        f.debug_struct("AcquireFuture")
            .field("state", &state)
            .finish()
    }
}

impl Future for AcquireFuture {
    type Output = Answer;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            AcquireState::Ready(result) => {
                // An answer without a round trip still spends the task's budget, as tokio's
                // own resources do: a task admitting from leased tokens in a loop yields now
                // and then, and the key's refill gets out before the pool runs dry. (When the
                // budget is spent, the limiter's first look finds this pending and carries the
                // answer in its future instead: one extra poll, once per budget.)
                let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
                coop.made_progress();
                Poll::Ready(
                    result
                        .take()
                        .unwrap_or_else(|| Err(StoreError::new("admission polled after it ended"))),
                )
            }
            AcquireState::Queued(answer, _) => {
                let answer = std::task::ready!(Pin::new(answer).poll(cx)).unwrap_or_else(|_| {
                    Err(StoreError::new("the task sending this key's calls stopped"))
                });
                // No longer pending: `Drop` counts only a future still queued.
                if let AcquireState::Queued(_, slot) =
                    std::mem::replace(&mut self.state, AcquireState::Ready(None))
                {
                    slot.pending.fetch_sub(1, Ordering::Relaxed);
                }
                Poll::Ready(answer)
            }
        }
    }
}

impl Drop for AcquireFuture {
    fn drop(&mut self) {
        if let AcquireState::Queued(_, slot) = &self.state {
            slot.pending.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl RateStore for RedisStore {
    type Slot = RedisSlot;
    type Future = AcquireFuture;

    fn new_slot(&self, key: &dyn fmt::Debug) -> RedisSlot {
        let key = key_name(&self.inner.prefix, key);
        RedisSlot {
            shared: Arc::new(SlotState {
                multi_key: format!("{key}:quotas"),
                key,
                lease: LeasePool::default(),
                fallback: OnceLock::new(),
                quotas: OnceLock::new(),
                queue: Queue::default(),
                pending: AtomicUsize::new(0),
                down_until: AtomicU64::new(0),
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
        if let Some(lease) = inner.lease
            && let Some(left) = slot.shared.lease.take_counting(cost, inner.millis(now))
        {
            inner
                .counters
                .lease_admitted
                .fetch_add(1, Ordering::Relaxed);
            // The take that leaves the pool below half a lease asks for the next one, so
            // that a busy key's pool is topped up before it runs dry.
            let half = lease / 2;
            if left < half && left + cost >= half {
                // With the key's queue full, the refill is left to a later admission.
                let _ = self.enqueue(&slot.shared, Waiting::refill(now));
            }
            return AcquireFuture::ready(Ok(Decision::Admitted));
        }
        if inner.is_down(&slot.shared, now) {
            inner.counters.skipped.fetch_add(1, Ordering::Relaxed);
            let error = recently_failed();
            return AcquireFuture::ready(inner.unavailable(&slot.shared, quotas, cost, now, error));
        }
        let recorded = slot.shared.quotas.get_or_init(|| quotas.into());
        let (answer, receiver) = oneshot::channel();
        let waiting = Waiting {
            cost,
            now,
            quotas: (**recorded != *quotas).then(|| quotas.into()),
            answer: Some(answer),
        };
        if self.enqueue(&slot.shared, waiting).is_err() {
            inner.counters.queue_full.fetch_add(1, Ordering::Relaxed);
            let error = StoreError::new(format!(
                "{} admissions of this key already wait for Redis (`max_pending`)",
                inner.max_pending
            ));
            return AcquireFuture::ready(inner.unavailable(&slot.shared, quotas, cost, now, error));
        }
        slot.shared.pending.fetch_add(1, Ordering::Relaxed);
        AcquireFuture {
            state: AcquireState::Queued(receiver, Arc::clone(&slot.shared)),
        }
    }

    fn pending(&self, slot: &RedisSlot) -> usize {
        slot.shared.pending.load(Ordering::Relaxed)
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

    /// Sent in the background (see `send_settlement`).
    fn settle(&self, slot: &RedisSlot, quotas: &[Quota], delta: i64, now: Instant) {
        self.send_settlement(slot, quotas, delta.to_string(), now);
    }

    /// Gives back the fewest tokens every quota still holds of the request (as the default
    /// does), and tells the script how long ago the request was admitted, so that a window
    /// takes them off the request's own admission and older ones, never off later ones.
    fn refund(&self, slot: &RedisSlot, quotas: &[Quota], refund: Refund, now: Instant) {
        let held = refund.held_by_all(quotas, now);
        if held == 0 {
            return;
        }
        let age = now.saturating_duration_since(refund.admitted).as_micros();
        self.send_settlement(slot, quotas, format!("-{held}:{age}"), now);
    }

    /// The script keeps time in microseconds since 1970 as Lua numbers (doubles), which
    /// hold steps of a quarter of a microsecond there: an interval is off by up to an eighth
    /// of a microsecond per admission. Under 16 µs between admissions that error passes 1 %
    /// (at ten million a second the schedule would not move at all), so such a rate is
    /// refused rather than enforced wrongly; one key on one Redis node serves far fewer.
    fn check_quotas(&self, quotas: &[Quota]) -> Result<(), seawall_core::ConfigError> {
        for quota in quotas {
            if !quota.is_window() && quota.interval_nanos() < MIN_INTERVAL_NANOS {
                return Err(seawall_core::ConfigError::new(
                    "rate",
                    quota,
                    "at most 62,500 requests a second per key in the Redis store",
                ));
            }
        }
        Ok(())
    }

    fn is_idle(&self, slot: &RedisSlot) -> bool {
        let now = Instant::now();
        slot.shared.queue.is_quiet()
            && slot.shared.lease.available(self.inner.millis(now)) == 0
            && slot
                .shared
                .fallback
                .get()
                .is_none_or(|cells| self.inner.fallback.is_idle(cells))
    }
}

impl RedisStore {
    /// Sends `delta` (tokens to take, or `-tokens:age` to give back tokens of a request
    /// admitted `age` microseconds ago) to the settle script, in the background on the
    /// caller's runtime: a settlement changes what later admissions find, and nobody waits
    /// for its answer. One that fails is logged and counted among the errors.
    fn send_settlement(&self, slot: &RedisSlot, quotas: &[Quota], delta: String, now: Instant) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("a cost settled outside a tokio runtime was not sent to Redis");
            return;
        };
        let inner = Arc::clone(&self.inner);
        let key = match quotas.len() {
            1 => slot.shared.key.clone(),
            _ => slot.shared.multi_key.clone(),
        };
        let quotas: Box<[Quota]> = quotas.into();
        runtime.spawn(async move {
            let mut invocation = inner.settle_script.prepare_invoke();
            invocation.key(&key);
            match inner.clock {
                Clock::Server => invocation.arg(""),
                Clock::Local => invocation.arg(inner.epoch_micros(now)),
            };
            invocation.arg(delta);
            for quota in quotas.iter() {
                if quota.is_window() {
                    let period = u128::from(quota.window_nanos());
                    invocation
                        .arg(format!("w{}", micros(period)))
                        .arg(quota.burst_size());
                } else {
                    invocation
                        .arg(micros(u128::from(quota.interval_nanos())))
                        .arg(0);
                }
            }
            match inner
                .connection
                .invoke::<i64>(&key, &invocation, inner.timeout)
                .await
            {
                Ok(_) => {}
                Err(CallError::Redis(error)) => {
                    inner.counters.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%error, "a settled cost was not recorded in Redis");
                }
                Err(CallError::Timeout) => {
                    inner.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("a settled cost was not recorded in Redis in time");
                }
            }
        });
    }

    /// Queues `waiting` for its key's next call, starting the key's sending task if none runs;
    /// gives it back when `max_pending` admissions of the key wait already.
    fn enqueue(&self, slot: &Arc<SlotState>, waiting: Waiting) -> Result<(), Waiting> {
        if !slot.queue.push(waiting, self.inner.max_pending)? {
            return Ok(());
        }
        let sender = batch::send_batches(Arc::clone(&self.inner), Arc::clone(slot));
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(sender)),
            Err(_) => {
                let error = StoreError::new("no tokio runtime to reach Redis from");
                self.inner
                    .answer_unavailable(slot, slot.queue.stop(), &error);
            }
        }
        Ok(())
    }

    pub(crate) fn is_unavailable(&self) -> bool {
        self.inner.is_any_down(Instant::now())
    }
}
