//! A Redis Cluster's connection: made and replaced in the background, and what it could not
//! reach (see the docs of the `connection` module).

use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, ErrorKind, RedisError, RedisResult};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::connection::NodeClients;

/// How many slots a Redis Cluster has.
const SLOTS: u16 = 16_384;

/// A Redis Cluster's client and the connection calls use.
pub(crate) struct Cluster {
    client: ClusterClient,
    /// Clients for single nodes, for checking that each master answers.
    nodes: NodeClients,
    /// A call's timeout: each master's check has as long.
    timeout: Duration,
    /// Made by a task that the first call starts; replaced after a timeout.
    current: ArcSwapOption<Made>,
    /// Whether a connection is being made, and when the last making began.
    making: Mutex<Making>,
    /// Woken when a making ends, for the calls waiting for the first connection.
    made: Notify,
    /// The least time between two makings' starts.
    pause: Duration,
    /// How long a making may take.
    budget: Duration,
}

/// A cluster connection, and the slots whose masters did not answer when it was made.
pub(crate) struct Made {
    pub(crate) connection: ClusterConnection,
    unreachable: Box<[RangeInclusive<u16>]>,
}

impl Made {
    /// Whether the master serving `key` answered when this connection was made. A key whose
    /// master did not is not sent: the redis crate would send it to another node, whose
    /// `MOVED` has it refresh its slot map while holding back every call on the connection
    /// until that master's connection attempt times out.
    pub(crate) fn reaches(&self, key: &str) -> bool {
        if self.unreachable.is_empty() {
            return true;
        }
        let slot = key_slot(key);
        !self.unreachable.iter().any(|range| range.contains(&slot))
    }
}

/// Whether a making runs, and when the last one began.
#[derive(Default)]
struct Making {
    running: bool,
    last_start: Option<Instant>,
}

impl Cluster {
    /// A cluster whose connections `client` makes, at most one each `pause`, each within
    /// `budget`; `nodes` makes clients for its masters' checks, which take `timeout` each.
    pub(crate) fn new(
        client: ClusterClient,
        nodes: NodeClients,
        timeout: Duration,
        pause: Duration,
        budget: Duration,
    ) -> Self {
        Self {
            client,
            nodes,
            timeout,
            current: ArcSwapOption::empty(),
            making: Mutex::new(Making::default()),
            made: Notify::new(),
            pause,
            budget,
        }
    }

    /// The connection in use; the first calls wait for the first one to be made (in a task
    /// of its own, which a call's timeout does not cancel), and get an error if that making
    /// failed (its reason is in the debug log).
    pub(crate) async fn connection(this: &Arc<Self>) -> RedisResult<Arc<Made>> {
        loop {
            let ended = this.made.notified();
            let mut ended = std::pin::pin!(ended);
            // Registered before the connection is looked at, so that a making that ends
            // between the look and the wait is not missed.
            ended.as_mut().enable();
            if let Some(made) = this.current.load_full() {
                return Ok(made);
            }
            if !Self::make(this, None) {
                // None runs: one put a connection in place since the look above, or the
                // last failed less than `pause` ago.
                return this.current.load_full().ok_or_else(|| {
                    RedisError::from((
                        ErrorKind::Io,
                        "no connection to the Redis Cluster could be made; the next is tried \
                         after `recheck_after`",
                    ))
                });
            }
            ended.await;
        }
    }

    /// Has a new connection made in the background to take the place of `used`, unless
    /// `used` was replaced already (see [`make`](Self::make)).
    pub(crate) fn replace(this: &Arc<Self>, used: &Arc<Made>) {
        let current = this.current.load();
        if current
            .as_ref()
            .is_some_and(|current| Arc::ptr_eq(current, used))
        {
            Self::make(this, Some(Arc::clone(used)));
        }
    }

    /// Starts a making in the background, unless one runs, one began less than `pause`
    /// ago, or there is no runtime; the connection made takes the place of `used` (of none,
    /// for the first) whatever it reaches, since it knows what it did not reach. Whether a
    /// making runs now, started here or before.
    fn make(this: &Arc<Self>, used: Option<Arc<Made>>) -> bool {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        // The first connection, put in place since the caller looked, needs no other.
        if used.is_none() && this.current.load().is_some() {
            return false;
        }
        let running = match Running::start(this) {
            Ok(running) => running,
            Err(Busy { running }) => return running,
        };
        runtime.spawn(async move {
            // The guard goes with the task: dropped when it ends, or with it if the runtime
            // never runs it.
            let cluster = &running.0;
            match tokio::time::timeout(cluster.budget, cluster.connect()).await {
                Ok(Ok(made)) => cluster.put_in_place(made, used),
                Ok(Err(error)) => {
                    tracing::debug!(%error, "no Redis Cluster connection could be made");
                }
                Err(_) => tracing::debug!("no Redis Cluster connection was made in time"),
            }
            drop(running);
        });
        true
    }

    /// Puts `made` in place of `used` (of nothing, for the first).
    fn put_in_place(&self, made: Made, used: Option<Arc<Made>>) {
        if !made.unreachable.is_empty() {
            tracing::warn!(
                unreachable_ranges = made.unreachable.len(),
                "a Redis Cluster connection was made without every master; their keys follow \
                 the failure policy until a connection reaches them"
            );
        }
        self.current.compare_and_swap(&used, Some(Arc::new(made)));
        tracing::debug!("a new Redis Cluster connection is in place");
    }

    /// A new cluster connection, with the slots of the masters that did not answer a `PING`
    /// each, sent over a connection of its own at the address the slot map gives (the redis
    /// crate makes a cluster connection without the nodes it cannot reach, and asking one
    /// through it that it does not hold would have it reconnect from its seeds meanwhile).
    /// A master named otherwise than by a host (an empty or unknown endpoint) is not
    /// checked.
    async fn connect(&self) -> RedisResult<Made> {
        let mut connection = self.client.get_async_connection().await?;
        let answer: Vec<redis::Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut connection)
            .await?;
        let ranges: Vec<(String, u16, RangeInclusive<u16>)> =
            answer.iter().filter_map(master_range).collect();
        let mut masters: Vec<(String, u16)> = ranges
            .iter()
            .map(|(host, port, _)| (host.clone(), *port))
            .filter(|(host, _)| !matches!(host.as_str(), "" | "?" | "0.0.0.0" | "::"))
            .collect();
        masters.sort_unstable();
        masters.dedup();
        // Every master at once, each within a call's timeout. One no client can be made for
        // (an address a URL cannot hold) is left unchecked rather than refused.
        let checks: Vec<_> = masters
            .into_iter()
            .filter_map(|(host, port)| {
                let Some(client) = self.nodes.client(&host, port) else {
                    tracing::warn!(%host, port, "a Redis Cluster master could not be checked");
                    return None;
                };
                Some((
                    (host, port),
                    tokio::spawn(answers_ping(client, self.timeout)),
                ))
            })
            .collect();
        let mut silent = Vec::new();
        for (master, check) in checks {
            if !check.await.unwrap_or(false) {
                silent.push(master);
            }
        }
        let unreachable = ranges
            .into_iter()
            .filter(|(host, port, _)| silent.iter().any(|(h, p)| h == host && p == port))
            .map(|(_, _, range)| range)
            .collect();
        Ok(Made {
            connection,
            unreachable,
        })
    }
}

/// Whether the node `client` is for answers a `PING` within `timeout`, on a connection of
/// its own.
async fn answers_ping(client: redis::Client, timeout: Duration) -> bool {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    let ping = async {
        let mut connection = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
    };
    // Bounded whole, the connection's timeouts being per step.
    matches!(tokio::time::timeout(timeout * 2, ping).await, Ok(Ok(_)))
}

/// The master's address and the slots of one range of a `CLUSTER SLOTS` answer.
pub(crate) fn master_range(range: &redis::Value) -> Option<(String, u16, RangeInclusive<u16>)> {
    let redis::Value::Array(parts) = range else {
        return None;
    };
    let start = redis::from_redis_value_ref::<u16>(parts.first()?).ok()?;
    let end = redis::from_redis_value_ref::<u16>(parts.get(1)?).ok()?;
    let redis::Value::Array(master) = parts.get(2)? else {
        return None;
    };
    let host = redis::from_redis_value_ref::<String>(master.first()?).ok()?;
    let port = redis::from_redis_value_ref::<u16>(master.get(1)?).ok()?;
    Some((host, port, start..=end))
}

/// The slot of `key`, as Redis Cluster computes it: CRC16 (XMODEM) of its hash tag (what is
/// between its first `{` and the next `}`, if not empty) or of the whole key, modulo 16,384.
pub(crate) fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &bytes[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(bytes)) % SLOTS
}

/// A making that runs: marks it as ended when dropped.
struct Running(Arc<Cluster>);

impl Running {
    /// Marks a making of `cluster`'s connection as running, unless one is, or one began
    /// less than the cluster's pause ago.
    fn start(cluster: &Arc<Cluster>) -> Result<Self, Busy> {
        let mut making = cluster
            .making
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let recent = (making.last_start)
            .is_some_and(|start| now.saturating_duration_since(start) < cluster.pause);
        if making.running || recent {
            return Err(Busy {
                running: making.running,
            });
        }
        *making = Making {
            running: true,
            last_start: Some(now),
        };
        Ok(Self(Arc::clone(cluster)))
    }
}

/// Why no making was started: one runs, or (`running` false) one began less than the
/// cluster's pause ago.
struct Busy {
    running: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0
            .making
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .running = false;
        // The calls waiting for the first connection look again: at the connection, or at
        // the making's failure.
        self.0.made.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::key_slot;

    #[test]
    fn a_key_s_slot_is_the_one_redis_cluster_gives() {
        // `CLUSTER KEYSLOT` of each, asked of Redis 7.0.
        for (key, slot) in [
            ("foo", 12_182),
            ("123456789", 12_739),
            // The hash tag alone decides...
            ("{user1000}.following", 3_443),
            ("user1000", 3_443),
            ("seawall:{abc}:quotas", 7_638),
            ("abc", 7_638),
            // ...from the first `{` to the next `}`...
            ("foo{{bar}}zap", 4_015),
            ("{bar", 4_015),
            // ...unless it is empty: then the whole key.
            ("foo{}{bar}", 8_363),
            ("bar", 5_061),
        ] {
            assert_eq!(key_slot(key), slot, "{key}");
        }
    }
}
