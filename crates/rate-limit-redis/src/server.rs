//! A throwaway `redis-server` on a free loopback port, for tests, examples and benchmarks
//! that must not touch a shared instance, a throwaway Redis Cluster made of them, and a proxy
//! that makes a connection to one go silent.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A `redis-server` child process that keeps nothing on disk; killed when dropped.
///
/// The binary is `redis-server` on the `PATH`, or the one named by `SEAWALL_REDIS_SERVER`.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
    tls: bool,
}

impl RedisServer {
    /// Starts a server on a free port of 127.0.0.1 and returns once it accepts connections.
    pub fn start() -> io::Result<Self> {
        let port = TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port();
        Self::start_on(port)
    }

    /// Starts a server on `port` (for example to bring back one that was killed).
    pub fn start_on(port: u16) -> io::Result<Self> {
        Self::spawn(port, &["--port", &port.to_string()], false)
    }

    /// Starts a Redis Cluster node on `port`, keeping its cluster configuration in `dir`,
    /// declaring a peer failed after `node_timeout_ms` of silence.
    fn start_cluster_node(port: u16, dir: &Path, node_timeout_ms: u64) -> io::Result<Self> {
        let args = [
            "--port".to_owned(),
            port.to_string(),
            "--cluster-enabled".to_owned(),
            "yes".to_owned(),
            "--dir".to_owned(),
            dir.to_string_lossy().into_owned(),
            "--cluster-config-file".to_owned(),
            format!("nodes-{port}.conf"),
            "--cluster-node-timeout".to_owned(),
            node_timeout_ms.to_string(),
            // A master's loss leaves the other masters serving their own slots, instead of
            // the whole cluster refusing every key until a replica has taken over.
            "--cluster-require-full-coverage".to_owned(),
            "no".to_owned(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Self::spawn(port, &args, false)
    }

    /// Starts a server that speaks only TLS, on a free port of 127.0.0.1, with the
    /// certificate and key in the PEM files given (the certificate must name `127.0.0.1`),
    /// and returns once it accepts connections. Clients are not asked for certificates;
    /// `ca_file` is the authority the server would check them against. The binary must be
    /// built with TLS (Debian's is).
    pub fn start_tls(cert_file: &Path, key_file: &Path, ca_file: &Path) -> io::Result<Self> {
        let port = TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port();
        let file = |path: &Path| path.to_string_lossy().into_owned();
        let args = [
            "--port".to_owned(),
            "0".to_owned(),
            "--tls-port".to_owned(),
            port.to_string(),
            "--tls-cert-file".to_owned(),
            file(cert_file),
            "--tls-key-file".to_owned(),
            file(key_file),
            "--tls-ca-cert-file".to_owned(),
            file(ca_file),
            "--tls-auth-clients".to_owned(),
            "no".to_owned(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Self::spawn(port, &args, true)
    }

    fn spawn(port: u16, listen: &[&str], tls: bool) -> io::Result<Self> {
        let binary =
            std::env::var("SEAWALL_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned());
        let mut child = Command::new(&binary)
            .args(listen)
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--loglevel", "notice", "--logfile", ""])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .stdin(Stdio::null())
            .spawn()
            .map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!("cannot run `{binary}` (Debian package redis-server): {error}"),
                )
            })?;
        let Some(stdout) = child.stdout.take() else {
            return Err(io::Error::other("redis-server has no stdout"));
        };
        // Ready once it says so; the rest of its log is drained so it never blocks on a pipe.
        let mut lines = BufReader::new(stdout).lines();
        let mut log = Vec::new();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("Ready to accept connections") => break,
                Some(Ok(line)) => log.push(line),
                Some(Err(error)) => return Err(error),
                None => {
                    let _ = child.wait();
                    return Err(io::Error::other(format!(
                        "redis-server on port {port} exited before it was ready:\n{}",
                        log.join("\n")
                    )));
                }
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        Ok(Self { child, port, tls })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/`, or `rediss://…` for a server started with
    /// [`start_tls`](Self::start_tls).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }

    /// Kills the server at once (`SIGKILL`, as a crash would) and waits for it to be gone.
    pub fn kill(mut self) -> io::Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> io::Result<()> {
        self.child.kill()?;
        self.child.wait().map(drop)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// A throwaway Redis Cluster on free loopback ports: `masters` masters with `replicas` replicas
/// each, every node a [`RedisServer`] child process that keeps nothing but its cluster
/// configuration (in a directory of its own, removed on drop). Killed when dropped.
///
/// Made with `redis-cli --cluster create` (`redis-cli` on the `PATH`, or the one named by
/// `SEAWALL_REDIS_CLI`); ready once every node reports `cluster_state:ok`, knows every other
/// node, and every replica's link to its master is up. Nodes declare a silent peer failed
/// after one second, so a replica takes over a killed master within a few seconds, and
/// serve their own slots while another's are uncovered (`cluster-require-full-coverage no`).
#[derive(Debug)]
pub struct RedisCluster {
    /// `None` once killed.
    nodes: Vec<Option<RedisServer>>,
    ports: Vec<u16>,
    dir: PathBuf,
}

/// How long a silent node may be before its peers declare it failed.
const NODE_TIMEOUT_MS: u64 = 1_000;
/// How long a new cluster may take to become ready.
const READY_WITHIN: Duration = Duration::from_secs(30);

impl RedisCluster {
    /// Starts `masters` masters (3 or more) with `replicas` replicas each and returns once the
    /// cluster serves every slot. A port taken by someone else between its choice and the
    /// node's start costs another try with new ports (three in all).
    pub fn start(masters: usize, replicas: usize) -> io::Result<Self> {
        let mut tries = 0;
        loop {
            tries += 1;
            match Self::try_start(masters, replicas) {
                Err(error) if error.kind() != io::ErrorKind::NotFound && tries < 3 => {}
                started => return started,
            }
        }
    }

    fn try_start(masters: usize, replicas: usize) -> io::Result<Self> {
        let count = masters * (replicas + 1);
        let ports = cluster_ports(count)?;
        let dir = std::env::temp_dir().join(format!(
            "seawall-cluster-{}-{}",
            std::process::id(),
            ports[0]
        ));
        std::fs::create_dir_all(&dir)?;
        let mut cluster = Self {
            nodes: Vec::with_capacity(count),
            ports: ports.clone(),
            dir,
        };
        for &port in &ports {
            let node = RedisServer::start_cluster_node(port, &cluster.dir, NODE_TIMEOUT_MS)?;
            cluster.nodes.push(Some(node));
        }
        let cli = std::env::var("SEAWALL_REDIS_CLI").unwrap_or_else(|_| "redis-cli".to_owned());
        let output = Command::new(&cli)
            .arg("--cluster")
            .arg("create")
            .args(ports.iter().map(|port| format!("127.0.0.1:{port}")))
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!("cannot run `{cli}` (Debian package redis-tools): {error}"),
                )
            })?;
        if !output.status.success() {
            return Err(io::Error::other(format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&output.stdout)
            )));
        }
        cluster.wait_until_ready(count)?;
        Ok(cluster)
    }

    fn wait_until_ready(&self, count: usize) -> io::Result<()> {
        let since = Instant::now();
        loop {
            if self.ports.iter().all(|&port| node_ready(port, count)) {
                return Ok(());
            }
            if since.elapsed() > READY_WITHIN {
                return Err(io::Error::other(format!(
                    "the cluster on ports {:?} was not ready within {READY_WITHIN:?}",
                    self.ports
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every node's URL, `redis://127.0.0.1:<port>/`, killed ones included.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|port| format!("redis://127.0.0.1:{port}/"))
            .collect()
    }

    /// Every node's port, killed ones included.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// The port of the master that serves `key` now, asked of a live node.
    pub fn master_of(&self, key: &str) -> io::Result<u16> {
        let mut last = io::Error::other("no live node");
        for port in self.live_ports() {
            match master_of(port, key) {
                Ok(master) => return Ok(master),
                Err(error) => last = error,
            }
        }
        Err(last)
    }

    /// Moves the slot of `key` (with the keys in it) from the master serving it to the master
    /// on `to`, as `redis-cli --cluster reshard` would: [`migrate_slot_of`](Self::migrate_slot_of),
    /// then `SETSLOT … NODE` on every live master. Clients still sending to the old master
    /// are answered `MOVED` after it.
    pub fn move_slot_of(&self, key: &str, to: u16) -> io::Result<()> {
        let Some(migration) = self.migrate(key, to)? else {
            return Ok(());
        };
        let mut masters = vec![to, migration.from];
        for port in self.live_ports() {
            if !masters.contains(&port) && is_master(port) {
                masters.push(port);
            }
        }
        for port in masters {
            let mut command = redis::cmd("CLUSTER");
            command
                .arg("SETSLOT")
                .arg(migration.slot)
                .arg("NODE")
                .arg(&migration.to_id);
            query(port, &command)?;
        }
        Ok(())
    }

    /// Starts moving the slot of `key` to the master on `to` and moves its keys, leaving the
    /// slot half-moved (`MIGRATING` on the old master, `IMPORTING` on the new): the old master
    /// answers `ASK` for the keys already gone. [`move_slot_of`](Self::move_slot_of) finishes
    /// the move.
    pub fn migrate_slot_of(&self, key: &str, to: u16) -> io::Result<()> {
        self.migrate(key, to).map(drop)
    }

    fn migrate(&self, key: &str, to: u16) -> io::Result<Option<Migration>> {
        let owner = self.master_of(key)?;
        let slot: u16 = query_as(to, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key))?;
        let to_id: String = query_as(to, &redis::cmd("CLUSTER").arg("MYID").clone())?;
        // Half-moved already: the old master is the one migrating the slot.
        let from = match self.migrating_from(slot, &to_id)? {
            Some(from) => from,
            None if owner == to => return Ok(None),
            None => owner,
        };
        let from_id: String = query_as(from, &redis::cmd("CLUSTER").arg("MYID").clone())?;
        let setslot = |state: &str, node: &str| {
            let mut command = redis::cmd("CLUSTER");
            command.arg("SETSLOT").arg(slot).arg(state).arg(node);
            command
        };
        query(to, &setslot("IMPORTING", &from_id))?;
        query(from, &setslot("MIGRATING", &to_id))?;
        loop {
            let keys: Vec<String> = query_as(
                from,
                redis::cmd("CLUSTER")
                    .arg("GETKEYSINSLOT")
                    .arg(slot)
                    .arg(100),
            )?;
            if keys.is_empty() {
                break;
            }
            query(
                from,
                redis::cmd("MIGRATE")
                    .arg("127.0.0.1")
                    .arg(to)
                    .arg("")
                    .arg(0)
                    .arg(5_000)
                    .arg("KEYS")
                    .arg(&keys),
            )?;
        }
        Ok(Some(Migration { slot, from, to_id }))
    }

    /// The live master migrating `slot` to the node `to_id`, if one is.
    fn migrating_from(&self, slot: u16, to_id: &str) -> io::Result<Option<u16>> {
        let marker = format!("[{slot}->-{to_id}]");
        for port in self.live_ports() {
            let nodes: String = query_as(port, redis::cmd("CLUSTER").arg("NODES"))?;
            let myself = nodes.lines().find(|line| line.contains("myself"));
            if myself.is_some_and(|line| line.contains(&marker)) {
                return Ok(Some(port));
            }
        }
        Ok(None)
    }

    /// Puts a [`SilencingProxy`] in front of the node on `port` and has the node announce the
    /// proxy's port as its own (`cluster-announce-port`; its cluster bus stays where it is),
    /// so that a client following the cluster's slot map reaches that node only through the
    /// proxy. Returns once every live node's slot map names the proxy's port.
    pub fn proxy_node(&self, port: u16) -> io::Result<SilencingProxy> {
        let proxy = SilencingProxy::in_front_of(port)?;
        let bus = port
            .checked_add(10_000)
            .ok_or_else(|| io::Error::other(format!("node port {port} has no cluster bus port")))?;
        for (setting, value) in [
            ("cluster-announce-bus-port", bus),
            ("cluster-announce-port", proxy.port()),
        ] {
            query(
                port,
                redis::cmd("CONFIG").arg("SET").arg(setting).arg(value),
            )?;
        }
        let since = Instant::now();
        loop {
            let announced = self.live_ports().all(|node| {
                slot_ranges(node)
                    .is_ok_and(|ranges| ranges.iter().any(|&(_, _, master)| master == proxy.port()))
            });
            if announced {
                return Ok(proxy);
            }
            if since.elapsed() > READY_WITHIN {
                return Err(io::Error::other(format!(
                    "the cluster's slot maps did not name port {} within {READY_WITHIN:?}",
                    proxy.port()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The ports of the nodes not killed.
    fn live_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.nodes
            .iter()
            .zip(&self.ports)
            .filter(|(node, _)| node.is_some())
            .map(|(_, &port)| port)
    }

    /// Kills the node on `port` at once (`SIGKILL`, as a crash would) and waits for it to be
    /// gone.
    pub fn kill(&mut self, port: u16) -> io::Result<()> {
        let at = self
            .ports
            .iter()
            .position(|&p| p == port)
            .ok_or_else(|| io::Error::other(format!("no node on port {port}")))?;
        match self.nodes[at].take() {
            Some(node) => node.kill(),
            None => Ok(()),
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `count` free loopback ports whose cluster bus ports (port + 10,000) are free too.
fn cluster_ports(count: usize) -> io::Result<Vec<u16>> {
    let mut ports = Vec::with_capacity(count);
    for _ in 0..1_000 {
        if ports.len() == count {
            break;
        }
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        let Some(bus) = port.checked_add(10_000) else {
            continue;
        };
        if ports.contains(&port) || ports.contains(&bus) || ports.iter().any(|p| p + 10_000 == port)
        {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", bus)).is_ok() {
            ports.push(port);
        }
    }
    if ports.len() < count {
        return Err(io::Error::other("not enough free port pairs for a cluster"));
    }
    Ok(ports)
}

fn node_connection(port: u16) -> io::Result<redis::Connection> {
    let client =
        redis::Client::open(format!("redis://127.0.0.1:{port}/")).map_err(io::Error::other)?;
    client
        .get_connection_with_timeout(Duration::from_secs(1))
        .map_err(io::Error::other)
}

/// Whether the node on `port` serves every slot, knows all `count` nodes, and (a replica) has
/// its link to its master up.
fn node_ready(port: u16, count: usize) -> bool {
    let Ok(mut connection) = node_connection(port) else {
        return false;
    };
    let Ok(info) = redis::cmd("CLUSTER")
        .arg("INFO")
        .query::<String>(&mut connection)
    else {
        return false;
    };
    let known = format!("cluster_known_nodes:{count}");
    if !info.contains("cluster_state:ok") || !info.lines().any(|line| line.trim() == known) {
        return false;
    }
    let Ok(replication) = redis::cmd("INFO")
        .arg("replication")
        .query::<String>(&mut connection)
    else {
        return false;
    };
    replication.contains("role:master") || replication.contains("master_link_status:up")
}

/// A slot whose keys have moved to the node `to_id` from the master on `from`.
struct Migration {
    slot: u16,
    from: u16,
    to_id: String,
}

/// Runs `command` on the node on `port`.
fn query(port: u16, command: &redis::Cmd) -> io::Result<redis::Value> {
    query_as(port, command)
}

/// Runs `command` on the node on `port`, for an answer of type `T`.
fn query_as<T: redis::FromRedisValue>(port: u16, command: &redis::Cmd) -> io::Result<T> {
    command
        .query(&mut node_connection(port)?)
        .map_err(io::Error::other)
}

/// Whether the node on `port` is a master.
fn is_master(port: u16) -> bool {
    node_connection(port)
        .and_then(|mut connection| {
            redis::cmd("ROLE")
                .query::<Vec<redis::Value>>(&mut connection)
                .map_err(io::Error::other)
        })
        .is_ok_and(|role| {
            role.first()
                .and_then(|role| redis::from_redis_value_ref::<String>(role).ok())
                .is_some_and(|role| role == "master")
        })
}

/// The port of the master that serves `key`, as the node on `port` sees it.
fn master_of(port: u16, key: &str) -> io::Result<u16> {
    let slot: u16 = query_as(port, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key))?;
    slot_ranges(port)?
        .into_iter()
        .find(|(start, end, _)| (*start..=*end).contains(&slot))
        .map(|(_, _, master)| master)
        .ok_or_else(|| io::Error::other(format!("no master serves slot {slot}")))
}

/// The slot map as the node on `port` sees it: each range's first and last slot and the
/// port its master announces.
fn slot_ranges(port: u16) -> io::Result<Vec<(u16, u16, u16)>> {
    let answer = query_as::<Vec<redis::Value>>(port, redis::cmd("CLUSTER").arg("SLOTS"))?;
    let ranges = answer
        .iter()
        .filter_map(crate::cluster::master_range)
        .map(|(_, master, range)| (*range.start(), *range.end(), master))
        .collect();
    Ok(ranges)
}

/// A TCP proxy on a free loopback port in front of a server, which can go silent on the
/// connections it holds (reading what they send and passing nothing on, both ends open), as
/// a NAT or a load balancer that dropped their flows would, while it still forwards the
/// connections made after. For tests of what a client does with a connection gone silent.
#[derive(Debug)]
pub struct SilencingProxy {
    url: String,
    port: u16,
    accepted: Arc<AtomicUsize>,
    generation: Arc<AtomicUsize>,
    all_silent: Arc<AtomicBool>,
}

impl SilencingProxy {
    /// Starts forwarding to `server`; its threads live as long as the process.
    pub fn start(server: &RedisServer) -> io::Result<Self> {
        Self::in_front_of(server.port())
    }

    /// Starts forwarding to whatever listens on `port` of 127.0.0.1 (a node of a
    /// [`RedisCluster`], say); its threads live as long as the process.
    pub fn in_front_of(port: u16) -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let address = listener.local_addr()?;
        let url = format!("redis://{address}/");
        let upstream = ("127.0.0.1", port);
        let accepted = Arc::new(AtomicUsize::new(0));
        let generation = Arc::new(AtomicUsize::new(0));
        let all_silent = Arc::new(AtomicBool::new(false));
        let (counted, current, silent) = (
            Arc::clone(&accepted),
            Arc::clone(&generation),
            Arc::clone(&all_silent),
        );
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let (Ok(client), Ok(redis)) = (client, TcpStream::connect(upstream)) else {
                    continue;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                let born = current.load(Ordering::SeqCst);
                let pairs = [
                    (client.try_clone(), redis.try_clone()),
                    (redis.try_clone(), client.try_clone()),
                ];
                for pair in pairs {
                    let (Ok(from), Ok(to)) = pair else { continue };
                    let (current, silent) = (Arc::clone(&current), Arc::clone(&silent));
                    std::thread::spawn(move || {
                        forward(from, to, || {
                            silent.load(Ordering::SeqCst) || current.load(Ordering::SeqCst) != born
                        })
                    });
                }
            }
        });
        Ok(Self {
            url,
            port: address.port(),
            accepted,
            generation,
            all_silent,
        })
    }

    /// The port the proxy listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/` of the proxy.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Every connection held now goes silent, for good.
    pub fn silence(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Every connection, held now or made later, goes silent, for good: as a host gone
    /// without a reset looks to a client whose new connections are never answered.
    pub fn silence_all(&self) {
        self.all_silent.store(true, Ordering::SeqCst);
        self.silence();
    }
}

/// Copies bytes from `from` to `to` until `silenced`, then keeps both open and idle.
fn forward(mut from: TcpStream, mut to: TcpStream, silenced: impl Fn() -> bool) {
    let mut buffer = [0u8; 4096];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if silenced() {
            // Read, so that the sender's kernel sees its bytes taken, and never passed on.
            loop {
                std::thread::park();
            }
        }
        if to.write_all(&buffer[..n]).is_err() {
            return;
        }
    }
}
