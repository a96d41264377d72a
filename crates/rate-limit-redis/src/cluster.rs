//! A Redis Cluster's connection: made and replaced in the background, and what it could not
//! reach (see the docs of the `connection` module).

use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{ErrorKind, RedisError, RedisResult};
use tokio::sync::Notify;
use tokio::time::Instant;

/// How many slots a Redis Cluster has.
const SLOTS: u16 = 16_384;

/// A Redis Cluster's client and the connection calls use.
pub(crate) struct Cluster {
    client: ClusterClient,
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

/// A cluster connection, and the slots whose masters it could not reach when it was made.
pub(crate) struct Made {
    pub(crate) connection: ClusterConnection,
    /// `None` when no master answered at the address the slot map gives (an endpoint the
    /// redis crate spells otherwise): nothing is known to be unreachable then.
    unreachable: Option<Box<[RangeInclusive<u16>]>>,
}

impl Made {
    /// Whether the master serving `key` answered when this connection was made. A key whose
    /// master did not is not sent: the redis crate would send it to another node, whose
    /// `MOVED` has it refresh its slot map while holding back every call on the connection
    /// until that master's connection attempt times out.
    pub(crate) fn reaches(&self, key: &str) -> bool {
        match &self.unreachable {
            Some(ranges) if !ranges.is_empty() => {
                let slot = key_slot(key);
                !ranges.iter().any(|range| range.contains(&slot))
            }
            _ => true,
        }
    }

    /// Whether every master of the slot map answered.
    fn whole(&self) -> bool {
        self.unreachable
            .as_ref()
            .is_some_and(|ranges| ranges.is_empty())
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
    /// `budget`.
    pub(crate) fn new(client: ClusterClient, pause: Duration, budget: Duration) -> Self {
        Self {
            client,
            current: ArcSwapOption::empty(),
            making: Mutex::new(Making::default()),
            made: Notify::new(),
            pause,
            budget,
        }
    }

    /// The connection in use; the first call waits for the first one to be made (in a task
    /// of its own, which the call's timeout does not cancel) and gets the making's failure
    /// if it failed.
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
            if !Self::make(this, None) && !this.is_making() {
                return Err(RedisError::from((
                    ErrorKind::Io,
                    "no connection to the Redis Cluster could be made; the next is tried after \
                     `recheck_after`",
                )));
            }
            ended.await;
        }
    }

    /// Has a new connection made in the background to take the place of `used` once it
    /// reaches every master, unless `used` was replaced already (see [`make`](Self::make)).
    pub(crate) fn replace(this: &Arc<Self>, used: &Arc<Made>) {
        let current = this.current.load();
        if current
            .as_ref()
            .is_some_and(|current| Arc::ptr_eq(current, used))
        {
            Self::make(this, Some(Arc::clone(used)));
        }
    }

    fn is_making(&self) -> bool {
        self.making
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .running
    }

    /// Starts a making in the background, unless one runs, one began less than `pause`
    /// ago, or there is no runtime: the first connection (`used` is `None`) is put in place
    /// whatever it reaches, a replacement only if it reaches every master. Whether one
    /// started.
    fn make(this: &Arc<Self>, used: Option<Arc<Made>>) -> bool {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        let Some(running) = Running::start(this) else {
            return false;
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

    /// Puts `made` in place of `used` (of nothing, for the first), if it may.
    fn put_in_place(&self, made: Made, used: Option<Arc<Made>>) {
        match used {
            None => {
                if !made.whole() {
                    tracing::warn!(
                        "the first Redis Cluster connection does not reach every master; \
                         their keys follow the failure policy until one that does is made"
                    );
                }
                self.current.store(Some(Arc::new(made)));
            }
            Some(_) if !made.whole() => tracing::debug!(
                "a new Redis Cluster connection does not reach every master; the old one stays"
            ),
            Some(used) => {
                self.current.compare_and_swap(&used, Some(Arc::new(made)));
                tracing::debug!("a new Redis Cluster connection took the old one's place");
            }
        }
    }

    /// A new cluster connection, with the slots of the masters that did not answer a `PING`
    /// sent to each by its address in the slot map: the redis crate makes a connection
    /// without the nodes it cannot reach.
    async fn connect(&self) -> RedisResult<Made> {
        let mut connection = self.client.get_async_connection().await?;
        let answer: Vec<redis::Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut connection)
            .await?;
        let mut ranges: Vec<(String, u16, RangeInclusive<u16>)> =
            answer.iter().filter_map(master_range).collect();
        ranges.sort_unstable_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        let (mut unreachable, mut answered) = (Vec::new(), 0);
        let mut at = 0;
        while at < ranges.len() {
            let (host, port) = (ranges[at].0.clone(), ranges[at].1);
            let end = at
                + ranges[at..]
                    .iter()
                    .take_while(|(h, p, _)| *h == host && *p == port)
                    .count();
            let node = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
            match connection.route_command(redis::cmd("PING"), node).await {
                Ok(_) => answered += 1,
                Err(_) => unreachable.extend(ranges[at..end].iter().map(|(_, _, r)| r.clone())),
            }
            at = end;
        }
        let unreachable = (answered > 0).then(|| unreachable.into_boxed_slice());
        if unreachable.is_none() {
            tracing::warn!(
                "no Redis Cluster master answered at the address its slot map gives; a \
                 connection gone silent will not be replaced"
            );
        }
        Ok(Made {
            connection,
            unreachable,
        })
    }
}

/// The master's address and the slots of one range of a `CLUSTER SLOTS` answer.
fn master_range(range: &redis::Value) -> Option<(String, u16, RangeInclusive<u16>)> {
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
    fn start(cluster: &Arc<Cluster>) -> Option<Self> {
        let mut making = cluster
            .making
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let recent = (making.last_start)
            .is_some_and(|start| now.saturating_duration_since(start) < cluster.pause);
        if making.running || recent {
            return None;
        }
        *making = Making {
            running: true,
            last_start: Some(now),
        };
        Some(Self(Arc::clone(cluster)))
    }
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
