//! The connection layer: one Redis node, or a Redis Cluster, behind one type.
//!
//! - **One node**: the redis crate's connection manager, one multiplexed connection that is
//!   remade after failures.
//! - **A Cluster**: the redis crate's async cluster client, which keeps a multiplexed
//!   connection per node, routes each call by its key's slot, follows `MOVED` and `ASK`,
//!   refreshes its slot map when the cluster changes, and sends `SCRIPT LOAD` to every node. It
//!   is made on the first call (so an unreachable cluster is not an error when the store is
//!   built), in a task of its own that the call's timeout does not cancel, and replaced after
//!   a timeout (below).
//!
//! Whatever needs Redis goes through [`Connection::invoke`] (a Lua script on its keys, routed
//! by its first key on a Cluster): the rate-limit store does, and so can any other part that
//! keeps state in Redis (a response cache, window quotas), with the same URLs, timeouts and
//! failure handling; a plain command would be one more method of the same shape. Each call is
//! bounded by the caller's timeout; an error or a timeout concerns that call's key only, which
//! on a Cluster lets the caller put only that key into its failure policy.
//!
//! On one node, a call that times out drops the connection it went on, and the next call
//! makes a new one. The redis crate remakes a connection only after an error it reads as a
//! broken link, and a timeout is not one: a connection that went silent (a NAT or load
//! balancer that dropped its flow, a host gone without a reset) would otherwise stay in use,
//! every call timing out, until the kernel gave up on it (about 15 minutes on Linux), and
//! fail-closed would refuse every request meanwhile.
//!
//! On a Cluster the same holds for each node's connection, and the cluster client offers no
//! way to remake one node's. A call that times out has a new cluster connection made in the
//! background, which takes the old one's place only once it reaches every master of its slot
//! map: the cluster client makes a connection without the nodes it cannot reach, and a call
//! for such a node's keys has it refresh its slot map, holding back every other call while
//! it tries that node again. Calls go on over the old connection meanwhile, so the other
//! masters' keys wait for nothing, whatever the making costs. At most one is made at a time,
//! and at most one each `recheck_after`: a flow that a middlebox dropped is mended by the
//! first, and while a master's host is gone for good the old connection stays (its keys
//! follow the failure policy) until the cluster has failed the master over, when a new
//! connection reaches every master again.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{FromRedisValue, RedisError, RedisResult, ScriptInvocation};
use seawall_core::ConfigError;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::builder::{RedisStoreBuilder, redacted};

/// How many call timeouts a Cluster's replacement connection may take to be made.
const REPLACEMENT_TIMEOUTS: u32 = 10;

/// What a node's URL must be.
pub(crate) const URL_EXPECTED: &str =
    "a redis://[user:password@]host[:port][/db] URL (rediss:// with the `tls` feature)";

/// A connection to one Redis node or to a Redis Cluster; clones share it.
#[derive(Clone)]
pub(crate) enum Connection {
    /// One node.
    Node(Arc<Node>),
    /// A Redis Cluster.
    Cluster(Arc<Cluster>),
}

/// One node's client and its connection manager, replaced after a timeout.
pub(crate) struct Node {
    client: redis::Client,
    config: ConnectionManagerConfig,
    manager: ArcSwap<ConnectionManager>,
}

/// A Redis Cluster's client and its connection: made by the first call, and replaced after
/// a timeout by one made in the background (see the module's docs).
pub(crate) struct Cluster {
    client: ClusterClient,
    connection: ArcSwap<OnceCell<ClusterConnection>>,
    /// Whether a replacement is being made, and when the last one began.
    replacing: Mutex<Replacing>,
    /// The least time between two replacements' starts.
    pause: Duration,
    /// How long a replacement may take to be made.
    budget: Duration,
}

/// The state of a Cluster's replacement connection.
#[derive(Default)]
struct Replacing {
    running: bool,
    last_start: Option<Instant>,
}

/// Why a call through a [`Connection`] failed.
#[derive(Debug)]
pub(crate) enum CallError {
    /// Redis answered with an error, or the link broke.
    Redis(RedisError),
    /// No answer within the timeout (the connection is replaced).
    Timeout,
}

impl Connection {
    /// The connection the builder describes, made lazily; the error names the field whose
    /// URL does not parse (shown without its credentials).
    pub(crate) fn open(config: &RedisStoreBuilder) -> Result<Self, ConfigError> {
        match &config.cluster {
            None => open_node(config),
            Some(nodes) => open_cluster(config, nodes),
        }
    }

    /// Whether this is a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// Runs `invocation` (`EVALSHA`, loading the script again when Redis answers
    /// `NOSCRIPT`), on the node serving its keys, within `timeout`; a call that times out
    /// has the connection it used replaced (see the module's docs).
    pub(crate) async fn invoke<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
        timeout: Duration,
    ) -> Result<T, CallError> {
        match self {
            Self::Node(node) => {
                let used = node.manager.load_full();
                let mut manager = (*used).clone();
                let answer = within(timeout, invocation.invoke_async(&mut manager)).await;
                if matches!(answer, Err(CallError::Timeout)) {
                    node.replace(&used);
                }
                answer
            }
            Self::Cluster(cluster) => {
                let used = cluster.connection.load_full();
                let call = async {
                    let mut connection = cluster.connection(&used).await?;
                    invocation.invoke_async(&mut connection).await
                };
                let answer = within(timeout, call).await;
                if matches!(answer, Err(CallError::Timeout)) {
                    Cluster::replace(cluster, &used);
                }
                answer
            }
        }
    }
}

/// `call`'s answer within `timeout`. The redis crate's own response timeout, of the same
/// length, usually fires in the same tick as this one, and first: its error is a timeout
/// too.
async fn within<T>(
    timeout: Duration,
    call: impl Future<Output = RedisResult<T>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(error)) if !error.is_timeout() => Err(CallError::Redis(error)),
        Ok(Err(_)) | Err(_) => Err(CallError::Timeout),
    }
}

impl Node {
    /// Puts a new connection manager in place of `used`, unless a call that timed out at
    /// the same time already did. It connects on its first call.
    fn replace(&self, used: &Arc<ConnectionManager>) {
        let Ok(fresh) =
            ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())
        else {
            return;
        };
        self.manager.compare_and_swap(used, Arc::new(fresh));
        tracing::debug!("a Redis call timed out; its connection is dropped and a new one made");
    }
}

impl Cluster {
    /// The cluster connection in `cell`, made now if it has not been yet. It is made in a
    /// task of its own, which a call's timeout does not cancel: making it waits for every
    /// node's connection, a node whose host is gone without a reset takes its whole
    /// connection timeout (the call's timeout), and a making cancelled with each call would
    /// leave every key of every master refused until that host came back.
    async fn connection(
        &self,
        cell: &Arc<OnceCell<ClusterConnection>>,
    ) -> RedisResult<ClusterConnection> {
        if let Some(connection) = cell.get() {
            return Ok(connection.clone());
        }
        let (cell, client) = (Arc::clone(cell), self.client.clone());
        let making = async move {
            let made = cell.get_or_try_init(|| client.get_async_connection()).await;
            made.cloned()
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime.spawn(making).await.unwrap_or_else(|_| {
                Err(RedisError::from((
                    redis::ErrorKind::Io,
                    "the Redis Cluster connection's making was stopped",
                )))
            }),
            Err(_) => making.await,
        }
    }

    /// Has a new cluster connection made in the background to take the place of `used`,
    /// unless one is being made, one began less than `pause` ago, or `used` was replaced
    /// already. A call that timed out while `used` was being made leaves it to that making.
    fn replace(this: &Arc<Self>, used: &Arc<OnceCell<ClusterConnection>>) {
        if used.get().is_none() || !Arc::ptr_eq(&this.connection.load(), used) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Some(running) = Running::start(this) else {
            return;
        };
        tracing::debug!("a Redis Cluster call timed out; a new cluster connection is being made");
        let used = Arc::clone(used);
        runtime.spawn(async move {
            // The guard goes with the task: dropped when it ends, or with it if the runtime
            // never runs it.
            let cluster = &running.0;
            let made = tokio::time::timeout(cluster.budget, cluster.make_whole());
            match made.await {
                Ok(Ok(fresh)) => {
                    cluster
                        .connection
                        .compare_and_swap(&used, Arc::new(OnceCell::from(fresh)));
                    tracing::debug!("a new Redis Cluster connection took the old one's place");
                }
                Ok(Err(error)) => tracing::debug!(
                    %error,
                    "no new Redis Cluster connection reached every master; the old one stays"
                ),
                Err(_) => tracing::debug!(
                    "no new Redis Cluster connection was made in time; the old one stays"
                ),
            }
        });
    }

    /// A new cluster connection that has a connection to every master of its slot map, each
    /// answering a `PING`. The redis crate makes a cluster connection without the nodes it
    /// cannot reach, and a call for such a node's keys then has it refresh its slot map,
    /// holding back every call on the connection while it tries that node again: one made
    /// while a master's host is gone must not take the place of one that reaches the
    /// others.
    async fn make_whole(&self) -> RedisResult<ClusterConnection> {
        let mut fresh = self.client.get_async_connection().await?;
        let slots: Vec<redis::Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut fresh)
            .await?;
        let mut masters: Vec<(String, u16)> = slots.iter().filter_map(master_address).collect();
        masters.sort_unstable();
        masters.dedup();
        if masters.is_empty() {
            return Err(RedisError::from((
                redis::ErrorKind::Client,
                "the cluster's slot map names no master",
            )));
        }
        for (host, port) in masters {
            let node = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
            fresh.route_command(redis::cmd("PING"), node).await?;
        }
        Ok(fresh)
    }
}

/// The address of the master of one range of a `CLUSTER SLOTS` answer.
fn master_address(range: &redis::Value) -> Option<(String, u16)> {
    let redis::Value::Array(parts) = range else {
        return None;
    };
    let redis::Value::Array(master) = parts.get(2)? else {
        return None;
    };
    let host = redis::from_redis_value_ref::<String>(master.first()?).ok()?;
    let port = redis::from_redis_value_ref::<u16>(master.get(1)?).ok()?;
    Some((host, port))
}

/// A Cluster's replacement being made: marks it as no longer running when dropped.
struct Running(Arc<Cluster>);

impl Running {
    /// Marks a replacement of `cluster`'s connection as running, unless one is, or one began
    /// less than the cluster's pause ago.
    fn start(cluster: &Arc<Cluster>) -> Option<Self> {
        let mut replacing = cluster
            .replacing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let recent = (replacing.last_start)
            .is_some_and(|start| now.saturating_duration_since(start) < cluster.pause);
        if replacing.running || recent {
            return None;
        }
        *replacing = Replacing {
            running: true,
            last_start: Some(now),
        };
        Some(Self(Arc::clone(cluster)))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut replacing = self
            .0
            .replacing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        replacing.running = false;
    }
}

fn open_node(config: &RedisStoreBuilder) -> Result<Connection, ConfigError> {
    // The errors show the URL without its credentials, and not the redis crate's reason,
    // which may quote the URL.
    let url_error = || ConfigError::new("url", redacted(&config.url), URL_EXPECTED);
    let client = open_client(config).map_err(|_| url_error())?;
    let connection_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.timeout))
        .set_response_timeout(Some(config.timeout))
        .set_number_of_retries(2)
        .set_min_delay(Duration::from_millis(10))
        .set_max_delay(config.recheck_after);
    let manager =
        ConnectionManager::new_lazy_with_config(client.clone(), connection_config.clone())
            .map_err(|_| url_error())?;
    Ok(Connection::Node(Arc::new(Node {
        client,
        config: connection_config,
        manager: ArcSwap::from_pointee(manager),
    })))
}

fn open_cluster(config: &RedisStoreBuilder, nodes: &[String]) -> Result<Connection, ConfigError> {
    let shown = || {
        let shown: Vec<String> = nodes.iter().map(|url| redacted(url)).collect();
        format!("[{}]", shown.join(", "))
    };
    if nodes.is_empty() {
        return Err(ConfigError::new(
            "nodes",
            shown(),
            "the URL of one or more of the cluster's nodes",
        ));
    }
    // Each URL must parse on its own, so the error can name the one that does not.
    for url in nodes {
        let parsed = url::Url::parse(url);
        if redis::Client::open(url.as_str()).is_err() || parsed.is_err() {
            return Err(ConfigError::new("nodes", redacted(url), URL_EXPECTED));
        }
    }
    #[cfg(feature = "tls")]
    install_crypto_provider(nodes);
    let builder = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
        .connection_timeout(config.timeout)
        .response_timeout(config.timeout)
        .retries(2)
        .min_retry_wait(10)
        .max_retry_wait(u64::try_from(config.recheck_after.as_millis()).unwrap_or(u64::MAX));
    #[cfg(feature = "tls")]
    let builder = match &config.root_certificates {
        Some(pem) => builder.certs(redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.clone()),
        }),
        None => builder,
    };
    let client = builder
        .build()
        .map_err(|_| ConfigError::new("nodes", shown(), URL_EXPECTED))?;
    Ok(Connection::Cluster(Arc::new(Cluster {
        client,
        connection: ArcSwap::from_pointee(OnceCell::new()),
        replacing: Mutex::new(Replacing::default()),
        pause: config.recheck_after,
        // Seed connections, the slot map, then a connection and a ping to each node: each
        // step within the timeout, with room to spare.
        budget: config.timeout.saturating_mul(REPLACEMENT_TIMEOUTS),
    })))
}

/// The redis crate's client for the builder's URL.
#[cfg(not(feature = "tls"))]
fn open_client(config: &RedisStoreBuilder) -> RedisResult<redis::Client> {
    redis::Client::open(config.url.as_str())
}

/// The redis crate builds its TLS configuration from the process's default provider, and
/// rustls cannot choose one when a build holds two (ring and aws-lc-rs): ring's is installed
/// for a `rediss://` URL unless the application installed its own.
#[cfg(feature = "tls")]
fn install_crypto_provider<S: AsRef<str>>(urls: &[S]) {
    let tls = urls.iter().any(|url| {
        let scheme = url::Url::parse(url.as_ref()).map(|url| url.scheme().to_owned());
        matches!(scheme.as_deref(), Ok("rediss" | "valkeys"))
    });
    if tls && rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// The redis crate's client for the builder's URL, trusting the builder's root certificates
/// if it has any.
#[cfg(feature = "tls")]
fn open_client(config: &RedisStoreBuilder) -> RedisResult<redis::Client> {
    install_crypto_provider(&[&config.url]);
    match &config.root_certificates {
        Some(pem) => redis::Client::build_with_tls(
            config.url.as_str(),
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            },
        ),
        None => redis::Client::open(config.url.as_str()),
    }
}
