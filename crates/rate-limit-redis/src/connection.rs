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
//! way to remake one node's. Each cluster connection is made in the background (see the
//! `cluster` module), and each master that the slot map (as one node gives it) names is then
//! sent a `PING` at its address over a connection of its own: the cluster client makes a
//! connection without the nodes it cannot reach, and a call for such a node's keys would have
//! it refresh its slot map, holding back every call on the connection while it tries that
//! node again, for as long as a call's timeout. So:
//! - the first connection is made in a task that a call's timeout does not cancel;
//! - a call that times out has a new connection made, and calls go on over the old one
//!   meanwhile; so does a call whose connection was dropped, which the cluster client
//!   remakes by itself except when its own task is gone (it runs on the runtime the
//!   connection was made on, and a store may outlive that runtime);
//! - a connection made takes the place of the one before whatever it reaches, and the keys
//!   of a master it did not reach fail at once (their failure policy answers), each such call
//!   having a new connection tried.
//!
//! At most one is made at a time, and at most one each `recheck_after`: a flow that a
//! middlebox dropped is mended by the first, and while a master's host is gone its keys
//! follow the failure policy without holding back the others', until the cluster has failed
//! the master over or the host is back.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::{FromRedisValue, RedisError, RedisResult, ScriptInvocation};
use seawall_core::ConfigError;
use tokio::time::Instant;

use crate::builder::{RedisStoreBuilder, redacted};
use crate::cluster::Cluster;

/// How many call timeouts making a Cluster's connection may take.
const MAKING_TIMEOUTS: u32 = 10;

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
    /// has the connection it used replaced (see the module's docs). `key` is the key the
    /// invocation is routed by (its first).
    pub(crate) async fn invoke<T: FromRedisValue>(
        &self,
        key: &str,
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
                let deadline = Instant::now() + timeout;
                let made =
                    match tokio::time::timeout_at(deadline, Cluster::connection(cluster)).await {
                        Ok(Ok(made)) => made,
                        Ok(Err(error)) => return Err(CallError::Redis(error)),
                        Err(_) => return Err(CallError::Timeout),
                    };
                if !made.reaches(key) {
                    Cluster::replace(cluster, &made);
                    return Err(CallError::Redis(RedisError::from((
                        redis::ErrorKind::Io,
                        "the master serving this key did not answer when the cluster \
                         connection was made",
                    ))));
                }
                let mut connection = made.connection.clone();
                let remaining = deadline.saturating_duration_since(Instant::now());
                let answer = within(remaining, invocation.invoke_async(&mut connection)).await;
                let replace = match &answer {
                    // A call left little of its time by the wait for the first connection
                    // says nothing of the connection by timing out.
                    Err(CallError::Timeout) => remaining >= timeout / 2,
                    // Among them, the connection's own driver gone with the runtime it was
                    // made on (a store outliving a runtime, as in a test suite with a runtime
                    // per test): the cluster client does not remake itself then.
                    Err(CallError::Redis(error)) => error.is_connection_dropped(),
                    Ok(_) => false,
                };
                if replace {
                    Cluster::replace(cluster, &made);
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

fn open_node(config: &RedisStoreBuilder) -> Result<Connection, ConfigError> {
    // The errors show the URL without its credentials, and not the redis crate's reason,
    // which may quote the URL.
    let url_error = || ConfigError::new("url", redacted(&config.url), URL_EXPECTED);
    let client = open_client(&config.url, config).map_err(|_| url_error())?;
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
    // Each URL must parse on its own, so the error can name the one that does not. The
    // first, parsed, is the pattern of every node's own URL (see `NodeClients`).
    let mut seed = None;
    for url in nodes {
        match (url::Url::parse(url), redis::Client::open(url.as_str())) {
            (Ok(parsed), Ok(_)) => {
                seed.get_or_insert(parsed);
            }
            _ => return Err(ConfigError::new("nodes", redacted(url), URL_EXPECTED)),
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
    let node_clients = NodeClients {
        seed: seed.ok_or_else(|| ConfigError::new("nodes", shown(), URL_EXPECTED))?,
        config: config.clone(),
    };
    Ok(Connection::Cluster(Arc::new(Cluster::new(
        client,
        node_clients,
        config.timeout,
        config.recheck_after,
        // Seed connections, the slot map, then a connection and a ping to each node: each
        // step within the timeout, with room to spare.
        config.timeout.saturating_mul(MAKING_TIMEOUTS),
    ))))
}

/// The redis crate's client for `url`.
#[cfg(not(feature = "tls"))]
fn open_client(url: &str, _config: &RedisStoreBuilder) -> RedisResult<redis::Client> {
    redis::Client::open(url)
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

/// The redis crate's client for `url`, trusting the builder's root certificates if it has
/// any.
#[cfg(feature = "tls")]
fn open_client(url: &str, config: &RedisStoreBuilder) -> RedisResult<redis::Client> {
    install_crypto_provider(&[url]);
    match &config.root_certificates {
        Some(pem) => redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            },
        ),
        None => redis::Client::open(url),
    }
}

/// Makes a client for any node of a Cluster from the URL of one: the same scheme,
/// credentials, database and root certificates, another host and port.
pub(crate) struct NodeClients {
    seed: url::Url,
    config: RedisStoreBuilder,
}

impl NodeClients {
    /// A client for the node at `host:port`.
    pub(crate) fn client(&self, host: &str, port: u16) -> Option<redis::Client> {
        let mut url = self.seed.clone();
        // An IPv6 address comes without brackets, which `set_host` would cut at its first
        // colon.
        match host.parse::<std::net::IpAddr>() {
            Ok(ip) => url.set_ip_host(ip).ok()?,
            Err(_) => url.set_host(Some(host)).ok()?,
        }
        url.set_port(Some(port)).ok()?;
        open_client(url.as_str(), &self.config).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::NodeClients;

    #[test]
    fn a_node_s_client_keeps_the_seed_s_credentials_and_database_at_its_own_address() {
        let seed = "redis://user:secret@127.0.0.1:7000/2";
        let nodes = NodeClients {
            seed: url::Url::parse(seed).expect("a valid URL"),
            config: crate::RedisStore::builder(seed),
        };
        for (host, port) in [
            ("10.0.0.7", 7001),
            ("::1", 7002),
            ("redis-3.internal", 7003),
        ] {
            let client = nodes.client(host, port).expect("a client");
            let info = client.get_connection_info();
            assert_eq!(
                *info.addr(),
                redis::ConnectionAddr::Tcp(host.to_owned(), port),
                "{host}"
            );
            let settings = info.redis_settings();
            assert_eq!(
                (settings.username(), settings.password(), settings.db()),
                (Some("user"), Some("secret"), 2)
            );
        }
    }
}
