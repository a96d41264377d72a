//! # seawall-rate-limit-redis
//!
//! A [`RateStore`](seawall_rate_limit::RateStore) for seawall's `RateLimitLayer` that keeps
//! quota state in Redis, so a fleet of processes calling one API with one quota stays under
//! it together. Waiting, priorities, queue bounds and server-driven pauses work exactly as
//! with the in-process store: only where the tokens live changes.
//!
//! ```
//! use http::{Request, Response};
//! use seawall_rate_limit::RateLimitLayer;
//! use seawall_rate_limit_redis::{FailurePolicy, RedisStore};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Every process builds the same store and quota: together they send at most 100
//! // requests per second. Should Redis be unreachable, each limits itself to a quarter.
//! let store = RedisStore::builder("redis://127.0.0.1:1/")
//!     .failure_policy(FailurePolicy::FallBack { share: 0.25 })
//!     .connect()
//!     .await?;
//! let limit = RateLimitLayer::builder()
//!     .per_second(100)
//!     .burst(10)
//!     .store(store.clone())
//!     .build_with_store()?;
//! let upstream = service_fn(|_req: Request<()>| async {
//!     Ok::<_, std::io::Error>(Response::new(()))
//! });
//! let client = ServiceBuilder::new().layer(limit).service(upstream);
//! client.oneshot(Request::new(())).await?;
//!
//! // Nothing listens on port 1, so the fallback limiter admitted the request.
//! let stats = store.stats();
//! assert_eq!((stats.remote_admitted, stats.fallback_admitted), (0, 1));
//! assert_eq!(stats.errors + stats.timeouts, 1);
//! # Ok(())
//! # }
//! ```
//!
//! ## How it works
//!
//! - **One round trip per admission**: GCRA for every quota of the key in one Lua script,
//!   sent with `EVALSHA` and loaded again when Redis answers `NOSCRIPT` (after a restart or a
//!   `SCRIPT FLUSH`), over one multiplexed connection that is remade after failures.
//! - **Coalescing**: a key has at most one call out at a time; the admissions that arrive
//!   meanwhile go together in the next, and the script decides them in arrival order exactly
//!   as separate calls at that instant would. Each admission still waits for one round trip,
//!   but a busy key costs Redis one script run per batch rather than per admission, which
//!   is what Redis's single thread limits. A caller that gives up before its batch is sent
//!   takes nothing.
//! - **The server's clock** (`TIME`) times the quota by default, so the processes' own
//!   clocks do not matter; [`Clock::Local`] uses the limiter's clock instead.
//! - **Keys**: `<prefix>:{<hash>}` holding the quota's theoretical arrival time (with several
//!   quotas, a hash `<prefix>:{<hash>}:quotas`), where `<hash>` is 32 hex digits of the
//!   SHA-256 of the limiter key's `Debug` rendering: distinct keys never share a quota, a key
//!   carrying a secret is never spelled out in Redis, and every version names a key alike.
//!   The braces are a hash tag, so Redis Cluster keeps each key's state on one node; a TTL
//!   ends when the burst has refilled, so idle keys cost Redis nothing. Limiters whose keys
//!   may render alike (keys of different types) need prefixes of their own. Redis 5 or
//!   later.
//! - **Window quotas** ([`Quota::window`](seawall_rate_limit::Quota::window)) are decided in
//!   the same script and round trip as the GCRA ones, on the same clock: each keeps its
//!   admissions of the last period in a sorted set `<key>:w<i>` (one member per token,
//!   scored by its instant, about 60 bytes each in Redis: O(`n`) per key), with a counter
//!   `<key>:w<i>:n` naming them, both expiring a period after the last admission. The window
//!   golden table ([`run_window_golden_table`](seawall_rate_limit::conformance::run_window_golden_table))
//!   holds against Redis as against the in-process store.
//! - **Tiers** need nothing of the store: each key asks with its tier's quotas.
//! - **Settled costs** ([`settle_costs`](seawall_rate_limit::RateLimitBuilder::settle_costs))
//!   go to Redis in a second script, sent in the background on the caller's runtime (nobody
//!   waits for it); one that fails is counted among the errors and logged, and is not
//!   applied to the failure policy's local limiter.
//! - **A tight timeout** (50 ms by default) bounds every call; past it, or on any error,
//!   the [`FailurePolicy`] answers: fail closed (refuse with `StoreUnavailable`, the
//!   default), fail open, or fall back to a local limiter at a share of the quota. For
//!   [`recheck_after`](RedisStoreBuilder::recheck_after) the policy answers without asking,
//!   so an outage does not cost every request a timeout; then Redis is asked again and
//!   admission resumes as soon as it answers.
//! - **Lease mode** ([`lease`](RedisStoreBuilder::lease)) takes up to `n` tokens per round
//!   trip and spends them locally, for rates a round trip per request cannot reach; the
//!   admission that leaves fewer than `n / 2` asks for more in the background, so a busy
//!   key's pool is topped up before it runs dry. The
//!   price is bounded: a fleet of `P` processes may run at most `n × P` requests ahead of
//!   the quota in any window, because no process holds more than one lease at a time.
//! - **Redis Cluster** ([`RedisStore::cluster_builder`], given the URLs of some of its
//!   nodes): the redis crate's async cluster client routes each key's script to the master
//!   serving its slot (the hash tag keeps a limiter key's state in one slot), follows `MOVED`
//!   and `ASK`, and loads the script on every node. An error or a timeout puts only the key
//!   that met it into the failure policy for `recheck_after`, so keys on the other masters are
//!   not disturbed by one master's loss; its keys resume once a replica has taken over. A
//!   timeout also has a new cluster connection made in the background, which then takes the
//!   old one's place (the redis crate never remakes a node's connection that went silent);
//!   the other masters' keys go on over the old one meanwhile, and a master a connection did
//!   not reach when made has its keys refused at once rather than sent. The cluster's nodes
//!   should run with `cluster-require-full-coverage no`: with Redis's default, every node
//!   refuses every key (`CLUSTERDOWN`) while any slot is uncovered. Coalescing and leases
//!   stay per key, as on one node. Sentinel is not supported: the redis crate offers no
//!   connection that follows a Sentinel failover by itself.
//! - **One connection layer** for one node and for a Cluster: whatever else keeps state in
//!   Redis (a response cache, window quotas) is meant to share it, with the same URLs,
//!   timeouts and failure handling.
//! - **TLS** (the `tls` feature): `rediss://` URLs through rustls, trusting Mozilla's roots
//!   or the authorities given to `RedisStoreBuilder::root_certificates`.
//! - **Credentials** in the URL never appear in a `Debug` rendering, an error or a log line,
//!   and key names never spell out a limiter key.
//! - **Figures** ([`RedisStoreStats`], and [`FigureSource`](seawall_core::FigureSource) for
//!   the metrics layer): round trips by outcome, leased admissions, outages, the policy's
//!   answers.

mod batch;
mod builder;
mod cluster;
mod connection;
mod lease;
pub mod server;
mod stats;
mod store;

pub use builder::{Clock, FailurePolicy, RedisStoreBuilder};
pub use stats::RedisStoreStats;
pub use store::{AcquireFuture, RedisSlot, RedisStore};
